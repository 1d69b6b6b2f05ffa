"""Tumour-map engine throughput and memory, side by side in one run (ratios, not absolute promises).

Same model for everything: ResNet-18 (random weights) with a model card at 0.5 µm/px, patch 224, or
the model given by ``--model`` (a bundled name such as ``pcam-tumour`` or a model directory), the
original method's geometry scaled to its patch (region = 768/224 patches, lattice = 80 µm x patch
µm / 112 µm). Phantom slides at 0.25 µm/px (``tmln.phantom.make_slide``, cached in --work).

(a) tissue mm²/s over the same 1.5 x 1.5 mm of tissue:
    - original method (Wang et al. 2021), faithfully: one 768 x 768 px read at 0.5 µm/px per output
      point on an 80 µm lattice, the 3 x 3 grid of 224 px crops classified, the centre one kept;
    - tmln grid method at the same 80 µm output spacing (the same centre crops, read once per tile);
    - tmln dense method (fully convolutional, 16 µm output spacing: 25x more output points).
    Runs alternate (engine, original, ...) so that load from other processes hits both alike.
(b) reader only: the dense engine's tiles read through the same DataLoader, no model.
(c) peak RSS (process tree, sampled every 50 ms, plus ru_maxrss) in fresh subprocesses: tissue
    detection over the whole slide, then the engine over 5 boxes of 0.5 x 0.5 mm spread over the
    slide (so compute stays bounded while every whole-slide structure is built).
(d) end to end on a 60k x 40k px slide at 0.25 µm/px (15 x 10 mm), mapping its lymph nodes (31.8 %
    of the slide; ``regions_from_model`` with the truth node outlines, as ``tmln analyze`` does):
    open, plan, read, classify, stitch, write the map, threshold to polygons.

Run: .venv/bin/python benchmarks/tumour_engine.py --work /tmp/tmln-bench --out benchmarks/results/tumour_engine.md
     .venv/bin/python benchmarks/tumour_engine.py --model pcam-tumour --only a --bf16 \
         --out benchmarks/results/tumour_engine_pcam.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from common import cpu_name, emit

SLIDES = {  # name -> (size_mm, seed); 0.25 µm/px
    "p5mm": ((5.0, 5.0), 0),  # 20k x 20k px
    "p15x10mm": ((15.0, 10.0), 0),  # 60k x 40k px
    "p25mm": ((25.0, 25.0), 0),  # 100k x 100k px (only with --large)
}
ORIGINAL_REGION = 768
ORIGINAL_STRIDE_UM = 80.0
CROP = 224
MODEL_TEXT = "ResNet-18, random weights, card at 0.5 µm/px, patch 224 px"


def use_model_geometry(model) -> None:
    """Scale the original method's geometry to ``model``'s patch (``--model``)."""
    global CROP, ORIGINAL_REGION, ORIGINAL_STRIDE_UM, MODEL_TEXT
    from tmln.models.card import read_card

    card = read_card(model)
    CROP = int(card.patch_size)
    ORIGINAL_REGION = int(round(768 / 224 * CROP))
    ORIGINAL_STRIDE_UM = 80.0 * (CROP * card.mpp) / (224 * 0.5)
    MODEL_TEXT = f"{model} ({card.architecture}, card at {card.mpp:g} µm/px, patch {CROP} px)"


def model_dir(work: Path) -> Path:
    import torch

    from tmln.models.card import ModelCard, save_model_dir
    from tmln.models.classifier import build_classifier

    d = work / "resnet18-random"
    if not (d / "model_card.json").is_file():
        torch.manual_seed(0)
        card = ModelCard(task="tumour-classifier", architecture="resnet18", mpp=0.5, patch_size=224,
                         classes=["normal", "tumour"], threshold=0.5)
        save_model_dir(d, build_classifier("resnet18").state_dict(), card)
    return d


COMPRESSION = "jpeg"  # phantom tiles; --phantom-compression zlib where imagecodecs is missing


def slide_path(work: Path, name: str) -> Path:
    from tmln.phantom import SlideSpec, make_slide

    p = work / (f"{name}.tiff" if COMPRESSION == "jpeg" else f"{name}-{COMPRESSION}.tiff")
    if not p.is_file():
        size, seed = SLIDES[name]
        t = time.perf_counter()
        make_slide(p, SlideSpec(seed=seed, size_mm=size, mpp=0.25), compression=COMPRESSION)
        print(f"generated {p.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return p


def node_polygons(path: Path) -> list:
    from tmln.annotations import read_annotations

    return [a.geometry for a in read_annotations(path.with_suffix(".nodes.geojson"))]


def tissue_box(slide, size_um: float = 1000.0):
    """A size_um square fully inside tissue (level-0 px), found on the tissue mask."""
    from scipy import ndimage
    from shapely.geometry import box

    from tmln.tissue import detect_tissue

    tm = detect_tissue(slide)
    half = int(np.ceil(size_um / tm.mpp / 2))
    dist = ndimage.distance_transform_cdt(tm.mask, metric="chessboard")
    r, c = np.unravel_index(np.argmax(dist >= half + 1), dist.shape)
    if dist[r, c] < half + 1:
        raise SystemExit("no tissue square of that size")
    cx, cy = (c + 0.5) * tm.mpp / slide.mpp_x, (r + 0.5) * tm.mpp / slide.mpp_y
    h = size_um / 2 / slide.mpp_x
    return box(cx - h, cy - h, cx + h, cy + h), tm


# ---------------------------------------------------------------------------- (a) original method
def original_method(slide, module, card, points_px, device, bf16: bool = False):
    """Wang et al. 2021 as published: per output point read 768 px at the model µm/px, classify the
    3 x 3 grid of 224 px crops (batch of 9), keep the centre crop's probability. ``bf16``: the same
    under bfloat16 autocast (not in the publication; shows what precision alone buys it)."""
    import torch

    from tmln.models.classifier import input_transform

    tf = input_transform(card)
    f = card.mpp / slide.mpp_x
    off = [(ORIGINAL_REGION - 3 * CROP) // 2 + CROP * i for i in range(3)]
    out = []
    for x, y in points_px:  # centre of the output point, level-0 px
        loc = (x - ORIGINAL_REGION / 2 * f, y - ORIGINAL_REGION / 2 * f)
        region = slide.read(loc, (ORIGINAL_REGION, ORIGINAL_REGION), mpp=card.mpp)
        crops = np.stack([region[oy : oy + CROP, ox : ox + CROP] for oy in off for ox in off])
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            x9 = tf.normalise(torch.from_numpy(crops)).to(device)
            p = torch.sigmoid(module(x9)[:, 0].float())
        out.append(float(p[4]))
    return out


def lattice_points(poly, stride_px, n_max):
    x0, y0, x1, y1 = poly.bounds
    xs = np.arange(x0 + stride_px / 2, x1, stride_px)
    ys = np.arange(y0 + stride_px / 2, y1, stride_px)
    pts = [(x, y) for y in ys for x in xs]
    return pts[:n_max]


def read_only(slide, card, module, poly, workers, cuda: bool = False):
    """The streamed engine's reads (segments cut into bands), through the same DataLoader, no model."""
    from tmln.infer.plan import plan_dense
    from tmln.infer.readers import TileReader, default_workers, loader
    from tmln.infer.roi import roi_cells
    from tmln.models.classifier import input_transform
    from tmln.tumour import engine as E
    from tmln.tumour.dense import dense_form
    from tmln.tumour.runners import stream_reads

    dense = dense_form(module)
    plan = plan_dense(slide, card.mpp, card.patch_size, dense.stride, dense.rf.margins(),
                      E.STRIP_WIDTH_CUDA if cuda else E.STRIP_WIDTH_CPU, "stream")
    roi = roi_cells(slide, plan.shape, plan.stride_level0, plan.origin_level0, "nodes", [poly])
    _, locs, sizes, _ = stream_reads(plan, roi, E.BAND_PX)
    data = TileReader(slide, locs, sizes, card.mpp, stain=input_transform(card).stain)
    t = time.perf_counter()
    n = 0
    for _, tile, _ in loader(data, default_workers(cuda) if workers is None else workers, False):
        n += tile.numel()
    return time.perf_counter() - t, len(plan.tiles), float(roi.sum()) * (plan.stride * card.mpp / 1000) ** 2


