"""Inference backends for the tumour model on a CPU, side by side in one process (ratios, not promises).

(1) Runtimes: the fully convolutional pcam-tumour ResNet-18 (``tmln.tumour.dense``) on one band of real
    tissue (1 x 3 x 512 x 2048 px at 0.97 µm/px, from a mosaic of PCam validation patches):
    PyTorch float32 (oneDNN, channels-last: what ``tmln`` runs), PyTorch int8 (``tmln.models.backend``,
    calibrated on 8 tiles of the mosaic), ONNX Runtime float32 / int8 (QDQ, ``quantize_static`` on the
    same tiles), OpenVINO float32 / int8 (the same QDQ model). Runs alternate; median of ``--reps``.
(2) Maps: ``tmln.tumour.tumour_map`` with pcam-tumour in float32, int8 (and bf16 where the CPU runs it
    natively) on the real-tissue mosaic (40 x 40 PCam patches, tumour in blobs) and on a phantom
    (``tmln.phantom``, 1.2 x 1.0 mm): max |dP| against float32 and the share of thresholded pixels that
    change (threshold from the card), beside the model's seconds.

Instruction set: run it once as is and once capped to AVX2, e.g.
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2 .venv/bin/python \\
        benchmarks/tumour_backends.py --out benchmarks/results/tumour_backends_avx2.md
ONNX Runtime's kernels (MLAS) dispatch on CPUID and have no cap: its rows always use the CPU's full
instruction set, which flatters it on a capped run. Needs onnxruntime, onnx and openvino (benchmark only;
rows for a missing runtime are left out, saying so).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from common import cpu_name, emit

REPO = Path(__file__).resolve().parents[1]
PCAM = Path(os.environ.get("TMLN_SHARED", REPO.parent / "shared")) / "data" / "pcam" / "valid"


def mosaic(path: Path, n: int = 40) -> Path:
    """A real-tissue test slide: n x n PCam validation patches (96 px at 0.97 µm/px), tumour patches in
    smooth blobs (40 % of positions), written as a lossless tiled TIFF."""
    import cv2
    import tifffile

    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    files = {k: sorted(glob.glob(str(PCAM / k / "*.jpg"))) for k in ("normal", "tumor")}
    if not files["normal"] or not files["tumor"]:
        raise SystemExit(f"no PCam patches under {PCAM}")
    field = cv2.resize(rng.random((5, 5)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
    cut = np.quantile(field, 0.6)
    img = np.zeros((n * 96, n * 96, 3), np.uint8)
    used = {"normal": 0, "tumor": 0}
    for r in range(n):
        for c in range(n):
            k = "tumor" if field[r, c] > cut else "normal"
            img[r * 96 : (r + 1) * 96, c * 96 : (c + 1) * 96] = cv2.imread(files[k][used[k] % len(files[k])])[:, :, ::-1]
            used[k] += 1
    ppcm = 1e4 / 0.97
    tifffile.imwrite(path, img, photometric="rgb", tile=(256, 256), compression="zlib", resolution=(ppcm, ppcm),
                     resolutionunit="CENTIMETER", metadata=None)
    return path


def phantom(path: Path) -> Path:
    from tmln.phantom import SlideSpec, make_slide

    if not path.is_file():
        make_slide(path, SlideSpec(seed=3, size_mm=(1.2, 1.0), mpp=0.25), tile=256, compression="zlib")
    return path


# ---------------------------------------------------------------------------- (1) runtimes
def runtimes(slide_path: Path, work: Path, reps: int) -> dict:
    import torch

    from tmln.models import backend as BK
    from tmln.models.classifier import input_transform, load_classifier
    from tmln.slide import Slide
    from tmln.tumour.dense import dense_form

    module, card = load_classifier("pcam-tumour", device="cpu")
    dense = dense_form(module)
    tf = input_transform(card)
    slide = Slide(slide_path)

    def read(x, y, h, w):
        return tf.normalise(torch.from_numpy(np.ascontiguousarray(slide.read((x, y), (w, h), mpp=card.mpp)))[None]).float()

    band = read(0, 1000, 512, 2048)
    calib = [read(300 + 400 * i, 300 + 350 * (i % 4), 256, 256) for i in range(8)]
    out, fns, notes = {}, {}, []
    cl = torch.channels_last
    dcl = dense.to(memory_format=cl)
    xcl = band.contiguous(memory_format=cl)
    with torch.inference_mode():
        ref = dense(band).numpy()
    fns["PyTorch float32 (oneDNN)"] = lambda: dcl(xcl)
    from tmln.models import winograd

    if winograd.available()[0]:
        wdense = winograd.winograd_convs(dense)[0].to(memory_format=cl)
        fns["PyTorch float32, 3x3 convolutions by NNPACK Winograd (tmln.models.winograd)"] = lambda: wdense(xcl)
    else:
        notes.append(f"Winograd row left out: {winograd.available()[1]}")
    q, _ = BK.quantize(dense, calib, use_cache=False)
    fns["PyTorch int8 (tmln.models.backend)"] = lambda: q(band)
    onnx_path, qdq_path = work / "pcam_dense.onnx", work / "pcam_dense_qdq.onnx"
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(dense, (band[:, :, :256, :256],), str(onnx_path), input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}}, opset_version=17,
                              dynamo=False)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"x": c.numpy()} for c in calib])

            def get_next(self):
                return next(self.it, None)

        quantize_static(str(onnx_path), str(qdq_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        xn = band.numpy()
        s32 = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        s8 = ort.InferenceSession(str(qdq_path), so, providers=["CPUExecutionProvider"])
        fns[f"ONNX Runtime {ort.__version__} float32 (MLAS; full ISA, no cap)"] = lambda: s32.run(None, {"x": xn})[0]
        fns[f"ONNX Runtime {ort.__version__} int8 QDQ (MLAS; full ISA, no cap)"] = lambda: s8.run(None, {"x": xn})[0]
    except ImportError as e:
        notes.append(f"ONNX Runtime rows left out: {e}")
    try:
        import openvino as ov

        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32",
               "PERFORMANCE_HINT": "LATENCY"}
        for label, path in (("float32", onnx_path), ("int8 (the QDQ model)", qdq_path)):
            if not path.is_file():
                continue
            req = core.compile_model(str(path), "CPU", cfg).create_infer_request()
            xn = band.numpy()
            fns[f"OpenVINO {ov.__version__.split('-')[0]} {label}"] = lambda r=req: r.infer({0: xn})[0]
        out["ov_exec"] = _ov_exec_types(core, onnx_path, cfg) if onnx_path.is_file() else ""
    except ImportError as e:
        notes.append(f"OpenVINO rows left out: {e}")
    times = {k: [] for k in fns}
    errs = {}
    with torch.inference_mode():
        for k, f in fns.items():  # warm-up (oneDNN / OpenVINO compile kernels on first call)
            y = f()
            y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
            errs[k] = float(np.abs(y - ref).max())
        for _ in range(reps):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    mpx = band.shape[2] * band.shape[3] / 1e6
    out["rows"] = {k: {"seconds": statistics.median(v), "mpx_s": mpx / statistics.median(v), "max_dlogit": errs[k]}
                   for k, v in times.items()}
    out["logit_range"] = float(np.abs(ref).max())
    out["notes"] = notes
    return out


def _ov_exec_types(core, path, cfg) -> str:
    """The kernels OpenVINO's CPU plugin chose for the float32 convolutions (its runtime model)."""
    try:
        rt = core.compile_model(str(path), "CPU", cfg).get_runtime_model()
        kinds = {}
        for op in rt.get_ops():
            info = op.get_rt_info()
            if "layerType" in info and str(info["layerType"]) == "Convolution":
                k = str(info["primitiveType"]) if "primitiveType" in info else "?"
                kinds[k] = kinds.get(k, 0) + 1
        return ", ".join(f"{k} x{n}" for k, n in kinds.items())
    except Exception as e:  # pragma: no cover - a changed runtime-model API
        return f"(not read: {e})"


