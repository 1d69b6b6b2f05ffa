"""tmln.infer.readers: tiles of a slide at a µm/px, in this process or in reader processes."""

import numpy as np
import pytest

from tmln.infer.readers import default_workers


def test_default_reader_processes(monkeypatch):
    """No reader processes on small CPUs (they would compete with the model), some on CUDA hosts."""
    import os

    for cores, cpu, cuda in ((2, 0, 1), (4, 0, 2), (16, 4, 8), (64, 4, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)), raising=False)
        assert (default_workers(False), default_workers(True)) == (cpu, cuda)




def _slide(tmp_path, img, mpp):
    import tifffile

    from tmln.slide import Slide

    path = tmp_path / "s.tiff"
    tifffile.imwrite(path, img, tile=(64, 64), photometric="rgb", resolution=(1e4 / mpp, 1e4 / mpp),
                     resolutionunit="CENTIMETER")
    return Slide(path)


def test_tile_reader_reads_the_same_tiles_in_reader_processes(tmp_path):
    """Level-0 locations (the tumour engine) and clipped model-px tiles (the node U-Net): a reader
    process opens its own slide and gives the same pixels, in order."""
    from tmln.infer.readers import TileReader, loader, slide_shape

    img = np.random.default_rng(1).integers(0, 256, (200, 260, 3), dtype=np.uint8)
    with _slide(tmp_path, img, 1.0) as s:
        locs = [(0.0, 0.0), (100.0, 50.0), (200.0, 150.0)]
        data = TileReader(s, locs, (64, 64), 1.0)
        here = [t.numpy() for _, t, _ in loader(data, 0)]
        there = [t.numpy() for _, t, _ in loader(data, 2)]
        for a, b in zip(here, there):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(here[1], img[50:114, 100:164])
        clipped = TileReader(s, [(-10, 180)], (32, 32), 1.0, bounds=slide_shape(s, 1.0))
        t = clipped.read(0)
        assert (t[:, :10] == 255).all() and (t[20:] == 255).all()  # glass outside the slide
        np.testing.assert_array_equal(t[:20, 10:], img[180:200, 0:22])
        stained = TileReader(s, locs[:1], (8, 8), 1.0, stain=lambda rgb: 255 - rgb)
        np.testing.assert_array_equal(stained.read(0), 255 - img[:8, :8])


def test_prefetched_keeps_order_passes_errors_and_stops_when_the_consumer_does():
    import threading

    from tmln.infer.readers import prefetched

    assert list(prefetched(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("tile 2 is truncated")

    got = []
    with pytest.raises(ValueError, match="truncated"):
        for x in prefetched(failing()):
            got.append(x)
    assert got == [1]
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    it = prefetched(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # the consumer stops early: the producer thread ends and closes its source
    assert closed == [True]
    assert not any(t.name == "tmln-prefetch" for t in threading.enumerate())
