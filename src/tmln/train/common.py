"""Shared training utilities for both models: seeding, device/AMP/channels-last, DDP, logging,
resumable checkpoints and best-model tracking.

Distributed training is started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); ``init_distributed`` joins the process group
with NCCL on GPUs and gloo on CPU. Without those variables everything runs as a single process
(rank 0 of 1) and every collective helper is a no-op.

Checkpoints (``save_checkpoint``/``load_checkpoint``) hold only tensors and plain Python values
and are read with ``torch.load(weights_only=True)``: loading never executes code. The final model
is a model directory (safetensors + card) written by ``tmln.models.card.save_model_dir``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from tmln.atomic import atomic_path, write_text
from tmln.device import native_bf16, select_device
from tmln.errors import TmlnError
from tmln.models.card import list_bundled, load_state_dict, resolve_model_dir, save_model_dir, state_dict_mismatch
from tmln.models.equivariant import plain_state_dict

log = logging.getLogger("tmln.train")


# ---------------------------------------------------------------------------- seeding
def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU ``torch.Generator`` seeded with ``seed``.

    deterministic : ask torch for deterministic kernels (exact reruns on CPU; on CUDA some kernels
        stay non-deterministic, a warning not an error).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
    return torch.Generator().manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker seeding: NumPy and ``random`` follow torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ---------------------------------------------------------------------------- distributed
@dataclass
class DistContext:
    """Where this process stands: rank among ``world_size`` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this call created the process group (so it should destroy it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (0, 1, 0 when absent)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: str | None = "auto") -> DistContext:
    """Choose the device and, under torchrun (``WORLD_SIZE`` > 1), join the process group.

    GPUs: one per process (``cuda:LOCAL_RANK``), NCCL. CPU: gloo. Safe to call twice.
    """

    rank, world, local = env_world()
    dev = select_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local % max(1, torch.cuda.device_count()))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev, owns_group=owns)


def _dist_on() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    """True on rank 0 (and in every non-distributed run)."""
    return not _dist_on() or torch.distributed.get_rank() == 0


def barrier() -> None:
    if _dist_on():
        torch.distributed.barrier()


def cleanup_distributed() -> None:
    """Leave the process group (no barrier: safe on an error path)."""
    if _dist_on():
        torch.distributed.destroy_process_group()


def all_reduce_sum(values: Sequence[float] | float, device: torch.device | None = None) -> list[float] | float:
    """Sum numbers over all ranks (float64); returns the same shape as given."""
    scalar = np.isscalar(values)
    if not _dist_on():
        return float(values) if scalar else [float(v) for v in values]
    dev = device or (torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else torch.device("cpu"))
    t = torch.tensor([values] if scalar else list(values), dtype=torch.float64, device=dev)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    out = t.cpu().tolist()
    return out[0] if scalar else out


def all_reduce_mean(values: Sequence[float] | float, device: torch.device | None = None):
    """Mean over ranks of per-rank numbers."""
    world = torch.distributed.get_world_size() if _dist_on() else 1
    s = all_reduce_sum(values, device)
    return s / world if np.isscalar(s) else [v / world for v in s]


