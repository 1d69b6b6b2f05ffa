"""The tumour engine and the node U-Net in ``fp32-winograd`` (tmln.models.winograd): the streamed
Winograd network equals its whole forward pass, every method's map stays the float32 map, and the
arithmetic is recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tmln.infer import precision as P
from tmln.models import winograd
from tmln.tumour import tumour_map
from tmln.tumour.dense import dense_form
from tmln.tumour.stream import StreamedNet

from .helpers import card, small_resnet, texture, write_slide

pytestmark = pytest.mark.skipif(not winograd.available()[0], reason=f"no NNPACK: {winograd.available()[1]}")


def test_streamed_winograd_net_equals_its_whole_forward_pass():
    """What the engine relies on when it skips the check for the Winograd form."""
    dense = P.form(dense_form(small_resnet(seed=1).eval()), P.WINOGRAD)
    assert any(isinstance(m, winograd.WinogradConv2d) for m in dense.modules())
    net = StreamedNet(dense)
    assert any(n.kind == "window" and n.fn is not None for n in net.nodes)
    net.check()  # raises NotStreamable where the streamed output differs from the whole pass
    x = torch.randn(1, 3, 300, 160)
    with torch.no_grad():
        whole = dense(x)
        rows = torch.cat([r for _, r in net.run(iter([x[:, :, i : i + 64] for i in range(0, 300, 64)]), 300, 160,
                                                 chunk=8)], 2)
    torch.testing.assert_close(rows, whole, rtol=1e-4, atol=1e-4 * float(whole.abs().max()))


def test_every_method_maps_as_float32_and_records_the_arithmetic(tmp_path):
    path = write_slide(tmp_path / "s.tif", texture(420, 360, seed=4), 1.0)
    net, c = small_resnet(), card(patch=64)
    ref = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32")
    for method in ("stream", "dense", "grid"):
        w = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32-winograd",
                       method=method, out_dir=tmp_path / method, **({"tile_size": 512} if method == "dense" else {}))
        assert w.info["precision"] == "float32-winograd" and w.info["method"] == method
        f = ref if method == "stream" else tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu",
                                                      precision="fp32", method=method,
                                                      **({"tile_size": 512} if method == "dense" else {}))
        assert np.nanmax(np.abs(w.array - f.array)) < 1e-4, method
        side = json.loads((tmp_path / method / "tumour_map.json").read_text())
        assert side["precision"] == "float32-winograd"
    grid_auto = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", method="grid")
    assert grid_auto.info["precision"] in ("float32", "bfloat16")  # auto: patches too small for Winograd tiles


def test_node_unet_in_winograd_stays_the_float32_map():
    from tmln.models.unet import load_unet
    from tmln.nodes.infer import NodeSegmenter

    net, c = load_unet("pcam-nodes", "cpu")
    img = np.random.default_rng(0).integers(0, 255, (2, c.patch_size, c.patch_size, 3), dtype=np.uint8)
    ref = NodeSegmenter((net, c), precision="fp32")
    w = NodeSegmenter((net, c), precision="fp32-winograd")
    assert w.predict.info["precision"] == "fp32-winograd" and ref.predict.info["precision"] == "fp32"
    a, b = ref.predict(img), w.predict(img)
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
    assert not any(isinstance(m, winograd.WinogradConv2d) for m in net.modules())  # the loaded net is untouched


def test_streamed_rows_with_transformed_kernels_equal_pytorchs_nnpack_wrapper(monkeypatch):
    """The executor hands NNPACK the rows of padding and the ReLU after a convolution; the kernels are
    transformed once. Bit for bit what PyTorch's NNPACK wrapper gives with the executor's own padding."""
    api = winograd._nnpack()
    assert api is not None
    dense = P.form(dense_form(small_resnet(seed=2).eval()), P.WINOGRAD)
    fast = StreamedNet(dense)
    assert fast.fused > 0 and any(n.pads_rows and n.fn is not n.relu_fn for n in fast.nodes)
    assert any(n.pads_rows and n.relu_fn is not None and n.fn is n.relu_fn for n in fast.nodes)  # ReLU in NNPACK
    monkeypatch.setitem(winograd._STATE, "api", None)  # PyTorch's wrapper, kernels transformed per call
    slow = StreamedNet(dense)
    x = torch.randn(1, 3, 260, 200)

    def stream(net):
        with torch.no_grad():
            return torch.cat([r for _, r in net.run(iter([x[:, :, i : i + 100] for i in range(0, 260, 100)]), 260, 200,
                                                     chunk=6)], 2)

    monkeypatch.setitem(winograd._STATE, "api", api)
    a = stream(fast)
    monkeypatch.setitem(winograd._STATE, "api", None)
    assert torch.equal(a, stream(slow))
