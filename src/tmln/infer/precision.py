"""The arithmetic both models run in: which precision ``auto`` picks, autocast, deterministic kernels.

Precisions are ``tmln.models.backend``'s: ``auto``, ``fp32``, ``fp32-winograd``, ``bf16``, ``fp16``,
``int8``. ``auto`` is the same rule for both models on CUDA (bfloat16 where the GPU runs it natively,
else float16); on CPUs it picks bfloat16 (AVX512-BF16 / AMX) for the tumour classifier, whose maps
were measured to stay the maps (0.10 % of thresholded pixels change), and keeps float32 arithmetic
for the node U-Net, whose reduced-precision label maps were not shown to (its share of a slide's
time is small). Where PyTorch dispatches to AVX2 (no AVX-512), float32 runs its 3 x 3 convolutions
by Winograd's algorithm (``fp32-winograd``, ``tmln.models.winograd``) for both models.
"""

from __future__ import annotations

from tmln.models import backend, winograd


WINOGRAD = backend.WINOGRAD


def resolve(precision: str, device, *, cpu_reduced: bool = True, int8_ok: bool = True,
            why_not_int8: str = "") -> str:
    """``"fp32"``, ``"fp32-winograd"``, ``"bf16"``, ``"fp16"`` or ``"int8"`` for ``precision`` on ``device``
    (``tmln.models.backend.resolve_precision``)."""
    return backend.resolve_precision(precision, device, int8_ok=int8_ok, why_not_int8=why_not_int8,
                                     cpu_reduced=cpu_reduced)


def form(module, precision: str):
    """``module`` as it runs in a resolved ``precision``: for ``fp32-winograd`` a float32 CPU copy whose
    3 x 3 convolutions are NNPACK's Winograd ones (``tmln.models.winograd``), else ``module`` itself."""
    if precision != WINOGRAD:
        return module
    return winograd.winograd_convs(module)[0]


def amp_dtype(precision: str):
    """The autocast dtype of a resolved precision (None: float32, or int8 with its own kernels)."""
    return backend.amp_dtype(precision)


def dtype_name(amp_dtype, int8: bool = False, winograd: bool = False) -> str:
    """How a run's arithmetic is recorded: ``int8``, ``bfloat16``, ``float16``, ``float32-winograd``
    or ``float32``."""
    if int8:
        return "int8"
    if winograd and not amp_dtype:
        return "float32-winograd"
    return str(amp_dtype).replace("torch.", "") if amp_dtype else "float32"


def autocast(dev, amp_dtype):
    """Autocast to ``amp_dtype`` on ``dev``; a no-op context for float32 (``amp_dtype`` None)."""
    import torch

    return torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


class deterministic:
    """cuDNN in deterministic mode for the duration (restored afterwards); nothing to do on CPUs."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __enter__(self):
        import torch

        self.saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        if self.cuda:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    def __exit__(self, *exc):
        import torch

        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self.saved
