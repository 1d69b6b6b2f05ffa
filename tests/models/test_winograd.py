"""tmln.models.winograd: which convolutions NNPACK's Winograd kernels take, that they compute the same
convolution to float rounding, when auto picks them, and the CLI's OpenMP wait policy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tmln.errors import TmlnError
from tmln.models import backend as BK
from tmln.models import winograd

needs_nnpack = pytest.mark.skipif(not winograd.available()[0], reason=f"no NNPACK: {winograd.available()[1]}")


def test_only_3x3_stride1_single_group_convolutions_are_eligible():
    ok = nn.Conv2d(8, 16, 3, padding=1)
    assert winograd.eligible(ok) and winograd.eligible(nn.Conv2d(8, 16, 3, padding=0, bias=False))
    for bad in (nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(8, 16, 1), nn.Conv2d(8, 16, 7, padding=3),
                nn.Conv2d(8, 16, 3, padding=1, groups=8), nn.Conv2d(8, 16, 3, padding=2, dilation=2),
                nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect"), nn.Conv2d(8, 16, 3, padding="same"),
                nn.ReLU()):
        assert not winograd.eligible(bad), bad


@needs_nnpack
def test_resnet18_swaps_its_13_stride1_3x3_convolutions_and_computes_the_same():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    fast, n = winograd.winograd_convs(net)
    assert n == 13  # layer1: 4, layers 2-4: 3 each (the first of each is stride 2)
    assert sum(isinstance(m, winograd.WinogradConv2d) for m in fast.modules()) == 13
    assert not any(isinstance(m, winograd.WinogradConv2d) for m in net.modules())  # the original is untouched
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        a, b = net(x), fast(x)
        assert not torch.equal(a, b)  # NNPACK really ran (Winograd rounds differently)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
        conv = nn.Conv2d(16, 32, 3, padding=(0, 1)).eval()
        y = torch.randn(1, 16, 5, 40)
        torch.testing.assert_close(winograd.conv(y, conv.weight, conv.bias, conv.padding), conv(y),
                                   rtol=1e-4, atol=1e-4)


def test_without_nnpack_forcing_it_is_a_clear_error_and_auto_does_not_pick_it(monkeypatch):
    import tmln.device

    monkeypatch.setitem(winograd._STATE, "ok", (False, "this PyTorch build or CPU has no NNPACK"))
    with pytest.raises(RuntimeError, match="no NNPACK"):
        winograd.winograd_convs(nn.Conv2d(3, 3, 3))
    with pytest.raises(TmlnError, match="fp32-winograd is not available: this PyTorch build or CPU has no NNPACK"):
        BK.resolve_precision("fp32-winograd", "cpu")
    monkeypatch.setattr(tmln.device, "native_bf16", lambda _dev: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert BK.resolve_precision("auto", "cpu") == "fp32"


def test_auto_picks_winograd_on_avx2_for_both_models_and_bf16_where_native(monkeypatch):
    import tmln.device

    monkeypatch.setitem(winograd._STATE, "ok", (True, ""))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(tmln.device, "native_bf16", lambda _dev: False)
    assert BK.resolve_precision("auto", "cpu") == "fp32-winograd"
    assert BK.resolve_precision("auto", "cpu", cpu_reduced=False) == "fp32-winograd"  # the node U-Net: float32
    assert BK.resolve_precision("fp32", "cpu") == "fp32"  # direct convolutions when asked
    assert BK.amp_dtype("fp32-winograd") is None
    monkeypatch.setattr(tmln.device, "native_bf16", lambda _dev: True)
    assert BK.resolve_precision("auto", "cpu") == "bf16"
    assert BK.resolve_precision("auto", "cpu", cpu_reduced=False) == "fp32-winograd"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(tmln.device, "native_bf16", lambda _dev: False)
    assert BK.resolve_precision("auto", "cpu") == "fp32"  # AVX-512: oneDNN's direct kernels
    with pytest.raises(TmlnError, match="CPU only"):
        BK.resolve_precision("fp32-winograd", torch.device("cuda"))


def test_the_cli_lets_openmp_threads_sleep_only_where_winograd_is_the_default(monkeypatch, tmp_path):
    from tmln.cli import thread_wait_policy
    from tmln.device import cpu_prefers_winograd

    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 f16c\n")
    avx512 = tmp_path / "avx512"
    avx512.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 avx512f avx512bw\n")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert cpu_prefers_winograd(str(avx2)) and not cpu_prefers_winograd(str(avx512))
    assert not cpu_prefers_winograd(str(tmp_path / "missing"))
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # an AVX-512 CPU capped to AVX2
    assert cpu_prefers_winograd(str(avx512))

    import tmln.device

    for prefers, user, expected in ((True, None, "PASSIVE"), (False, None, None), (True, "ACTIVE", "ACTIVE")):
        monkeypatch.setattr(tmln.device, "cpu_prefers_winograd", lambda v=prefers: v)
        if user is None:
            monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        else:
            monkeypatch.setenv("OMP_WAIT_POLICY", user)
        thread_wait_policy()
        import os

        assert os.environ.get("OMP_WAIT_POLICY") == expected


@needs_nnpack
def test_kernels_transformed_once_give_pytorchs_nnpack_values_bit_for_bit():
    """``Winograd3x3`` calls NNPACK with the kernel transformed once: the same values as PyTorch's
    wrapper (which transforms it per call), with the rows of padding and the ReLU done inside NNPACK."""
    assert winograd._nnpack() is not None  # the entry point is exported and agreed on a first check
    torch.manual_seed(3)
    conv = nn.Conv2d(24, 40, 3, padding=1).eval()
    k = winograd.Winograd3x3(conv.weight, conv.bias, conv.padding)
    assert k.kernel is not None and k.kernel.numel() >= 40 * 24 * 64  # transformed: C_out x C_in x 8 x 8 floats
    x = torch.randn(3, 24, 11, 29)
    with torch.no_grad():
        for top, bottom in ((1, 1), (0, 1), (1, 0), (0, 0), (2, 0)):
            ref = winograd.conv(nn.functional.pad(x, (0, 0, top, bottom)), conv.weight, conv.bias, (0, 1))
            assert torch.equal(k(x, top, bottom), ref), (top, bottom)
            assert torch.equal(k(x, top, bottom, relu=True), ref.relu())
        torch.testing.assert_close(k(x), conv(x), rtol=1e-4, atol=1e-4)  # the layer's own padding by default


@needs_nnpack
def test_without_the_entry_point_pytorchs_wrapper_gives_the_same_values(monkeypatch):
    torch.manual_seed(4)
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 8, 9, 14)
    fast = winograd.Winograd3x3(conv.weight, conv.bias, conv.padding)
    monkeypatch.setitem(winograd._STATE, "api", None)
    slow = winograd.Winograd3x3(conv.weight, conv.bias, conv.padding)
    assert slow.kernel is None
    with torch.no_grad():
        assert torch.equal(slow(x, 0, 1, relu=True), fast(x, 0, 1, relu=True))


@needs_nnpack
def test_a_layer_retransforms_when_its_weights_change_and_copies_leave_the_transform_behind():
    import copy

    layer, _ = winograd.winograd_convs(nn.Sequential(nn.Conv2d(4, 6, 3, padding=1)))
    w = layer[0]
    x = torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        a = w(x)
        first = w.kernels()
        assert w.kernels() is first  # built once
        w.weight.mul_(2.0)
        assert w.kernels() is not first
        torch.testing.assert_close(w(x), nn.functional.conv2d(x, w.weight, w.bias, 1, 1), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(w(x), a)
    c = copy.deepcopy(w)
    assert "_winograd" not in c.__dict__ and torch.equal(c(x), w(x))


@needs_nnpack
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork here")
def test_a_forked_child_gets_its_own_thread_pool():
    """Fork copies no threads: a forked child (a reader, a Dask worker) builds its own NNPACK thread pool
    and computes the same values with the parent's transformed kernels."""
    import multiprocessing as mp

    torch.manual_seed(5)
    conv = nn.Conv2d(32, 32, 3, padding=1).eval()
    k = winograd.Winograd3x3(conv.weight, conv.bias, conv.padding)
    x = torch.randn(1, 32, 96, 96)  # enough tiles for NNPACK to use its threads
    with torch.no_grad():
        expected = k(x)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    parent = winograd._nnpack()
    child = ctx.Process(target=lambda: q.put((k(x).numpy(), winograd._nnpack() is not parent)))
    child.start()
    try:
        got = q.get(timeout=60)  # read before joining: the child waits until its result is in the pipe
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert (got[0] == expected.numpy()).all() and got[1] and child.exitcode == 0


@needs_nnpack
def test_the_thread_pool_follows_torchs_thread_count():
    """A process that lowers PyTorch's threads (a one-thread Dask worker) gets a pool of that size."""
    n = torch.get_num_threads()
    first = winograd._nnpack()
    try:
        torch.set_num_threads(2 if n == 1 else 1)
        assert winograd._nnpack() is not first and winograd._nnpack() is winograd._nnpack()
    finally:
        torch.set_num_threads(n)
    assert winograd._nnpack() is not None
