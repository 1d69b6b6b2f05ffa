"""Inference backends (tmln.models.backend): precision choice, the int8 network (streamed exactly as
it runs whole), maps close to float32, the calibration record and cache, and the node U-Net."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tmln.errors import TmlnError
from tmln.models import backend as BK
from tmln.tumour.dense import dense_form
from tmln.tumour import ProbabilityMap, tumour_map

from .helpers import card, small_resnet, texture, write_slide

needs_int8 = pytest.mark.skipif(not BK.int8_available()[0], reason=f"no int8 engine: {BK.int8_available()[1]}")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TMLN_CACHE_DIR", str(tmp_path / "cache"))


def test_auto_never_picks_int8_and_forced_choices(monkeypatch):
    import tmln.device

    from tmln.models import winograd

    monkeypatch.setattr(winograd, "preferred", lambda: False)  # an AVX-512 CPU (tests/models/test_winograd.py: AVX2)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native, on_cpu, on_cuda in ((True, "bf16", "bf16"), (False, "fp32", "fp16")):
        monkeypatch.setattr(tmln.device, "native_bf16", lambda _dev, v=native: v)
        assert BK.resolve_precision("auto", cpu) == on_cpu
        assert BK.resolve_precision("auto", cuda) == on_cuda
        assert BK.resolve_precision("auto", cpu, cpu_reduced=False) == "fp32"  # the node U-Net's auto
    for p in ("fp32", "bf16", "fp16"):
        assert BK.resolve_precision(p, cpu) == p
    with pytest.raises(TmlnError, match="CPU only"):
        BK.resolve_precision("int8", cuda)
    with pytest.raises(TmlnError, match="precision must be one of"):
        BK.resolve_precision("int4", cpu)
    assert BK.amp_dtype("bf16") == torch.bfloat16 and BK.amp_dtype("int8") is None and BK.amp_dtype("fp32") is None


def test_missing_int8_runtime_is_a_clear_error_when_forced(monkeypatch, tmp_path):
    monkeypatch.setattr(BK, "int8_available", lambda: (False, "this PyTorch build has no 'x86' quantised engine"))
    with pytest.raises(TmlnError, match="int8 is not available: this PyTorch build has no 'x86'"):
        BK.resolve_precision("int8", "cpu")
    path = write_slide(tmp_path / "s.tif", texture(200, 160, seed=1), 1.0)
    with pytest.raises(TmlnError, match="int8 is not available"):
        tumour_map(path, (small_resnet(), card(patch=64)), mask=None, num_workers=0, device="cpu", precision="int8")
    # auto does not need it
    pm = tumour_map(path, (small_resnet(), card(patch=64)), mask=None, num_workers=0, device="cpu", precision="auto")
    assert pm.info["precision"] in ("float32", "float32-winograd", "bfloat16")


def test_int8_refused_for_grid_models(tmp_path):
    path = write_slide(tmp_path / "s.tif", texture(200, 160, seed=1), 1.0)
    with pytest.raises(TmlnError, match="int8 is not available for this model"):
        tumour_map(path, (small_resnet(), card(patch=64)), mask=None, num_workers=0, device="cpu", precision="int8",
                   method="grid")


@needs_int8
def test_int8_streams_exactly_as_it_runs_whole():
    """The row-streaming executor reproduces the quantised network run on the whole strip bit for bit
    (integer arithmetic; the executor's zero rows are the quantised zero)."""
    from tmln.tumour.stream import StreamedNet

    torch.manual_seed(0)
    d = dense_form(small_resnet())
    q, state = BK.quantize(d, [torch.randn(1, 3, 128, 128) for _ in range(3)], use_cache=False)
    assert state == "off"
    net = StreamedNet(q)
    net.check()
    x = torch.randn(1, 3, 300, 256)
    with torch.inference_mode():
        whole = q(x)
        bands = iter([x[:, :, i : i + 70] for i in range(0, 300, 70)])
        streamed = torch.cat([rows for _, rows in net.run(bands, 300, 256, chunk=2)], 2)
        ref = d(x)
    assert streamed.shape == whole.shape
    assert torch.equal(streamed, whole)
    err = float((whole - ref).abs().max()) / float(ref.abs().max())
    assert 0 < err < 0.2  # int8 really ran, and stays near the float network


@needs_int8
def test_int8_map_close_to_float32_records_calibration_and_caches(tmp_path):
    path = write_slide(tmp_path / "s.tif", texture(420, 360, seed=4), 1.0)
    net, c = small_resnet(), card(patch=64)
    a = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32")
    b = tumour_map(path, (net, c), mask=None, out_dir=tmp_path / "o", num_workers=0, device="cpu", precision="int8")
    assert b.info["precision"] == "int8" and b.info["method"] == "stream"
    d = np.abs(a.array - b.array)
    assert 0 < np.nanmax(d) < 0.05  # int8 really ran; random weights keep P near 0.5, where it is steep
    rec = ProbabilityMap.load(tmp_path / "o").info["int8"]
    cal = rec["calibration"]
    assert cal["tiles"] == len(cal["locations_px"]) == BK.CALIBRATION_TILES
    assert cal["source"].endswith("s.tif") and cal["tile_px"] == BK.CALIBRATION_PX
    assert rec["cache"] == "written" and rec["torch"] == torch.__version__ and rec["cpu_isa"]
    files = list((tmp_path / "cache" / "int8").glob("*.safetensors"))
    assert len(files) == 1 and not list((tmp_path / "cache" / "int8").glob("*.tmp*"))
    again = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="int8")
    assert again.info["int8"]["cache"] == "hit"
    np.testing.assert_array_equal(again.array, b.array)  # the cached calibration gives the same network
    files[0].write_bytes(b"not a safetensors file")  # a damaged cache recalibrates, same map
    damaged = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="int8")
    assert damaged.info["int8"]["cache"].startswith("unreadable")
    np.testing.assert_array_equal(damaged.array, b.array)