# ---------------------------------------------------------------------------- (2) maps
def maps(slides: dict) -> list:
    from tmln.device import native_bf16
    from tmln.tumour import tumour_map

    from tmln.models import winograd

    precs = (["fp32", "int8"] + (["fp32-winograd"] if winograd.available()[0] else [])
             + (["bf16"] if native_bf16("cpu") else []))
    rows = []
    for name, (path, mask) in slides.items():
        res = {}
        for p in precs:
            t = time.perf_counter()
            res[p] = tumour_map(path, "pcam-tumour", mask=mask, num_workers=0, device="cpu", precision=p)
            res[p].info["wall_s"] = time.perf_counter() - t
        ref = res["fp32"].array
        ok = ~np.isnan(ref)
        thr = res["fp32"].threshold
        for p, pm in res.items():
            a = pm.array
            rows.append({"slide": name, "precision": p, "pixels": int(ok.sum()),
                         "positive": float((ref[ok] >= thr).mean()),
                         "max_dp": float(np.abs(a - ref)[ok].max()), "mean_dp": float(np.abs(a - ref)[ok].mean()),
                         "changed": float(((a[ok] >= thr) != (ref[ok] >= thr)).mean()),
                         "model_s": pm.info["timing"]["compute_s"], "wall_s": pm.info["wall_s"],
                         "build_s": pm.info["timing"].get("int8_build_s", 0.0)})
    return rows


