"""Winograd 3 × 3 convolutions in float32 on AVX2-only CPUs: NNPACK, the kernels PyTorch ships.

oneDNN runs a ResNet-18's direct float32 convolutions close to an AVX2 core's peak, so float32 can
only get faster by doing less arithmetic. Winograd's algorithm computes a 3 × 3, stride-1 convolution
from transformed 8 × 8 tiles with 2-4x fewer multiplications; NNPACK (Marat Dukhan's library, built
into the x86-64 PyTorch wheels as ``torch._nnpack_spatial_convolution``) has AVX2 + FMA kernels for it.
The arithmetic stays float32; only the rounding differs from a direct convolution (about 1e-5 of a
layer's largest output; pcam-tumour's map of real tissue moved by at most 4.9e-6 in probability, no
thresholded pixel changed: ``benchmarks/results/tumour_backends_avx2.md``).

``winograd_convs(module)`` returns a copy whose eligible convolutions (3 × 3, stride 1, dilation 1,
one group, zero padding of at most 2 px) are ``WinogradConv2d``; the others stay oneDNN's. The tumour
engine's row-streaming executor runs the same layers band by band (``tmln.tumour.stream``).

NNPACK keeps its own thread pool, sized by ``torch.get_num_threads()`` at its first convolution.
OpenMP threads that spin after oneDNN's layers then compete with it for the cores: ``tmln`` sets
``OMP_WAIT_POLICY=PASSIVE`` before PyTorch loads where this backend is the CPU's default (unless the
variable is set; ``tmln.device.cpu_prefers_winograd``); from Python, set it before importing torch
(measured on the streamed ResNet-18: 1.36x with it, 1.09x without). Importing this module does not
load torch.
"""

from __future__ import annotations

import copy
import platform

_STATE: dict = {}


def available() -> tuple[bool, str]:
    """(True, "") where NNPACK's Winograd kernels run here (x86-64 with AVX2 + FMA, a PyTorch built
    with NNPACK), else (False, why). The first call initialises NNPACK."""
    import torch

    if "ok" not in _STATE:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            _STATE["ok"] = (False, f"NNPACK's Winograd kernels need an x86-64 CPU (this is {platform.machine()})")
        elif not torch.backends.nnpack.is_available():  # also initialises NNPACK (AVX2 + FMA3 checked there)
            _STATE["ok"] = (False, "this PyTorch build or CPU has no NNPACK (x86-64 with AVX2 and FMA is needed)")
        else:
            _STATE["ok"] = (True, "")
    return _STATE["ok"]


def preferred() -> bool:
    """Whether ``precision="auto"`` picks Winograd on this CPU: NNPACK runs here and PyTorch dispatches
    to AVX2 (an AVX2-only CPU, or one capped to AVX2). With AVX-512, oneDNN's direct kernels (or bf16)
    are the measured choice, and Winograd was not measured there."""
    import torch

    return torch.backends.cpu.get_cpu_capability() == "AVX2" and available()[0]


def eligible(m) -> bool:
    """A float convolution NNPACK's Winograd kernels compute: 3 × 3, stride 1, no dilation, one group,
    zero padding of 0-2 px."""
    from torch import nn

    pad = m.padding if isinstance(m, nn.Conv2d) else None
    return (type(m) is nn.Conv2d and tuple(m.kernel_size) == (3, 3) and tuple(m.stride) == (1, 1)
            and tuple(m.dilation) == (1, 1) and m.groups == 1 and m.padding_mode == "zeros"
            and isinstance(pad, tuple) and all(0 <= p <= 2 for p in pad))


def conv(x, weight, bias, padding):
    """``F.conv2d(x, weight, bias, 1, padding)`` by NNPACK's Winograd kernels (float32, CPU; NCHW out)."""
    import torch

    return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, list(padding), [1, 1])


def __getattr__(name: str):
    """``WinogradConv2d``: an ``nn.Conv2d`` (3 × 3, stride 1) whose forward pass is NNPACK's Winograd
    convolution, defined on first use so that importing this module does not load torch."""
    if name != "WinogradConv2d":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _conv_class()


def _conv_class():
    if "class" not in _STATE:
        from torch import nn

        class WinogradConv2d(nn.Conv2d):
            def forward(self, x):
                return conv(x, self.weight, self.bias, self.padding)

        WinogradConv2d.__module__ = __name__
        _STATE["class"] = WinogradConv2d
    return _STATE["class"]


def winograd_convs(module) -> tuple:
    """(a float32 CPU copy of ``module`` with every eligible convolution a ``WinogradConv2d``, how many).
    Raises ``RuntimeError`` where NNPACK is unavailable (``available()`` says why)."""
    ok, why = available()
    if not ok:
        raise RuntimeError(why)
    module = copy.deepcopy(module).cpu().float()
    n = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if eligible(child):
                w = _conv_class()(child.in_channels, child.out_channels, 3, 1, child.padding,
                                  bias=child.bias is not None)
                w.load_state_dict(child.state_dict())
                setattr(parent, name, w.train(child.training))
                n += 1
    return module, n