# (label, tumour_map keyword arguments) of the engine variants timed in (a), in run order
VARIANTS = {
    "stream": {"precision": "fp32"},
    "stream_bf16": {"precision": "bf16"},
    "stream_int8": {"precision": "int8"},
    "stream_winograd": {"precision": "fp32-winograd"},
    "tiles": {"method": "dense", "precision": "fp32"},
    "tiles_bf16": {"method": "dense", "precision": "bf16"},
}


def bench_throughput(work: Path, model: Path, workers: int, reps: int, n_points: int, bf16: bool = False,
                     side_mm: float = 1500.0, device: str = "cpu", int8: bool = False, tiles: bool = True,
                     grid: bool = True, winograd: bool = False) -> dict:
    import torch

    from tmln.models.classifier import load_classifier
    from tmln.slide import Slide
    from tmln.tumour import tumour_map

    slide = Slide(slide_path(work, "p5mm"))  # tmln's reader: tiles decoded directly (tmln.tiff_tiles)
    published = Slide(slide_path(work, "p5mm"), direct=False)  # every read through OpenSlide, as published
    poly, _ = tissue_box(slide, side_mm)
    module, card = load_classifier(model, device=device)
    dev = torch.device(device)
    stride_px = ORIGINAL_STRIDE_UM / slide.mpp_x
    pts = lattice_points(poly, stride_px, n_points)
    variants = {k: v for k, v in VARIANTS.items() if (bf16 or "bf16" not in k) and (int8 or "int8" not in k)
                and (winograd or "winograd" not in k)
                and (tiles or not k.startswith("tiles"))}
    originals = {"original": (published, False), "original_direct": (slide, False)}
    if bf16:
        originals["original_bf16"] = (published, True)
    res = {k: [] for k in [*originals, *(["grid80"] if grid else []), *variants, "reader", "reader_openslide"]}
    cpu = {k: [] for k in res}  # process CPU seconds (all threads): less sensitive to other jobs than wall time
    roi, maps, info, builds = {}, {}, {}, {}
    for rep in range(reps):
        for name, kw in variants.items():
            t, c = time.perf_counter(), time.process_time()
            pm = tumour_map(slide, (module, card), mask="nodes", node_polygons=[poly], num_workers=workers,
                            device=device, **kw)
            res[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            roi[name], maps[name], info[name] = pm.info["roi_mm2"], pm.array, pm.info
            if "int8_build_s" in pm.info["timing"]:
                builds.setdefault(name, []).append(pm.info["timing"]["int8_build_s"])
            if name == "stream":  # the original between engine runs: load from other processes hits both
                for key, (sl, half) in originals.items():
                    t, c = time.perf_counter(), time.process_time()
                    original_method(sl, module, card, pts, dev, half)
                    res[key].append(time.perf_counter() - t)
                    cpu[key].append(time.process_time() - c)
                    roi[key] = len(pts) * (ORIGINAL_STRIDE_UM / 1000) ** 2
        if grid:
            t = time.perf_counter()
            g = tumour_map(slide, (module, card), mask="nodes", node_polygons=[poly], method="grid",
                           grid_stride=int(round(ORIGINAL_STRIDE_UM / card.mpp)), num_workers=workers, device=device,
                           precision="fp32")
            res["grid80"].append(time.perf_counter() - t)
            roi["grid80"] = g.info["roi_mm2"]
        for key, sl in (("reader", slide), ("reader_openslide", published)):
            dt, ntiles, mm2 = read_only(sl, card, module, poly, workers, dev.type == "cuda")
            res[key].append(dt)
            roi[key] = mm2
        print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in res.items()), flush=True)
    out = {"variants": {}}
    for k, v in res.items():
        med = statistics.median(v)
        out[k] = {"seconds": med, "mm2": roi[k], "mm2_per_s": roi[k] / med, "runs": v}
        if cpu[k]:
            out[k]["cpu_seconds"] = statistics.median(cpu[k])
            out[k]["mm2_per_cpu_s"] = roi[k] / out[k]["cpu_seconds"]
        if k in info:
            out[k].update(model_mpx=info[k]["model_mpx"], tiles=info[k]["tiles"], tile_size=info[k]["tile_size"],
                          timing=info[k]["timing"], method=info[k]["method"],
                          spacing_um=info[k]["stride_px"] * info[k]["model_mpp"])
    out["side_um"] = side_mm
    out["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    out["points_original"] = len(pts)
    out["reader_name"] = slide.reader(0)
    if "tiles" in maps:
        out["stream_vs_tiles_max_abs_diff"] = float(np.nanmax(np.abs(maps["stream"] - maps["tiles"])))
    if bf16:
        out["bf16_max_abs_diff"] = float(np.nanmax(np.abs(maps["stream_bf16"] - maps["stream"])))
    thr = float(card.threshold)
    ref = maps["stream"]
    for k, m in maps.items():  # every map against the float32 stream: max |dP|, thresholded pixels changed
        ok = ~np.isnan(ref) & ~np.isnan(m)
        out[k]["max_dp"] = float(np.abs(m - ref)[ok].max()) if m.shape == ref.shape else None
        out[k]["thr_changed"] = (float(((m[ok] >= thr) != (ref[ok] >= thr)).mean()) if m.shape == ref.shape
                                 else None)
        if k == "stream_int8":
            out[k]["int8"] = info[k].get("int8")
            out[k]["build_s"] = builds.get(k, [])
    out["cpu_isa"] = _isa()
    out["threshold"] = thr
    return out


def _isa() -> str:
    """The instruction set the run was allowed (tmln.models.backend.cpu_isa) and how it was capped."""
    from tmln.models.backend import cpu_isa

    caps = [f"{v}={os.environ[v]}" for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(v)]
    return cpu_isa() + (f" (capped: {', '.join(caps)})" if caps else "")


# ---------------------------------------------------------------------------- (c) memory
def rss_child(slide_file: str, model: str, workers: int) -> None:
    """Run in a subprocess: whole-slide tissue detection + the engine over 5 boxes; print JSON."""
    import psutil

    peak = [0]
    stop = threading.Event()

    def sample():
        me = psutil.Process()
        while not stop.is_set():
            try:
                procs = [me] + me.children(recursive=True)
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    import resource

    from shapely.geometry import box

    from tmln.slide import Slide
    from tmln.tissue import detect_tissue
    from tmln.tumour import tumour_map

    t = time.perf_counter()
    slide = Slide(slide_file)
    tm = detect_tissue(slide)
    w_um, h_um = slide.width * slide.mpp_x, slide.height * slide.mpp_y
    keep = np.zeros_like(tm.mask)
    for fx, fy in ((0.25, 0.25), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.75, 0.75)):
        x0, y0 = int((fx * w_um - 250) / tm.mpp), int((fy * h_um - 250) / tm.mpp)
        n = int(500 / tm.mpp)
        keep[y0 : y0 + n, x0 : x0 + n] = True
    _ = box
    pm = tumour_map(slide, model, mask="tissue", tissue=(tm.mask & keep, tm.mpp), num_workers=workers, device="cpu")
    stop.set()
    th.join()
    ru_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ru_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"peak_tree_bytes": peak[0], "ru_self_bytes": ru_self, "ru_children_bytes": ru_children,
                      "seconds": time.perf_counter() - t, "map_shape": list(pm.shape), "tiles": pm.info["tiles"],
                      "slide_px": [slide.width, slide.height], "roi_mm2": pm.info["roi_mm2"]}))


