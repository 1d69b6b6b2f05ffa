"""int8 with some layers left in float32: does any mix keep pcam-tumour's maps within 0.5 %?

The tumour engine's int8 step (``tmln.tumour.int8``) quantises the whole dense form; its thresholded
maps differ from float32 in 0.98 % of pixels on real tissue (benchmarks/results/tumour_backends_avx2.md),
above the 0.5 % a default may change. This runs ``tmln.tumour.tumour_map`` with pcam-tumour in float32
and in int8 with the stem convolution, ResNet stages and/or the head kept in float32
(``tmln.models.backend.quantize(float_layers=...)``), on the real-tissue mosaic of
``benchmarks/tumour_backends.py`` (40 x 40 PCam validation patches) and its 1.2 x 1.0 mm phantom, and
reports the share of thresholded pixels that change and the model's seconds. Run capped to AVX2:

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/int8_float_layers.py \\
        --work /tmp/tmln-bench --out benchmarks/results/int8_float_layers.md
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from common import cpu_name, emit
from tumour_backends import mosaic, phantom

import tmln.tumour.int8 as engine_int8
from tmln.models import backend
from tmln.tumour import tumour_map

# (label, dense-form modules left in float32): features.0 = stem convolution, features.4-7 = ResNet
# stages 1-4, head = the linear head as a 1x1 convolution
VARIANTS = [
    ("all int8 (tmln's int8)", ()),
    ("stem float32", ("features.0",)),
    ("head float32", ("head",)),
    ("stage 4 + head float32", ("features.7", "head")),
    ("stem + stage 4 + head float32", ("features.0", "features.7", "head")),
    ("stages 3-4 + head float32", ("features.6", "features.7", "head")),
    ("stem + stage 1 float32 (stages 2-4 + head int8)", ("features.0", "features.4")),
    ("stem + stages 1-2 float32 (stages 3-4 + head int8)", ("features.0", "features.4", "features.5")),
]


def run(slide: Path, mask, float_layers) -> object:
    """``tumour_map`` in int8 with ``float_layers`` kept in float32 (None: the float32 map)."""
    if float_layers is None:
        return tumour_map(slide, "pcam-tumour", mask=mask, num_workers=0, device="cpu", precision="fp32")
    quantize = engine_int8.quantize
    engine_int8.quantize = lambda m, b, **kw: backend.quantize(m, b, float_layers=float_layers, use_cache=False)
    try:
        return tumour_map(slide, "pcam-tumour", mask=mask, num_workers=0, device="cpu", precision="int8")
    finally:
        engine_int8.quantize = quantize


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/tmln-bench", help="folder for the test slides (kept for reruns)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    slides = {"real tissue: 40 x 40 PCam validation patches": (mosaic(work / "pcam_mosaic.tif"), None),
              "phantom 1.2 x 1.0 mm (tissue mask)": (phantom(work / "phantom_1.2x1.0mm.tiff"), "tissue")}
    rows = []
    for name, (path, mask) in slides.items():
        ref = run(path, mask, None)
        ok = ~np.isnan(ref.array)
        thr = ref.threshold
        rows.append((name, "float32", 0.0, 0.0, ref.info["timing"]["compute_s"], 1.0))
        for label, layers in VARIANTS:
            pm = run(path, mask, layers)
            d = np.abs(pm.array - ref.array)[ok]
            changed = float(((pm.array[ok] >= thr) != (ref.array[ok] >= thr)).mean())
            s = pm.info["timing"]["compute_s"]
            rows.append((name, label, changed, float(d.max()), s, ref.info["timing"]["compute_s"] / s))
            print(rows[-1], flush=True)
    isa = "AVX2 (capped)" if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2" else "the CPU's own"
    lines = ["# int8 with layers kept in float32: pcam-tumour maps", "",
             f"Command: `{' '.join([*(f'{k}={os.environ[k]}' for k in ('ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA') if k in os.environ), '.venv/bin/python', 'benchmarks/int8_float_layers.py', *sys.argv[1:]])}`",
             f"CPU: {cpu_name()}, {os.cpu_count()} cores; instruction set: {isa}. Model seconds are the network's "
             "time inside `tumour_map` (one run each; the machine may be shared: read them as rough ratios).", "",
             "| slide | network | thresholded px changed | max \\|dP\\| | model s | vs float32 |",
             "|---|---|---:|---:|---:|---:|"]
    for name, label, ch, mx, s, ratio in rows:
        lines.append(f"| {name} | {label} | {100 * ch:.2f} % | {mx:.3f} | {s:.2f} | {ratio:.2f}x |")
    emit("\n".join(lines) + "\n", a.out)


if __name__ == "__main__":
    main()