def gather_arrays(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenate each array over ranks (rank order); every rank gets the result."""
    if not _dist_on():
        return tuple(np.asarray(a) for a in arrays)
    world = torch.distributed.get_world_size()
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, [np.asarray(a) for a in arrays])
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(arrays)))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank."""
    if not _dist_on():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> np.ndarray:
    """Indices ``rank::world_size`` of ``range(n)``: each item on exactly one rank (no padding),
    for evaluation whose results are then gathered with ``gather_arrays``."""
    r = rank if rank is not None else (torch.distributed.get_rank() if _dist_on() else 0)
    w = world_size if world_size is not None else (torch.distributed.get_world_size() if _dist_on() else 1)
    return np.arange(n)[r::w]


def distributed_sampler(dataset, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
    """A ``DistributedSampler`` when distributed, else ``None`` (let the DataLoader shuffle).
    Call ``set_epoch(sampler, epoch)`` each epoch."""
    if not _dist_on():
        return None
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)


class DistributedWeightedSampler(torch.utils.data.Sampler):
    """Weighted sampling with replacement, split across ranks: each rank draws ``num_samples /
    world_size`` indices from the same seeded stream (class balance under DDP). Single-process:
    the same as ``WeightedRandomSampler`` with a seeded generator."""

    def __init__(self, weights: Sequence[float], num_samples: int, seed: int = 0):
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if _dist_on() else (0, 1)
        self.rank, self.world = rank, world
        self.num_samples = int(math.ceil(num_samples / world))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + 1000003 * self.epoch)
        idx = torch.multinomial(self.weights, self.num_samples * self.world, replacement=True, generator=g)
        return iter(idx[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.num_samples


def set_epoch(sampler, epoch: int) -> None:
    if sampler is not None and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


# ---------------------------------------------------------------------------- model placement, AMP
def prepare_model(model: torch.nn.Module, ctx: DistContext, channels_last: bool | None = None) -> torch.nn.Module:
    """Move to the device (channels-last memory on GPU by default) and wrap in DDP when distributed."""
    if channels_last is None:
        channels_last = ctx.device.type == "cuda"
    model = model.to(ctx.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if ctx.distributed:
        import warnings

        from torch.nn.parallel import DistributedDataParallel as DDP

        # 1x1 convolutions on 1x1 maps: gradient strides are ambiguous, harmless (performance note only)
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

        if ctx.device.type == "cuda":
            model = DDP(model, device_ids=[ctx.device.index], output_device=ctx.device.index)
        else:
            model = DDP(model)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DDP (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def to_device_batch(x: torch.Tensor, device: torch.device, channels_last: bool | None = None) -> torch.Tensor:
    if channels_last is None:
        channels_last = device.type == "cuda"
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class Amp:
    """Mixed precision. CUDA: bf16 where supported (no loss scaling), else fp16 with a
    ``GradScaler``. CPU: bf16 autocast only with ``cpu_bf16=True`` and a CPU that runs bf16
    natively (AVX512-BF16 / AMX, ``tmln.device.native_bf16``; about 1.9x faster training of a
    ResNet-18 on such a CPU); elsewhere ``autocast()`` and the scaler are pass-throughs (fp32)."""

    def __init__(self, device: torch.device, enabled: bool = True, cpu_bf16: bool = False):
        self.device = device
        self.dtype = None
        if not enabled:
            self.enabled = False
        elif device.type == "cuda":
            self.enabled = True
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.enabled = bool(cpu_bf16) and device.type == "cpu" and native_bf16(device)
            self.dtype = torch.bfloat16 if self.enabled else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """backward + optimizer step (with loss scaling for fp16)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.load_state_dict(state)


# ---------------------------------------------------------------------------- logging
class CSVLogger:
    """Per-epoch metrics as CSV (rewritten atomically at each row, rank 0 only), plus TensorBoard
    scalars when ``tensorboard`` is installed and ``tensorboard=True``.

    On resume, rows with ``epoch >= start_epoch`` from an interrupted run are dropped first so the
    log matches the checkpoint.
    """

    def __init__(self, path: str | Path, start_epoch: int = 0, tensorboard: bool = True):
        self.path = Path(path)
        self.main = is_main_process()
        self.rows: list[dict] = []
        if self.path.is_file() and start_epoch > 0:
            with open(self.path, newline="", encoding="utf-8") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(float(r.get("epoch", 0))) < start_epoch]
        self.tb = None
        if tensorboard and self.main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(self.path.parent / "tensorboard"))
            except Exception:  # tensorboard not installed: CSV only
                self.tb = None

    def log(self, row: dict) -> None:
        self.rows.append({k: _plain(v) for k, v in row.items()})
        if not self.main:
            return
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        write_text(self.path, buf.getvalue())
        if self.tb is not None:
            step = int(row.get("epoch", len(self.rows)))
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self.tb.add_scalar(k, float(v), step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, torch.Tensor):
        return v.item()
    return v


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True):
    """A tqdm bar on stderr (rate in ``unit``/s, ETA); a no-op bar when ``enabled`` is false."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True,
                mininterval=1.0)


def hardware_description(device: torch.device) -> str:
    """What trained the model, for its card: the GPU's name, or the CPU's model name, its torch
    threads and whether it runs bf16 natively."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    name = "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), name)
    except OSError:
        pass
    bf16 = "native bf16 (AVX512-BF16/AMX)" if native_bf16(device) else "no native bf16"
    return f"{name}, {torch.get_num_threads()} torch threads, {bf16}"


def main_print(msg: str, quiet: bool = False) -> None:
    """Log a progress line on rank 0 only."""
    if is_main_process() and not quiet:
        log.info(msg)


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    epoch: int,
    best_metric: float | None,
    extra: dict | None = None,
) -> None:
    """Save resumable state (rank 0 only; atomic). ``epoch`` = number of completed epochs.

    ``extra`` may hold tensors and plain values (numbers, strings, lists, dicts) only."""
    if not is_main_process():
        return
    state = {
        "epoch": int(epoch),
        "best_metric": None if best_metric is None else float(best_metric),
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
    config: dict | None = None,
) -> dict:
    """Restore what ``save_checkpoint`` wrote into the given objects; returns the state dict
    (``epoch``, ``best_metric``, ``extra``). Uses ``torch.load(weights_only=True)``.

    config : the run's settings; a checkpoint saved (``extra["config"]``) with other values for
        any of them is refused, naming them, before anything is restored."""

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise TmlnError(f"cannot read training checkpoint ({exc})", path) from None
    saved = (state.get("extra") or {}).get("config", {})
    diff = [k for k in (config or {}) if k in saved and saved[k] != config[k]]
    if diff:
        raise TmlnError(f"cannot resume: the checkpoint was made with other settings "
                        f"({', '.join(f'{k}={saved[k]!r}, now {config[k]!r}' for k in diff)}); "
                        "use another output folder or resume=False (--no-resume)", path)
    if model is not None:
        try:
            unwrap(model).load_state_dict(state["model"])
        except RuntimeError as exc:
            raise TmlnError(f"cannot resume: the checkpoint's weights do not fit this model ({state_dict_mismatch(exc)}); "
                            "use another output folder or resume=False (--no-resume)", path) from None
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"].cpu())
    return state


class BestTracker:
    """Keep the weights of the best epoch by a validation metric (higher is better unless
    ``mode="min"``), in memory and in ``path`` (safetensors) so a resumed run still knows them."""

    def __init__(self, path: str | Path, mode: str = "max", best: float | None = None):
        if mode not in ("max", "min"):
            raise ValueError("mode must be 'max' or 'min'")
        self.path = Path(path)
        self.mode = mode
        self.best = best
        self.best_epoch: int | None = None
        self.best_secondary: float | None = None
        self.state: dict | None = None

    def is_better(self, value: float, secondary: float | None = None) -> bool:
        """Better than the best so far; ties on ``value`` are broken by ``secondary`` (same direction,
        e.g. minus the validation loss)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return self.best is None
        if self.best is None or (isinstance(self.best, float) and math.isnan(self.best)):
            return True
        if value == self.best and secondary is not None and self.best_secondary is not None:
            return secondary > self.best_secondary if self.mode == "max" else secondary < self.best_secondary
        return value > self.best if self.mode == "max" else value < self.best

    def update(self, value: float, epoch: int, model: torch.nn.Module, secondary: float | None = None) -> bool:
        """Record ``model`` as best if ``value`` improves; returns whether it did."""
        if not self.is_better(value, secondary):
            return False
        self.best, self.best_epoch, self.best_secondary = value, epoch, secondary
        self.state = {k: v.detach().cpu().clone() for k, v in plain_state_dict(unwrap(model)).items()}
        if is_main_process():
            from safetensors.torch import save_file

            with atomic_path(self.path) as tmp:
                save_file({k: v.contiguous() for k, v in self.state.items()}, str(tmp),
                          metadata={"epoch": str(epoch), "metric": repr(value)})
        return True

    def load(self) -> dict | None:
        """The best weights (from memory, or from ``path`` after a resume)."""
        if self.state is None and self.path.is_file():
            from safetensors import safe_open
            from safetensors.torch import load_file

            self.state = load_file(str(self.path))
            with safe_open(str(self.path), "pt") as fh:
                meta = fh.metadata() or {}
            if "epoch" in meta:
                self.best_epoch = int(meta["epoch"])
        return self.state

    def save_model_dir(self, model_dir: str | Path, card, fallback_model: torch.nn.Module | None = None) -> Path | None:
        """Write the final model directory (rank 0) with the best weights (or ``fallback_model``'s)."""

        state = self.load()
        if state is None and fallback_model is not None:
            state = plain_state_dict(unwrap(fallback_model))
        if state is None:
            raise RuntimeError("no weights to save")
        if is_main_process():
            return save_model_dir(model_dir, state, card)
        return None


# ---------------------------------------------------------------------------- misc
def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in unwrap(model).parameters()))


def load_initial_weights(model, path) -> str:
    """Initialise ``model`` from a bundled model name, a model directory, a .safetensors file or a torch
    state dict (weights_only), to fine-tune it (``train tumour --init``, ``train nodes --init``).
    Tensors whose names or shapes differ (e.g. another classification head) are skipped; returns a note."""

    p = Path(path)
    if not p.exists():
        if str(path) in list_bundled():  # a bundled model by name
            p = resolve_model_dir(str(path))
        else:
            raise TmlnError(f"initial weights not found (neither a file, a model directory nor a bundled model: "
                            f"{', '.join(list_bundled())})", p)
    try:
        if p.is_dir():
            state = load_state_dict(p)
        elif p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                state = state["model"]
            elif isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
    except TmlnError:
        raise
    except Exception as exc:
        raise TmlnError(f"cannot read initial weights ({exc})", p) from None
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    own = model.state_dict()
    use = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not use:
        raise TmlnError("no tensor of the initial weights fits the architecture", p)
    model.load_state_dict(use, strict=False)
    skipped = len(own) - len(use)
    return f"{len(use)} of {len(own)} tensors loaded" + (f"; {skipped} kept at random init" if skipped else "")