def report(args, rt, mp) -> str:
    import torch

    from tmln.models.backend import cpu_isa

    caps = [f"{v}={os.environ[v]}" for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OV_CPU_MAX_ISA")
            if os.environ.get(v)]
    load = os.getloadavg()
    lines = ["# Tumour-model inference backends on the CPU", "",
             f"Command: `{' '.join(([*caps] if caps else []) + ['.venv/bin/python'] + sys.argv)}`  ",
             f"Machine: {cpu_name()}, {os.cpu_count()} CPUs visible, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads); load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} "
             "(shared machine: other jobs ran beside this one; ratios within a table are the figures to read)  ",
             f"Instruction set PyTorch/oneDNN were allowed: **{cpu_isa()}**"
             + (f" (capped: {', '.join(caps)})" if caps else " (not capped)") + "  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    if rt:
        base = rt["rows"]["PyTorch float32 (oneDNN)"]["mpx_s"]
        lines += ["## (1) runtimes: pcam-tumour ResNet-18, fully convolutional, one 512 x 2048 px band of real tissue", "",
                  f"Median of {args.reps} alternating runs. max |d logit| against PyTorch float32 (logits up to "
                  f"{rt['logit_range']:.1f}).", "",
                  "| runtime | seconds | Mpx/s | vs PyTorch float32 | max \\|d logit\\| |", "|---|---|---|---|---|"]
        for k, r in rt["rows"].items():
            lines.append(f"| {k} | {r['seconds']:.3f} | {r['mpx_s']:.2f} | {r['mpx_s'] / base:.2f}x | {r['max_dlogit']:.4f} |")
        if rt.get("ov_exec"):
            lines += ["", f"OpenVINO float32 convolution kernels (its runtime model): {rt['ov_exec']}."]
        lines += [""] + [f"{n}." for n in rt["notes"]] + ([""] if rt["notes"] else [])
    if mp:
        lines += ["## (2) maps: pcam-tumour through `tmln.tumour.tumour_map`, each precision against float32", "",
                  "| slide | precision | map px | P >= threshold (float32) | max \\|dP\\| | mean \\|dP\\| | "
                  "thresholded px changed | model s | whole call s (int8: incl. build) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in mp:
            lines.append(f"| {r['slide']} | {r['precision']} | {r['pixels']} | {100 * r['positive']:.1f} % | "
                         f"{r['max_dp']:.2g} | {r['mean_dp']:.2g} | {100 * r['changed']:.2f} % | {r['model_s']:.2f} | "
                         f"{r['wall_s']:.2f}" + (f" ({r['build_s']:.1f})" if r["build_s"] else "") + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/tmln-bench")
    ap.add_argument("--out", default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="12", help="1: runtimes, 2: maps")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    mos = mosaic(work / "pcam_mosaic.tif")
    rt = runtimes(mos, work, args.reps) if "1" in args.only else None
    mp = (maps({"real tissue: 40 x 40 PCam validation patches (3.6 x 3.6 mm at 0.97 µm/px)": (mos, None),
                "phantom 1.2 x 1.0 mm (tissue mask)": (phantom(work / "phantom_1.2x1.0mm.tiff"), "tissue")})
          if "2" in args.only else None)
    emit(report(args, rt, mp), args.out)


if __name__ == "__main__":
    main()