def bench_rss(work: Path, model: Path, names: list[str], workers: int) -> dict:
    out = {}
    for name in names:
        p = slide_path(work, name)
        r = subprocess.run([sys.executable, __file__, "--rss-child", str(p), "--model", str(model),
                            *_workers_arg(workers)], capture_output=True, text=True, check=True)
        out[name] = json.loads(r.stdout.strip().splitlines()[-1])
        print(name, out[name], flush=True)
    return out


# ---------------------------------------------------------------------------- (d) end to end
def e2e_child(slide_file: str, model: str, workers: int, out_dir: str, device: str = "cpu",
              precision: str = "fp32") -> None:
    t0 = time.perf_counter()
    from tmln.slide import Slide
    from tmln.tumour import regions_from_map, tumour_map

    slide = Slide(slide_file)
    nodes = node_polygons(Path(slide_file))
    t1 = time.perf_counter()
    pm = tumour_map(slide, model, mask="nodes", node_polygons=nodes, out_dir=out_dir, num_workers=workers,
                    device=device, precision=precision)
    t2 = time.perf_counter()
    regions = regions_from_map(pm, node_polygons=nodes)
    t3 = time.perf_counter()
    print(json.dumps({"total_s": t3 - t0, "imports_open_s": t1 - t0, "map_s": t2 - t1, "regions_s": t3 - t2,
                      "timing": pm.info["timing"], "tiles": pm.info["tiles"], "tile_size": pm.info["tile_size"],
                      "model_mpx": pm.info.get("model_mpx"), "precision": pm.info["precision"],
                      "method": pm.info["method"], "device": pm.info["device"],
                      "roi_mm2": pm.info["roi_mm2"], "regions": len(regions), "map_shape": list(pm.shape),
                      "slide_px": [slide.width, slide.height]}))


