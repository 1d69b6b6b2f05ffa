"""tmln.infer.memory: freed memory handed back during long runs."""

from __future__ import annotations

import gc
import sys
import weakref

from tmln.infer import memory


class _Node:
    pass


def test_release_collects_cycles_and_trims(monkeypatch):
    """Memory held only by a reference cycle is freed by release_freed, not by dropping the names."""
    monkeypatch.delenv("TMLN_MALLOC_TRIM", raising=False)
    gc.disable()  # so that only release_freed can collect the cycle
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        assert alive() is not None
        ran = memory.release_freed()
        assert alive() is None
    finally:
        gc.enable()
    assert ran == sys.platform.startswith("linux")  # glibc's malloc_trim where there is one


def test_release_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("TMLN_MALLOC_TRIM", "0")
    gc.disable()
    try:
        a = _Node()
        a.me = a
        alive = weakref.ref(a)
        del a
        assert memory.release_freed() is False and alive() is not None
    finally:
        gc.enable()
        gc.collect()
