"""Torch device selection: CUDA when available, else CPU (every GPU path also runs on CPU)."""

from __future__ import annotations


def select_device(device: str | None = "auto"):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from tmln.errors import TmlnError

        raise TmlnError(f"device {device!r} requested but CUDA is not available")
    return dev
