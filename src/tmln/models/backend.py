"""Inference arithmetic on CPUs and GPUs: which precision a model runs in, and the int8 backend.

``resolve_precision("auto", device)`` picks: on CUDA bfloat16 autocast where the GPU has it, else
float16; on CPUs bfloat16 autocast where the CPU runs it natively (AVX512-BF16 or AMX), else
``"fp32-winograd"`` where PyTorch dispatches to AVX2 and has NNPACK (float32 arithmetic, 3 x 3
convolutions by Winograd's algorithm: ``tmln.models.winograd``), else float32.
``"fp32"`` (direct convolutions) gives the same maps on every machine; ``"fp32-winograd"``, ``"bf16"``,
``"fp16"`` and ``"int8"`` force one (fp32-winograd and int8 raise a ``TmlnError`` saying what is
missing where the CPU or PyTorch cannot run them, or the model has no int8 form).

**int8** (streamed and dense tumour methods; the node U-Net on request): post-training static
quantisation (``torch.ao.quantization``, FX mode, PyTorch's ``x86`` engine, whose convolutions are
oneDNN's int8 kernels: AVX2 ``vpmaddubsw`` or AVX512-VNNI), calibrated on ``CALIBRATION_TILES`` tiles
of the slide being mapped. It runs ResNet-18 about 2x as fast as float32 on AVX2-only CPUs (4-5x
with VNNI) but is **not** chosen by ``auto``: its thresholded maps differ from float32 in 0.8-1.3 %
of pixels on real tissue (pcam-tumour), more than the 0.5 % a default may change
(``benchmarks/results/tumour_backends.md``). ONNX Runtime and OpenVINO were measured and lost (same
page): in float32 neither is faster than PyTorch with Winograd convolutions (1.20x and 1.08x direct
float32 on a band, against 1.33x), neither can run the row-streamed network (they would pay the
receptive-field margin per tile), and ONNX Runtime cannot be held to AVX2.

The calibration's statistics (observer histograms, tensors only: nothing that runs code) are cached
as safetensors under the user cache (``TMLN_CACHE_DIR``, else ``$XDG_CACHE_HOME/tmln``, else
``~/.cache/tmln``) keyed by the model's weights, the calibration pixels, the options and the PyTorch
version, each file written under a temporary name then renamed. ``Calibration.record()`` says how a
map was computed (tiles, where, how many, engine, versions, CPU instruction set) and goes into the
map's sidecar (``int8``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tmln.atomic import write_bytes
from tmln import device as _device  # looked up at call time (tests patch tmln.device)
from tmln.models import winograd
from tmln.errors import TmlnError

PRECISIONS = ("auto", "fp32", "fp32-winograd", "bf16", "fp16", "int8")
WINOGRAD = "fp32-winograd"  # float32, 3 x 3 convolutions by NNPACK's Winograd kernels (tmln.models.winograd)
QENGINE = "x86"
CALIBRATION_TILES = 8  # tiles of the slide's own tissue the int8 ranges are calibrated on
CALIBRATION_PX = 256  # edge of a calibration tile, model px


def cpu_isa() -> str:
    """The widest vector instruction set PyTorch's CPU kernels dispatch to here: ``AVX512``, ``AVX2``,
    ``DEFAULT`` (neither; or not x86), as ``ATEN_CPU_CAPABILITY`` may cap it; plus ``+BF16`` / ``+AMX``
    / ``+VNNI`` where oneDNN is allowed to use them (``ONEDNN_MAX_CPU_ISA``)."""
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    extra = []
    if _device._avx512_allowed():
        for name, probe in (("VNNI", "_is_vnni_supported"), ("BF16", "_is_avx512_bf16_supported"),
                            ("AMX", "_is_amx_tile_supported")):
            try:
                if getattr(torch.cpu, probe)():
                    extra.append(name)
            except AttributeError:  # pragma: no cover - older torch
                pass
    return "+".join([cap] + extra)


def int8_available() -> tuple[bool, str]:
    """(True, "") where this PyTorch and CPU run int8 convolutions fast, else (False, why)."""
    import torch

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False, f"the int8 backend needs an x86-64 CPU (this is {platform.machine()})"
    if QENGINE not in torch.backends.quantized.supported_engines:
        return False, f"this PyTorch build has no {QENGINE!r} quantised engine " \
                      f"(has {torch.backends.quantized.supported_engines})"
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("AVX2", "AVX512"):
        return False, f"the int8 kernels need AVX2 or AVX-512 (this CPU/PyTorch dispatches to {cap})"
    return True, ""


def resolve_precision(precision: str, device, int8_ok: bool = True, why_not_int8: str = "",
                      cpu_reduced: bool = True) -> str:
    """``"fp32"``, ``"fp32-winograd"``, ``"bf16"``, ``"fp16"`` or ``"int8"`` for ``precision`` on
    ``device`` (see the module docstring). ``int8_ok``: whether the model can be quantised
    (``why_not_int8`` says why not); ``cpu_reduced=False``: ``auto`` keeps float32 arithmetic on CPUs
    (a model whose reduced-precision maps were not shown to stay the maps; Winograd is float32)."""
    import torch

    if precision not in PRECISIONS:
        raise TmlnError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dev = torch.device(device)
    if precision == "int8":
        if dev.type != "cpu":
            raise TmlnError(f"precision int8 runs on the CPU only (device {dev}); use auto, bf16 or fp16")
        ok, why = int8_available()
        if not ok:
            raise TmlnError(f"precision int8 is not available: {why}; use --precision auto or fp32")
        if not int8_ok:
            raise TmlnError(f"precision int8 is not available for this model: {why_not_int8}")
        return "int8"
    if precision == WINOGRAD:
        if dev.type != "cpu":
            raise TmlnError(f"precision {WINOGRAD} runs on the CPU only (device {dev}); use auto, bf16 or fp16")
        ok, why = winograd.available()
        if not ok:
            raise TmlnError(f"precision {WINOGRAD} is not available: {why}; use --precision auto or fp32")
        return WINOGRAD
    if precision != "auto":
        return precision
    if dev.type == "cuda":
        return "bf16" if _device.native_bf16(dev) else "fp16"
    if dev.type != "cpu":
        return "fp32"
    # int8 is never chosen by auto: its thresholded maps differ from float32 in more than 0.5 % of
    # pixels on real tissue (0.8-1.3 %, benchmarks/results/tumour_backends.md)
    if cpu_reduced and _device.native_bf16(dev):
        return "bf16"
    return WINOGRAD if winograd.preferred() else "fp32"  # float32 arithmetic: allowed where reduced is not


def amp_dtype(precision: str):
    """The autocast dtype of a resolved precision (None: no autocast; int8 runs its own kernels)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


