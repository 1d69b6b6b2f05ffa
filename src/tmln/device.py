"""Torch device selection: CUDA when available, else CPU (every GPU path also runs on CPU)."""

from __future__ import annotations

from tmln.errors import TmlnError


def select_device(device: str | None = "auto"):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TmlnError(f"device {device!r} requested but CUDA is not available")
    return dev


def native_bf16(device) -> bool:
    """Whether ``device`` runs bfloat16 arithmetic natively: CUDA with bf16 support, or a CPU with
    AVX512-BF16 or AMX (elsewhere bf16 is emulated and slower than float32)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    if not _avx512_allowed():  # capped to AVX2 (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA): bf16 is emulated
        return False
    try:  # private but long-standing helpers (torch >= 2.1); absent means "do not assume"
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def _avx512_allowed() -> bool:
    """Whether PyTorch and oneDNN may use AVX-512 here: the CPU has it and neither ``ATEN_CPU_CAPABILITY``
    nor ``ONEDNN_MAX_CPU_ISA`` (``DNNL_MAX_CPU_ISA``) caps it below (how an AVX2-only CPU is emulated)."""
    import os

    import torch

    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    return not cap or cap.startswith(("AVX512", "AVX10", "ALL", "DEFAULT"))


def cpu_prefers_winograd(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether ``precision="auto"`` will likely run Winograd convolutions here (``tmln.models.winograd``),
    told without loading PyTorch (the CLI sets the OpenMP wait policy before torch starts its threads):
    the CPU has AVX2 and FMA but no AVX-512F, or ``ATEN_CPU_CAPABILITY`` caps it to AVX2."""
    import os

    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2":
        return True
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma"} <= flags and "avx512f" not in flags
    except OSError:
        return False
    return False
