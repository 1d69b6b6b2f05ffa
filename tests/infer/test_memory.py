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


def test_release_runs_at_most_once_per_interval(monkeypatch):
    """The runners call it per tile: a full collection (~0.15 s with torch loaded) per 256 px tile had
    made a 672-tile dense map take 120 s instead of 12."""
    monkeypatch.delenv("TMLN_MALLOC_TRIM", raising=False)
    calls = []
    monkeypatch.setattr(memory.gc, "collect", lambda *a: calls.append(1) or 0)
    memory.release_freed()  # an unconditional release starts the interval
    assert calls == [1]
    assert memory.release_freed(every_s=60.0) is False and calls == [1]
    monkeypatch.setattr(memory, "_last", [memory.time.monotonic() - 61.0])
    memory.release_freed(every_s=60.0)
    assert calls == [1, 1]


def test_the_collector_can_run_less_often_than_the_trim(monkeypatch):
    """The engine's end-of-map release: glibc's trim every map, the costly collector at most every 30 s."""
    monkeypatch.delenv("TMLN_MALLOC_TRIM", raising=False)
    calls = []
    monkeypatch.setattr(memory.gc, "collect", lambda *a: calls.append(1) or 0)
    memory.release_freed()
    assert calls == [1]
    ran = memory.release_freed(collect_every_s=60.0)
    assert calls == [1] and ran == sys.platform.startswith("linux")  # trimmed, not collected
    monkeypatch.setattr(memory, "_last_collect", [memory.time.monotonic() - 61.0])
    memory.release_freed(collect_every_s=60.0)
    assert calls == [1, 1]
