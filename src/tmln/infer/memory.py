"""Keeping a long inference run's memory flat: freed tensors handed back as the run goes.

Two things held memory that the run no longer used, so that resident memory grew with the pixels
processed although the live data did not: tensors reachable only through reference cycles (traced
graphs, generators), which Python frees only when its cyclic collector next runs, and what the
threads (oneDNN's, the readers') freed, which glibc keeps in its arenas. Mapping one 8000 x 6000 px
slide five times in one process (float32 ResNet-18), resident memory after each map went 1613 ->
2233 MiB without ``release_freed`` and stayed at 957-959 MiB with it
(benchmarks/results/tumour_map_memory.md). It runs the cyclic collector, then glibc's
``malloc_trim(0)``; the tumour engine calls it after each streamed segment, tile batch and grid tile,
at most once per ``EVERY_S`` seconds (``every_s``): a full collection costs 0.15-0.2 s once torch is
loaded, which per 256 px tile had made a dense map of 672 tiles take 120 s instead of 12 (the node
U-Net at 8 µm/px holds little). ``TMLN_MALLOC_TRIM=0`` turns it off (the benchmark's side-by-side);
where the C library is not glibc only the collector runs.
"""

from __future__ import annotations

import ctypes
import gc
import ctypes.util
import os
import sys
import time

EVERY_S = 30.0  # the runners' per-tile calls release at most this often (seconds; ~0.2 s each with torch loaded)

_trim: list = []
_last = [float("-inf")]
_last_collect = [float("-inf")]


def release_freed(every_s: float = 0.0, collect_every_s: float = 0.0) -> bool:
    """The cyclic garbage collected, then glibc's ``malloc_trim(0)``: free heap pages back to the
    system. True when the trim ran. ``every_s``: nothing is done (False) when the last release was
    less than that many seconds ago; ``collect_every_s``: the collector (the costly part) is skipped
    when it last ran less than that many seconds ago (the trim still runs)."""
    if not _trim:
        _trim.append(_load_trim())
    fn = _trim[0]
    if os.environ.get("TMLN_MALLOC_TRIM", "1") == "0":
        return False
    now = time.monotonic()
    if now - _last[0] < every_s:
        return False
    if now - _last_collect[0] >= collect_every_s:
        gc.collect()  # tensors held only by reference cycles (traced graphs, generators) go first
        _last_collect[0] = time.monotonic()
    _last[0] = time.monotonic()
    if fn is None:
        return False
    fn(0)
    return True


def _load_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have none
        return None
    fn.argtypes, fn.restype = (ctypes.c_size_t,), ctypes.c_int
    return fn