@needs_int8
def test_int8_dense_tiles_equal_int8_stream(tmp_path):
    path = write_slide(tmp_path / "s.tif", texture(400, 330, seed=6), 1.0)
    net, c = small_resnet(seed=2), card(patch=64)
    s = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="int8")
    t = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="int8", method="dense",
                   tile_size=256)
    assert t.info["method"] == "dense" and t.info["int8"]["calibration"] == s.info["int8"]["calibration"]
    # not bit for bit: oneDNN picks int8 kernels by shape, and their requantisation rounds a value on
    # a half step either way (one code, then carried through the layers)
    assert np.nanmax(np.abs(s.array - t.array)) < 0.01


@needs_int8
@pytest.mark.slow
def test_pcam_tumour_int8_on_a_phantom_stays_close(tmp_path):
    """The real tumour model on a phantom: int8 stays within |dP| 0.2 of float32 and changes few
    thresholded pixels (phantoms put pcam-tumour's P near its threshold: the worst case; measured 2-3 %),
    while auto (not int8) changes none beyond the 0.5 % a default may."""
    from tmln.phantom import SlideSpec, make_slide

    p = tmp_path / "ph.tiff"
    make_slide(p, SlideSpec(seed=3, size_mm=(0.8, 0.7), mpp=0.25), tile=256, compression="zlib")
    f = tumour_map(p, "pcam-tumour", num_workers=0, device="cpu", precision="fp32")
    q = tumour_map(p, "pcam-tumour", num_workers=0, device="cpu", precision="int8")
    auto = tumour_map(p, "pcam-tumour", num_workers=0, device="cpu", precision="auto")
    ok = ~np.isnan(f.array)
    thr = f.threshold

    def changed(m):
        return float(((f.array[ok] >= thr) != (m.array[ok] >= thr)).mean())

    assert ok.sum() > 100
    assert np.nanmax(np.abs(f.array - q.array)) < 0.2 and changed(q) < 0.08
    assert changed(auto) <= 0.005


def test_node_unet_goes_through_the_same_choice(monkeypatch):
    from tmln.models.unet import load_unet
    from tmln.nodes.infer import NodeSegmenter

    from tmln.models import winograd

    monkeypatch.setattr(winograd, "preferred", lambda: False)  # an AVX-512 CPU
    net, c = load_unet("demo-nodes", "cpu")
    seg = NodeSegmenter((net, c))
    assert seg.predict.info["precision"] == "fp32"  # auto keeps float32 on CPUs for the U-Net
    img = np.random.default_rng(0).integers(0, 255, (1, c.patch_size, c.patch_size, 3), dtype=np.uint8)
    ref = seg.predict(img)
    with pytest.raises(TmlnError, match="CPU only"):
        from tmln.nodes.infer import model_predictor

        model_predictor(net, c, torch.device("cuda"), precision="int8")
    if BK.int8_available()[0]:
        q = NodeSegmenter((net, c), precision="int8")
        out = q.predict(img)
        assert out.shape == ref.shape and q.predict.info["precision"] == "int8"
        assert q.predict.info["int8"]["calibration"]["tiles"] == 1
        assert not np.array_equal(out, ref)
    monkeypatch.setattr(BK, "int8_available", lambda: (False, "no engine here"))
    with pytest.raises(TmlnError, match="no engine here"):
        NodeSegmenter((net, c), precision="int8")


def test_sidecar_names_the_cpu_instruction_set(tmp_path):
    path = write_slide(tmp_path / "s.tif", texture(200, 160, seed=1), 1.0)
    tumour_map(path, (small_resnet(), card(patch=64)), mask=None, out_dir=tmp_path / "o", num_workers=0,
               device="cpu", precision="fp32")
    side = json.loads((tmp_path / "o" / "tumour_map.json").read_text())
    assert side["precision"] == "float32" and side["cpu_isa"].split("+")[0] in ("AVX512", "AVX2", "DEFAULT")
    assert "int8" not in side


def test_an_avx2_cap_turns_native_bf16_off(monkeypatch):
    """Capping oneDNN to AVX2 (how an AVX2-only CPU is emulated on a newer one) makes bf16 emulated, so
    auto must not pick it; the instruction set in the sidecar drops the AVX-512 extras."""
    import tmln.device

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert tmln.device.native_bf16("cpu") is False
    assert BK.resolve_precision("auto", "cpu") in ("fp32", "fp32-winograd")  # float32 arithmetic
    assert "BF16" not in BK.cpu_isa() and "VNNI" not in BK.cpu_isa()