def _workers_arg(workers) -> list[str]:
    return [] if workers is None else ["--loader-workers", str(workers)]


def bench_e2e(work: Path, model: Path, workers: int, device: str = "cpu", precision: str = "fp32") -> dict:
    p = slide_path(work, "p15x10mm")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    r = subprocess.run([sys.executable, __file__, "--e2e-child", str(p), "--model", str(model),
                        *_workers_arg(workers), "--map-out", str(work / "e2e_map"), "--device", device,
                        "--precision", precision], capture_output=True, text=True, check=True, env=env)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print("e2e", res, flush=True)
    return res


# ---------------------------------------------------------------------------- report
def machine() -> str:
    try:
        import torch

        tv = torch.__version__
        threads = torch.get_num_threads()
    except Exception:  # pragma: no cover
        tv, threads = "?", "?"
    cpu = cpu_name()
    load = os.getloadavg()
    return (f"{cpu}, {os.cpu_count()} CPUs visible, torch {tv} ({threads} threads), Python {platform.python_version()}; "
            f"load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (shared machine)")


def _env_caps() -> list:
    """The environment a run was made under that changes its figures (instruction-set caps, thread waits)."""
    return [f"{v}={os.environ[v]}" for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_WAIT_POLICY",
                                             "OMP_NUM_THREADS") if os.environ.get(v)]


