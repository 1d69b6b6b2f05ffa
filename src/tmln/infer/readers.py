"""Reading a slide's tiles at a model's µm/px, in this process or in reader processes.

``TileReader`` is a map-style dataset of tiles that reads through the caller's ``Slide`` in the
caller's process and pickles as the slide's path (and µm/px override): a reader process opens its
own ``Slide`` on first use, never touching a handle inherited from its parent, and closes it when
the reading ends (``close``). ``loader`` runs it through a ``DataLoader`` (in order), and
``prefetched`` keeps in-process reading one tile ahead of the model in a thread;
``default_workers`` is how many reader processes both models use by default. For the node U-Net,
``array_reader`` / ``SlideReader`` give tiles in model px, white (glass) outside the image.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator, Sequence

import numpy as np

from tmln.slide import Slide

WHITE = 255

Reader = Callable[[int, int, int, int], np.ndarray]  # (x, y, w, h) model px -> (h, w, 3) uint8, padded white


class TileReader:
    """Map-style dataset of tiles: item i -> (i, uint8 (h, w, 3) tensor, read seconds).

    locations : level-0 px (x, y) of each tile's top-left corner; or, with ``bounds`` = (H, W) of the
        slide at ``mpp``, model px (x, y) ints, read clipped to the slide and padded white outside.
    size : (h, w) model px for every tile, or a list with one (h, w) per tile.
    stain : optional per-tile function on the RGB array (a card's Macenko step).
    """

    def __init__(self, slide: Slide, locations: Sequence, size, mpp: float,
                 stain: Callable[[np.ndarray], np.ndarray] | None = None, bounds: tuple[int, int] | None = None):
        self.slide_state = slide.__getstate__()
        self.locations = locations
        self.size = size
        self.mpp = mpp
        self.stain = stain
        self.bounds = bounds
        self._slide, self._pid, self._own = slide, os.getpid(), False  # the caller's handle, in its process

    def _open(self) -> Slide:
        if self._slide is None or self._pid != os.getpid():
            self._slide = Slide.__new__(Slide)
            self._slide.__setstate__(self.slide_state)
            self._pid, self._own = os.getpid(), True
        return self._slide

    def close(self) -> None:
        """Close the handle this reader opened itself (never the caller's)."""
        if self._own and self._slide is not None and self._pid == os.getpid():
            self._slide.close()
        self._slide, self._own = None, False

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_slide"] = d["_pid"] = None
        d["_own"] = False
        return d

    def __len__(self):
        return len(self.locations)

    def read(self, i: int) -> np.ndarray:
        """Tile ``i`` as (h, w, 3) uint8."""
        h, w = self.size[i] if isinstance(self.size, list) else self.size
        slide = self._open()
        if self.bounds is None:
            rgb = slide.read(self.locations[i], (w, h), mpp=self.mpp)
        else:
            x, y = self.locations[i]
            rgb = read_clipped(slide, self.mpp, self.bounds, x, y, w, h)
        return self.stain(rgb) if self.stain is not None else rgb

    def __getitem__(self, i):
        import torch

        t0 = time.perf_counter()
        rgb = self.read(i)
        return i, torch.from_numpy(np.ascontiguousarray(rgb)), time.perf_counter() - t0


def _worker_init(_):
    import torch

    torch.set_num_threads(1)  # a reader decodes; the model's threads stay with the main process
    # (no cv2.setNumThreads here: after a fork it can deadlock on the parent's thread pool)


def loader(dataset, num_workers: int, pin: bool = False):
    """The dataset's items in order, read by ``num_workers`` processes (0: in this process)."""
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=2 if num_workers else None, persistent_workers=False,
        multiprocessing_context=mp_context() if num_workers else None,
    )


def read_all(data: TileReader, num_workers: int, pin: bool = False) -> Iterator:
    """``loader``'s items, then the reader's own handles closed (also when the reading stops early)."""
    try:
        yield from loader(data, num_workers, pin)
    finally:
        data.close()


def prefetched(items: Iterator, depth: int = 1) -> Iterator:
    """``items``, produced by a thread that stays up to ``depth`` items ahead of the consumer: with
    reading in the model's process, a tile is decoded (JPEG decoders and file reads release the GIL)
    while the previous one is computed. Exceptions reach the consumer; stopping early stops the thread."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
        except BaseException as e:  # handed to the consumer
            q.put((end, e))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None and stop.is_set():
                close()
        q.put((end, None))

    thread = threading.Thread(target=produce, name="tmln-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = q.get()
            if item is end:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def mp_context():
    """Reader processes: ``fork`` where available (no re-import of the caller's main module; each
    reader opens its own slide handle), else the platform default."""
    import multiprocessing as mp

    return "fork" if "fork" in mp.get_all_start_methods() else None


def default_workers(cuda: bool = False) -> int:
    """Reader processes by default. On CUDA, half the CPUs (at most 8): the GPU waits on decoding.
    On CPU the model already uses every core, so a reader process only competes with it: none up
    to 4 cores (reading in turn is faster there: measured 4.3 s vs 5.0 s on 2 cores,
    benchmarks/results/tumour_engine.md), then a quarter of the cores (at most 4). Without reader
    processes the tumour engine still reads one tile ahead in a thread (``prefetched``: a streamed
    Winograd map on 2 AVX2 cores took 4.20 s instead of 4.34 s, medians of 5 interleaved runs)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cuda:
        return max(1, min(8, n // 2))
    return 0 if n <= 4 else min(4, n // 4)


# ---------------------------------------------------------------------------- model-px tiles (node U-Net)
def read_clipped(slide: Slide, mpp: float, bounds: tuple[int, int], x: int, y: int, w: int, h: int) -> np.ndarray:
    """(h, w, 3) uint8 at model px (x, y) of the slide at ``mpp`` µm/px, whose size there is
    ``bounds`` = (H, W); white outside it."""
    H, W = bounds
    out = np.full((h, w, 3), WHITE, np.uint8)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 > x0 and y1 > y0:
        fx, fy = mpp / slide.mpp_x_required, mpp / slide.mpp_y_required
        out[y0 - y : y1 - y, x0 - x : x1 - x] = slide.read((x0 * fx, y0 * fy), (x1 - x0, y1 - y0), mpp=mpp)
    return out


def array_reader(image: np.ndarray) -> Reader:
    """Tiles of an in-memory (H, W, 3) uint8 image; outside it is white (glass)."""
    img = np.asarray(image)
    H, W = img.shape[:2]

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), WHITE, np.uint8)
        x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = img[y0:y1, x0:x1]
        return out

    return read


class SlideReader:
    """Tiles of a slide at ``mpp`` µm/px in model px (a ``Reader``), white outside the slide;
    ``tiles`` reads a whole list of them in order, in ``workers`` reader processes."""

    def __init__(self, slide: Slide, mpp: float, workers: int = 0):
        self.slide, self.mpp, self.workers = slide, float(mpp), int(workers)
        self.bounds = slide_shape(slide, mpp)

    def __call__(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        return read_clipped(self.slide, self.mpp, self.bounds, x, y, w, h)

    def tiles(self, positions: Sequence[tuple[int, int]], tile: int) -> Iterator[np.ndarray]:
        """The ``tile`` x ``tile`` tiles at model px ``positions`` (x, y), in order."""
        if not self.workers:
            return (self(x, y, tile, tile) for x, y in positions)
        return (t.numpy() for _, t, _ in read_all(TileReader(self.slide, list(positions), (tile, tile), self.mpp,
                                                             bounds=self.bounds), self.workers))


def slide_shape(slide: Slide, mpp: float) -> tuple[int, int]:
    """(h, w) of the slide at ``mpp`` µm/px (the same as ``Slide.thumbnail(mpp)``)."""
    w = max(1, int(round(slide.width * slide.mpp_x_required / mpp)))
    h = max(1, int(round(slide.height * slide.mpp_y_required / mpp)))
    return h, w
