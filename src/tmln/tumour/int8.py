"""The tumour engine's int8 step (``precision="int8"``; see ``tmln.models.backend``): the dense form
quantised on tiles of the slide being mapped, and streamed row by row where the float form streams."""

from __future__ import annotations

import time

from tmln.models.backend import quantize, slide_calibration
from tmln.tumour.stream import NotStreamable, StreamedNet


def int8_dense(dense, streamed, slide, card, transform, roi, stride_l0, origin_l0):
    """The tumour engine's int8 step: quantise the dense form on tiles of this slide, stream it where
    the float form streamed. Returns (int8 dense form, int8 streamed net or None, calibration record)."""
    t = time.perf_counter()
    batches, cal = slide_calibration(slide, card, transform, roi, stride_l0, origin_l0)
    if not batches:  # an empty region: nothing will run, the float form stays
        cal.seconds = time.perf_counter() - t
        return dense, streamed, cal.record()
    qdense, cal.cache = quantize(dense, batches)
    if streamed is not None:
        try:
            net = StreamedNet(qdense)
            net.check()
            streamed = net
        except NotStreamable as e:  # run the int8 form as tiles instead
            cal.extra["not_streamed"] = str(e)
            streamed = None
    cal.seconds = time.perf_counter() - t
    return qdense, streamed, cal.record()