# ---------------------------------------------------------------------------- int8
@dataclass
class Calibration:
    """What an int8 network was calibrated on, and how it was built."""

    source: str  # e.g. the slide's path
    tiles: list  # (x, y) level-0 px of each tile's top-left corner (or indices for in-memory images)
    tile_px: int  # edge of a tile, model px
    model_mpp: float
    cache: str = ""  # "hit" / "written" / "off"
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        import torch

        return {"backend": f"torch {QENGINE} quantised engine (oneDNN int8 kernels), post-training static quantisation",
                "torch": torch.__version__, "weights": "int8 limited to 7 bits, per output channel, symmetric",
                "activations": "uint8, per tensor, ranges from histograms of the calibration tiles",
                "calibration": {"source": self.source, "tiles": len(self.tiles), "tile_px": self.tile_px,
                                "tile_um": self.tile_px * self.model_mpp,
                                "locations_px": [list(map(float, t)) if isinstance(t, (tuple, list)) else t
                                                 for t in self.tiles]},
                "cache": self.cache, "build_s": round(self.seconds, 3), "cpu_isa": cpu_isa(), **self.extra}


def cache_dir() -> Path:
    d = os.environ.get("TMLN_CACHE_DIR")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tmln"


def _fingerprint(module, batches, options: str = "") -> str:
    import torch

    h = hashlib.sha256()
    h.update(f"{torch.__version__}|{QENGINE}|v1|{options}".encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().float().numpy()).tobytes())
    for b in batches:
        h.update(np.ascontiguousarray(b.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:32]


def qconfig_mapping(float_layers=(), reduce_range: bool = False, weight_bits: int = 7):
    """Histogram-calibrated uint8 activations (per tensor) and per-output-channel symmetric weights.

    The default, 8-bit activations and 7-bit weights, keeps AVX2's 16-bit pair sums (``vpmaddubsw``:
    two u8 x s8 products) from saturating (2 x 255 x 64 < 32767) at 8-bit activation resolution;
    PyTorch's x86 default (7-bit activations, 8-bit weights) changed 1.26 % of thresholded pcam-tumour
    map pixels on real tissue, this 0.98 %; 8-bit both saturates on AVX2 (19 %).
    ``float_layers``: module names left in float32."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import QConfig, get_default_qconfig_mapping
        from torch.ao.quantization.observer import HistogramObserver, default_per_channel_weight_observer

        m = get_default_qconfig_mapping(QENGINE)
        if not reduce_range or weight_bits != 8:
            w = default_per_channel_weight_observer
            if weight_bits != 8:
                from torch.ao.quantization.observer import PerChannelMinMaxObserver

                half = 2 ** (weight_bits - 1)
                w = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                       quant_min=-half, quant_max=half - 1)
            m.set_global(QConfig(activation=HistogramObserver.with_args(reduce_range=reduce_range), weight=w))
        for name in float_layers:
            m.set_module_name(name, None)
        return m


def quantize(module, batches, example=None, use_cache: bool = True, float_layers=(), reduce_range: bool = False,
             weight_bits: int = 7):
    """An int8 copy of the float ``module`` (eval mode, CPU), its activation ranges calibrated on
    ``batches`` (normalised float (N, C, H, W) tensors). Returns (quantised GraphModule, cache state)."""
    import copy

    import torch

    ok, why = int8_available()
    if not ok:
        raise TmlnError(f"precision int8 is not available: {why}")
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = QENGINE
        float_module = copy.deepcopy(module).cpu().float().eval()
        example = example if example is not None else batches[0][:1]
        prepared = prepare_fx(float_module, qconfig_mapping(float_layers, reduce_range, weight_bits), (example,))
        key = _fingerprint(float_module, batches, f"{sorted(float_layers)}|{reduce_range}|{weight_bits}")
        path = cache_dir() / "int8" / f"{key}.safetensors"
        state = "off"
        observers = {k: v for k, v in prepared.state_dict().items() if "activation_post_process" in k}
        loaded = False
        if use_cache and path.is_file():
            loaded = _load_observers(prepared, path, observers)
            state = "hit" if loaded else "unreadable, recalibrated"
        if not loaded:
            with torch.inference_mode():
                for b in batches:
                    prepared(b)
            if use_cache:
                state = _save_observers(prepared, path) if state == "off" else state
        return convert_fx(prepared).eval(), state


def _save_observers(prepared, path: Path) -> str:
    from safetensors.torch import save

    st = {k: v.detach().cpu().clone() for k, v in prepared.state_dict().items() if "activation_post_process" in k}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, save(st))  # temporary name, then rename
        return "written"
    except OSError as e:  # a read-only home: run on, uncached
        return f"not written ({e.strerror or e})"


def _load_observers(prepared, path: Path, expected: dict) -> bool:
    """Observer buffers from a safetensors file (tensors only: nothing runs); False where it does not
    match this network (then the caller recalibrates)."""
    from safetensors.torch import load_file

    try:
        st = load_file(str(path))
    except Exception:  # a truncated or foreign file
        return False
    if set(st) != set(expected):
        return False
    mods = dict(prepared.named_modules(remove_duplicate=False))
    for k, v in st.items():
        mod_name, _, buf = k.rpartition(".")
        m = mods.get(mod_name)
        if m is None or buf not in m._buffers:
            return False
        # histogram observers resize their buffers on the first batch: take the stored shape
        m._buffers[buf] = v.to(m._buffers[buf].dtype)
    return True


def calibration_points(roi: np.ndarray, n: int = CALIBRATION_TILES) -> list[tuple[int, int]]:
    """(row, col) of ``n`` region-of-interest cells spread evenly over it (raster order quantiles):
    deterministic, and from the slide's own tissue."""
    idx = np.flatnonzero(roi.ravel())
    if not idx.size:
        return []
    pick = np.unique(idx[np.linspace(0, idx.size - 1, min(n, idx.size)).round().astype(int)])
    return [(int(i // roi.shape[1]), int(i % roi.shape[1])) for i in pick]


def slide_calibration(slide, card, transform, roi: np.ndarray, stride_l0, origin_l0,
                      n: int = CALIBRATION_TILES, tile_px: int = CALIBRATION_PX):
    """(normalised (1, 3, t, t) float batches, ``Calibration``): ``n`` tiles of ``tile_px`` model px
    centred on region-of-interest cells of the output grid spread over the region (its own tissue)."""
    import torch

    fx, fy = card.mpp / slide.mpp_x, card.mpp / slide.mpp_y
    locs, batches = [], []
    for r, c in calibration_points(roi, n):
        cx = origin_l0[0] + (c + 0.5) * stride_l0[0]
        cy = origin_l0[1] + (r + 0.5) * stride_l0[1]
        loc = (cx - tile_px / 2 * fx, cy - tile_px / 2 * fy)
        rgb = transform.stain(slide.read(loc, (tile_px, tile_px), mpp=card.mpp))
        x = torch.from_numpy(np.ascontiguousarray(rgb))[None]
        batches.append(transform.normalise(x).float())
        locs.append((round(loc[0], 1), round(loc[1], 1)))
    return batches, Calibration(str(getattr(slide, "path", "")), locs, tile_px, float(card.mpp))