def _isa_native() -> str:
    import subprocess as sp

    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    r = sp.run([sys.executable, "-c", "from tmln.models.backend import cpu_isa; print(cpu_isa())"], env=env,
               capture_output=True, text=True)
    return r.stdout.strip() or "?"


def _workers_text(workers, cuda: bool) -> str:
    from tmln.infer.readers import default_workers

    n = default_workers(cuda) if workers is None else workers
    return f"{n} reader process(es)" + (" (the engine's default)" if workers is None else "") + \
        (" (reading in the model's process, in turn)" if n == 0 else "")


def report(args, thr, rss, e2e) -> str:
    lines = ["# Tumour-map engine benchmark", "",
             f"Command: `{' '.join(_env_caps() + ['.venv/bin/python'] + sys.argv)}`  ",
             f"Machine: {machine()}  ", f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Model: {MODEL_TEXT}; phantom slides at 0.25 µm/px "
             "(`tmln.phantom.make_slide`, seed 0).", ""]
    if thr:
        o, r = thr["original"], thr["reader"]
        side = thr["side_um"] / 1000
        lines += ["## (a) throughput over the same tissue, and (b) the reader alone", "",
                  f"Same {side:g} x {side:g} mm tissue square of the 5 x 5 mm phantom; device {thr['device']}; "
                  f"{_workers_text(args.workers, thr['device'] != 'CPU')}; median of {args.reps} run(s), the original timed between "
                  f"the engine's runs. The original method ran on the first {thr['points_original']} points of its "
                  f"{ORIGINAL_STRIDE_UM:.0f} µm lattice over that square (its cost per point does not depend on the region).", "",
                  f"Instruction set: {thr.get('cpu_isa', '?')} (this CPU: {_isa_native()}). "
                  "max |dP| and thresholded pixels changed: each map against the float32 stream map, "
                  f"threshold {thr.get('threshold', 0.5):.3g} from the model card.", "",
                  "| method | ISA | output spacing | tissue mm² | model Mpx / tissue mm² | seconds | tissue mm²/s | "
                  "vs original | CPU seconds | vs original, CPU time | max \\|dP\\| | thresholded px changed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        base = o["mm2_per_s"]
        lat, cell = f"{ORIGINAL_STRIDE_UM:.0f} µm", f"{thr['stream'].get('spacing_um', 16):.0f} µm"
        names = {"original": (f"original ({ORIGINAL_REGION} px read per point, 3x3 crops of {CROP}, centre kept; "
                              "OpenSlide reads, as published)", lat),
                 "original_direct": ("original, reading through tmln's tile decoder", lat),
                 "original_bf16": ("original in bf16 autocast (OpenSlide reads)", lat),
                 "grid80": ("tmln grid, float32 (the same centre crops, tiles read once)", lat),
                 "tiles": ("tmln dense, tiles (fully convolutional, margins per tile)", cell),
                 "tiles_bf16": ("tmln dense, tiles, bf16", cell),
                 "stream": ("**tmln stream, float32** (fully convolutional, strips streamed band by band; "
                            "`--precision fp32`, direct convolutions; the default on AVX-512 CPUs without bf16)", cell),
                 "stream_bf16": ("**tmln stream, bf16** (the default where the CPU has AVX512-BF16 or AMX)", cell),
                 "stream_winograd": ("**tmln stream, float32 Winograd** (`--precision fp32-winograd`: 3x3 convolutions "
                                     "by NNPACK's Winograd kernels; the default on CPUs without AVX-512)", cell),
                 "stream_int8": ("tmln stream, int8 (`--precision int8`: quantised, calibrated on 8 tiles of the slide)",
                                 cell),
                 "reader": (f"reader only (the stream's bands, no model; {thr.get('reader_name', 'openslide')})", "-"),
                 "reader_openslide": ("reader only, every read through OpenSlide", "-")}
        per_point = 9 * CROP * CROP / 1e6 / (ORIGINAL_STRIDE_UM / 1000) ** 2
        for key, (label, sp) in names.items():
            if key not in thr:
                continue
            row = thr[key]
            mpx = row["model_mpx"] / row["mm2"] if "model_mpx" in row else (per_point if key.startswith("original") else None)
            dp = row.get("max_dp")
            ch = row.get("thr_changed")
            isa = thr.get("cpu_isa", "?").split(" ")[0]
            lines.append(f"| {label} | {isa} | {sp} | {row['mm2']:.3f} | {'-' if mpx is None else f'{mpx:.1f}'} | "
                         f"{row['seconds']:.2f} | {row['mm2_per_s']:.4f} | {row['mm2_per_s'] / base:.1f}x | "
                         + (f"{row['cpu_seconds']:.2f} | {row['mm2_per_cpu_s'] / o['mm2_per_cpu_s']:.1f}x | "
                            if "cpu_seconds" in row and "cpu_seconds" in o else "- | - | ")
                         + f"{'-' if dp is None else f'{dp:.2g}'} | {'-' if ch is None else f'{100 * ch:.2f} %'} |")
        st = thr["stream"]
        tm = st["timing"]
        lines += ["", f"Stream run breakdown (last run): total {tm['total_s']:.1f} s, model {tm['compute_s']:.1f} s, "
                  f"waiting for bands {tm['wait_s']:.1f} s, band reads (summed over readers) {tm['read_s']:.1f} s; "
                  f"{st['tiles']} segment(s), strips up to {st['tile_size'][1]} model px wide, "
                  f"{st['model_mpx']:.1f} Mpx through the model" + (
                      f" (tiles: {thr['tiles']['model_mpx']:.1f} Mpx in {thr['tiles']['tiles']} tiles of up to "
                      f"{thr['tiles']['tile_size']} px)." if "tiles" in thr else "."),
                  f"Engine (stream) / reader-only throughput: {st['mm2_per_s'] / r['mm2_per_s']:.2f} "
                  "(1.0 would mean the engine runs at the decode limit).",
                  *([f"Stream vs tiles map: max |dP| = {thr['stream_vs_tiles_max_abs_diff']:.1e}."]
                    if "stream_vs_tiles_max_abs_diff" in thr else [])]
        if "bf16_max_abs_diff" in thr:
            lines += [f"bf16 vs float32 stream map: max |dP| = {thr['bf16_max_abs_diff']:.4f}."]
        if "stream_int8" in thr:
            q = thr["stream_int8"]
            builds = ", ".join(f"{t:.1f}" for t in q.get("build_s", []))
            lines += [f"int8 network build (calibration tiles read, quantised, streaming checked; included in its "
                      f"seconds above) per run: {builds} s (the first run calibrates, later runs read the cached "
                      f"calibration); {q['model_mpx']:.1f} Mpx through the model."]
        lines.append("")
    if rss:
        lines += ["## (c) peak memory", "",
                  "Fresh subprocess per slide: whole-slide tissue detection, then the engine over 5 boxes of "
                  "0.5 x 0.5 mm spread over the slide (whole-slide arrays are all built; compute stays bounded).", "",
                  "Peak RSS of the process tree is sampled every 50 ms. (`ru_maxrss` of the subprocess itself "
                  "is not reported: Linux carries the parent's peak across fork and exec, so it shows the "
                  "benchmark's own RSS.)", "",
                  "| slide | px | peak RSS, process tree | ru_maxrss largest child process | seconds |",
                  "|---|---|---|---|---|"]
        first = None
        for name, r in rss.items():
            gb = r["peak_tree_bytes"] / 1e9
            first = first or gb
            lines.append(f"| {name} | {r['slide_px'][0]} x {r['slide_px'][1]} | {gb:.2f} GB ({gb / first:.2f}x) | "
                         f"{r['ru_children_bytes'] / 1e9:.2f} GB | {r['seconds']:.0f} |")
        lines.append("")
    if e2e:
        first = e2e[0]
        lines += ["## (d) end to end, 60k x 40k px at 0.25 µm/px, nodes only", "",
                  f"{first['roi_mm2']:.1f} mm² mapped (the lymph nodes, 31.8 % of the slide), {first['tiles']} "
                  f"tiles/segments of up to {first['tile_size']} model px ({first['model_mpx']:.0f} Mpx through the "
                  f"model), method {first['method']} on {first['device']}, "
                  f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')}, "
                  f"{_workers_text(args.workers, first['device'] != 'cpu')}.", "",
                  "| stage, seconds | " + " | ".join(r["precision"] for r in e2e) + " |",
                  "|---|" + "---|" * len(e2e)]

        def row(label, get):
            lines.append(f"| {label} | " + " | ".join(f"{get(r):.1f}" for r in e2e) + " |")

        row("imports, open slide, read node outlines", lambda r: r["imports_open_s"])
        row("tumour map (plan, read, classify, stitch, write)", lambda r: r["map_s"])
        row("- model forward passes", lambda r: r["timing"]["compute_s"])
        row("- waiting for tiles", lambda r: r["timing"]["wait_s"])
        row("- tile reads, summed over readers (overlaps the model)", lambda r: r["timing"]["read_s"])
        row("threshold + polygons clipped to nodes", lambda r: r["regions_s"])
        lines.append("| **total** | " + " | ".join(f"**{r['total_s']:.1f}**" for r in e2e) + " |")
        lines.append("")
        if thr:
            for r in e2e:
                rate = r["roi_mm2"] / r["map_s"]
                lines.append(f"Whole-slide rate, {r['precision']}: {rate:.3f} node mm²/s = "
                             f"**{rate / thr['original']['mm2_per_s']:.1f}x** the original method's rate in (a) "
                             f"({r['model_mpx'] / r['roi_mm2']:.1f} model Mpx per node mm²).  ")
            lines.append("")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/tmln-bench")
    ap.add_argument("--out", default=None)
    ap.add_argument("--workers", type=int, default=None, help="reader processes (default: the engine's)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--points", type=int, default=25, help="original-method output points timed")
    ap.add_argument("--only", default="abcd", help="which parts to run (letters a-d; b runs with a)")
    ap.add_argument("--large", action="store_true", help="also the 100k x 100k px slide in (c)")
    ap.add_argument("--bf16", action="store_true", help="also the engine in bfloat16 in (a)")
    ap.add_argument("--int8", action="store_true", help="also the engine in int8 in (a)")
    ap.add_argument("--winograd", action="store_true", help="also the engine in fp32-winograd (NNPACK) in (a)")
    ap.add_argument("--no-tiles", action="store_true", help="skip the dense-tile variants in (a)")
    ap.add_argument("--no-grid", action="store_true", help="skip the grid method in (a)")
    ap.add_argument("--side-um", type=float, default=1500.0, help="edge of the tissue square in (a), µm")
    ap.add_argument("--device", default="cpu", help="(a) and (d) on this device (cpu, cuda)")
    ap.add_argument("--precision", default="fp32", help="(d) precision(s), comma-separated (fp32, bf16, auto)")
    ap.add_argument("--phantom-compression", default="jpeg", choices=["jpeg", "zlib"],
                    help="phantom slide tiles (zlib where imagecodecs is missing)")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--e2e-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help="model to benchmark (bundled name or directory; default: a "
                    "random-weight ResNet-18 at 0.5 µm/px, patch 224)")
    ap.add_argument("--map-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global COMPRESSION
    COMPRESSION = args.phantom_compression
    if args.rss_child:
        return rss_child(args.rss_child, args.model, args.workers)
    if args.e2e_child:
        return e2e_child(args.e2e_child, args.model, args.workers, args.map_out, args.device, args.precision)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        use_model_geometry(args.model)
    model = args.model or model_dir(work)
    thr = (bench_throughput(work, model, args.workers, args.reps, args.points, args.bf16, args.side_um, args.device,
                            args.int8, not args.no_tiles, not args.no_grid, args.winograd) if "a" in args.only else None)
    rss = None
    if "c" in args.only:
        rss = bench_rss(work, model, ["p5mm", "p15x10mm"] + (["p25mm"] if args.large else []), args.workers)
    e2e = ([bench_e2e(work, model, args.workers, args.device, p) for p in args.precision.split(",")]
           if "d" in args.only else None)
    if args.out:  # the raw figures first: a report that fails does not lose the run
        Path(args.out + ".json").write_text(json.dumps({"a": thr, "c": rss, "d": e2e}, default=str), encoding="utf-8")
    emit(report(args, thr, rss, e2e), args.out)


if __name__ == "__main__":
    main()
