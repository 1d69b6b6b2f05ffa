"""How close phantom tissue looks to real lymph-node H&E: procedural vs real-textured phantoms.

Real: PCam ``valid/`` patches (96 px at 0.97 µm/px, slides never used for the textures), sorted by the
appearance rules of ``tmln.phantom.real_texture`` (lymphoid, loose = fat/connective, stroma, tumour).
Phantom: 96 px windows at 0.97 µm/px lying >= 90 % inside one tissue class of phantom slides of seeds
never used elsewhere, rendered (a) with the procedural textures and (b) quilted from PCam ``train/``.

Statistics per patch, over its stained pixels (optical density sum > 0.3): per RGB channel the mean
and standard deviation of optical density; texture = mean gradient magnitude of grey OD after block
averaging to 1, 2, 4 and 8 µm/px. Reported: each statistic's mean over the patches, and the
standardised difference to real, SMD = (phantom mean - real mean) / real standard deviation
(|SMD| < 0.2 is a small difference, > 0.8 large), then the mean |SMD| per class.

    .venv/bin/python benchmarks/phantom_realism.py --out benchmarks/results/phantom_realism.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

PCAM = Path(os.environ.get("TMLN_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "pcam"
MPP = 0.97
SIZE = 96
STATS = ("od_mean_r", "od_mean_g", "od_mean_b", "od_std_r", "od_std_g", "od_std_b",
         "texture_1um", "texture_2um", "texture_4um", "texture_8um")
CLASSES = ("lymphoid", "loose", "stroma", "tumour")


def patch_stats(rgb: np.ndarray) -> list[float] | None:
    od = -np.log10(np.clip(rgb.astype(np.float32), 1.0, 255.0) / 255.0)
    stained = od.sum(-1) > 0.3
    if stained.mean() < 0.05:
        return None
    sel = od[stained]
    out = [*sel.mean(0).tolist(), *sel.std(0).tolist()]
    grey = od.mean(-1)
    for um in (1, 2, 4, 8):
        f = max(1, int(round(um / MPP)))
        h, w = (grey.shape[0] // f) * f, (grey.shape[1] // f) * f
        g = grey[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)) if f > 1 else grey
        gy, gx = np.gradient(g)
        out.append(float(np.hypot(gx, gy).mean()))
    return out


def real_patches(n_per_label: int) -> dict[str, np.ndarray]:
    from PIL import Image

    from tmln.phantom.real_texture import patch_group

    rng = np.random.default_rng(0)
    out = {c: [] for c in CLASSES}
    for label, tumour in (("normal", False), ("tumor", True)):
        files = sorted((PCAM / "valid" / label).iterdir())
        for i in rng.choice(len(files), min(n_per_label, len(files)), replace=False):
            rgb = np.asarray(Image.open(files[i]).convert("RGB"))
            g = patch_group(rgb, tumour)
            if g is not None:
                s = patch_stats(rgb)
                if s is not None:
                    out[g].append(s)
    return {c: np.asarray(v) for c, v in out.items()}


def phantom_patches(textures: str | None, n_slides: int, per_class: int) -> dict[str, np.ndarray]:
    from tmln.phantom.geometry import SlideSpec, make_layout
    from tmln.phantom.render import SlideRenderer
    from tmln.phantom.texture import CAPSULE_BY_ORIENTATION, FAT, LYMPH, STROMA, TUMOUR

    codes = {"lymphoid": (LYMPH,), "loose": (FAT,), "stroma": (STROMA, *CAPSULE_BY_ORIENTATION), "tumour": (TUMOUR,)}
    rng = np.random.default_rng(1)
    out = {c: [] for c in CLASSES}
    for seed in range(5000, 5000 + n_slides):
        lay = make_layout(SlideSpec(seed=seed, size_mm=(6.0, 4.5), mpp=MPP, negative=False, perinodal=True,
                                    textures=textures))
        r = SlideRenderer(lay)
        lab = r.labels(1, 0, 0, lay.width, lay.height)
        for c, cs in codes.items():
            inside = np.isin(lab, cs)
            ys, xs = np.nonzero(inside[SIZE // 2: -SIZE // 2: 8, SIZE // 2: -SIZE // 2: 8])
            got = 0
            for i in rng.permutation(len(ys)):
                if got >= per_class:
                    break
                y0, x0 = ys[i] * 8, xs[i] * 8
                if inside[y0:y0 + SIZE, x0:x0 + SIZE].mean() < 0.9:
                    continue
                s = patch_stats(r.region(1, int(x0), int(y0), SIZE, SIZE))
                if s is not None:
                    out[c].append(s)
                    got += 1
    return {c: np.asarray(v) for c, v in out.items()}


def table(real: dict, phantoms: dict[str, dict]) -> list[str]:
    lines = ["| class | statistic | real (PCam valid) | " + " | ".join(f"{k} | SMD {k}" for k in phantoms) + " |",
             "|---|---|---|" + "---|---|" * len(phantoms)]
    summary = {k: {} for k in phantoms}
    for c in CLASSES:
        r = real[c]
        for j, name in enumerate(STATS):
            mu, sd = r[:, j].mean(), r[:, j].std() + 1e-9
            cells = []
            for k, ph in phantoms.items():
                p = ph[c]
                if len(p) == 0:
                    cells += ["–", "–"]
                    continue
                smd = (p[:, j].mean() - mu) / sd
                summary[k].setdefault(c, []).append(abs(smd))
                cells += [f"{p[:, j].mean():.3f}", f"{smd:+.2f}"]
            lines.append(f"| {c} | {name} | {mu:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "Mean |SMD| over the ten statistics (lower = closer to real tissue):", "",
              "| class | real patches | " + " | ".join(phantoms) + " |", "|---|---|" + "---|" * len(phantoms)]
    for c in CLASSES:
        lines.append(f"| {c} | {len(real[c])} | " + " | ".join(
            f"{np.mean(summary[k][c]):.2f} (n={len(phantoms[k][c])})" if c in summary[k] else "–" for k in phantoms) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--real-per-label", type=int, default=1500)
    ap.add_argument("--slides", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=60)
    a = ap.parse_args(argv)
    if not (PCAM / "valid").is_dir():
        print(f"{PCAM} not found (set TMLN_SHARED)", file=sys.stderr)
        return 2
    t = time.time()
    real = real_patches(a.real_per_label)
    phantoms = {"procedural": phantom_patches(None, a.slides, a.per_class),
                "real-textured": phantom_patches(str(PCAM / "train"), a.slides, a.per_class)}
    lines = ["# Phantom realism: statistics per channel and texture scale, real vs phantom", "",
             f"Command: `.venv/bin/python benchmarks/phantom_realism.py --out benchmarks/results/phantom_realism.md` "
             f"({time.time() - t:.0f} s). Patches 96 px at 0.97 µm/px; phantoms: {a.slides} slides per kind, seeds "
             "5000+, `perinodal=True`; real-textured phantoms quilt PCam `train/`, the real reference is PCam "
             "`valid/` (other slides). SMD = (phantom mean - real mean) / real SD.", "", *table(real, phantoms), ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
