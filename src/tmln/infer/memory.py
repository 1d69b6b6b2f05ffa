"""Flat memory over long inference runs: glibc's mmap threshold held fixed.

glibc serves allocations above its *mmap threshold* with their own mappings, returned to the system
when freed; below it, from heaps that keep freed memory. The threshold is dynamic: freeing a mapped
block of S bytes raises it to S (up to 32 MiB), so a run whose tensors vary in size (streamed bands,
layer outputs, tiles of every shape) moves more and more of them into the heaps, where the freed
space fragments and resident memory grows with the pixels processed — measured on a 8000 x 6000 px
slide mapped five times in one process, float32 ResNet-18: +240 MiB with the dynamic threshold, flat
with it fixed (benchmarks/results/tumour_map_memory.md). ``hold_mmap_threshold`` fixes it at
``MMAP_THRESHOLD`` once per process; a user's ``MALLOC_MMAP_THRESHOLD_`` is left alone, and
``TMLN_MMAP_THRESHOLD=0`` keeps glibc's dynamic default (any other value: that many bytes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 4 << 20  # bytes: a streamed band of 512 x 4096 px is 6 MiB as uint8, 24 MiB as float32
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_state: dict = {}


def hold_mmap_threshold() -> str:
    """Fix glibc's mmap threshold (once per process); returns what holds, for a run's record:
    ``"4 MiB"``, ``"glibc default"`` or ``"MALLOC_MMAP_THRESHOLD_=..."``."""
    if "held" in _state:
        return _state["held"]
    held = "glibc default"
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        held = f"MALLOC_MMAP_THRESHOLD_={os.environ['MALLOC_MMAP_THRESHOLD_']}"
    else:
        value = int(os.environ.get("TMLN_MMAP_THRESHOLD", MMAP_THRESHOLD))
        if value > 0 and sys.platform.startswith("linux") and _mallopt(_M_MMAP_THRESHOLD, value):
            held = f"{value / 2**20:g} MiB"
    _state["held"] = held
    return held


def _mallopt(param: int, value: int) -> bool:
    """glibc ``mallopt``; False where the C library has none (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return False
    fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(fn(param, value))
