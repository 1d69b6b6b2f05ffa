"""tmln.infer.precision: what auto picks, for both models."""

import pytest

from tmln.errors import TmlnError
from tmln.infer.precision import amp_dtype, resolve


def _amp_dtype(precision, dev, cpu_reduced=True):
    return amp_dtype(resolve(precision, dev, int8_ok=False, cpu_reduced=cpu_reduced))


def test_auto_precision_follows_native_bf16(monkeypatch):
    """auto = bf16 where the device runs it natively, fp16 on older CUDA, float32 on other CPUs."""
    import torch

    import tmln.device

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native, on_cpu, on_cuda in ((True, torch.bfloat16, torch.bfloat16), (False, None, torch.float16)):
        monkeypatch.setattr(tmln.device, "native_bf16", lambda _dev, v=native: v)
        assert (_amp_dtype("auto", cpu), _amp_dtype("auto", cuda)) == (on_cpu, on_cuda)
    assert _amp_dtype("fp32", cuda) is None and _amp_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(TmlnError, match="precision"):
        _amp_dtype("int8", cpu)




def test_node_unet_keeps_float32_on_cpus_and_shares_the_cuda_rule(monkeypatch):
    """The node U-Net's auto: float32 on every CPU (its reduced-precision maps were not validated),
    the tumour classifier's rule on CUDA."""
    import torch

    import tmln.device

    for native in (True, False):
        monkeypatch.setattr(tmln.device, "native_bf16", lambda _dev, v=native: v)
        assert _amp_dtype("auto", torch.device("cpu"), cpu_reduced=False) is None
        assert _amp_dtype("auto", torch.device("cuda"), cpu_reduced=False) == _amp_dtype("auto", torch.device("cuda"))
    assert _amp_dtype("bf16", torch.device("cpu"), cpu_reduced=False) == torch.bfloat16  # asked for: given


def test_deterministic_restores_cudnn_flags():
    import torch

    from tmln.infer.precision import deterministic

    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.benchmark = True
    try:
        with deterministic(cuda=True):
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
