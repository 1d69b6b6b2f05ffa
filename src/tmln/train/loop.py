"""One training loop for both models: ``Trainer(...).fit(hooks)``.

The loop owns what every training run repeats: resuming from ``OUT/train/<checkpoint>``, the epochs
(progress bar with running loss and items/s, autocast forward, backward and optimiser step, the
scheduler step), the training loss averaged over DDP ranks, best-epoch tracking
(``OUT/train/best.safetensors``), the per-epoch log row and printed line, the checkpoint after each
epoch, and at the end the model directory. ``session`` around it chooses the device, joins the
process group under ``torchrun``, seeds, and leaves the group again.

What differs between the models is in a ``Hooks`` subclass (``tmln.train.tumour``,
``tmln.train.nodes``). Each epoch the loop calls, in this order::

    on_epoch_start(epoch)                 e.g. hard-negative mining
    batches(epoch) -> (loader, n)         this rank's batches and how many items they hold
    inputs(batch, generator) -> (x, y)    on the device, augmented (outside autocast)
        model(x) under autocast, then loss(output, y) -> scalar tensor, backward, step
    validate(epoch, train_loss) -> Validation(metric, secondary, columns, detail)
    record(epoch, train_loss, lr, validation, improved) -> the log row (the loop adds "seconds")
    epoch_line(row, validation, improved) -> the printed line
    state() -> the hooks' part of the checkpoint saved after the epoch

``restore(extra)`` takes that state back when a run resumes; ``card(trainer)`` returns the model
card once the epochs are done, and the loop writes the model directory with the best weights.

Weight averaging (``LoopSettings.average_last = K``, stochastic weight averaging as in Izmailov et al.
2018): the loop also keeps the mean of the weights at the end of each of the last K epochs. After the
last epoch that mean is loaded into the model, its BatchNorm statistics are recomputed over one more
pass of augmented training batches (``batches`` and ``inputs``, numbered epoch ``epochs``), and it is
validated and offered to the best-epoch tracker as one more "epoch" (numbered ``epochs``), logged with
``averaged_epochs = K``. Averaging changes nothing in the training itself.
Epochs are 0-based here; the log and the best-epoch record number them from ``Hooks.first_epoch``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from tmln.errors import TmlnError
from tmln.models.card import ModelCard
from tmln.train import common


@contextlib.contextmanager
def session(device: str | None, seed: int, deterministic: bool | None = None) -> Iterator[common.DistContext]:
    """The device and process group of one training run, seeded: ``with session(...) as ctx``.

    deterministic : deterministic kernels (``common.seed_everything``); None: on CPU only.
    The process group is left at the end (also on an error) if this run joined it."""
    ctx = common.init_distributed(device)
    try:
        common.seed_everything(seed, deterministic=ctx.device.type == "cpu" if deterministic is None else deterministic)
        yield ctx
    finally:
        if ctx.owns_group:
            common.cleanup_distributed()


@dataclass
class Validation:
    """What validation makes of one epoch: ``metric`` chooses the best epoch (higher is better),
    ``secondary`` breaks ties, ``columns`` go into the log, ``detail`` is for the hooks' own use."""

    metric: float
    secondary: float | None = None
    columns: dict = field(default_factory=dict)
    detail: Any = None


class Hooks:
    """The model-specific parts of a training run (see the module docstring for the order)."""

    first_epoch = 0  # the number of the first epoch in the log and in the card's best epoch
    mean_of_batches = False  # train_loss: mean of the batch losses (else of the items), averaged over ranks
    unit = "item"  # what the progress bar counts

    def on_epoch_start(self, epoch: int) -> None:
        """Before the epoch's batches are made."""

    def batches(self, epoch: int) -> tuple[Iterable, int]:
        """This rank's batches for ``epoch`` and how many items they hold (the progress bar's total)."""
        raise NotImplementedError

    def inputs(self, batch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's input and the loss's target on the device, augmented with ``generator``
        (seeded per epoch and rank)."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch's loss (a scalar) from the model's output, computed outside autocast."""
        raise NotImplementedError

    def validate(self, epoch: int, train_loss: float) -> Validation:
        """Validation after the epoch's optimiser and scheduler steps (collective under DDP)."""
        raise NotImplementedError

    def record(self, epoch: int, train_loss: float, lr: float, validation: Validation, improved: bool) -> dict:
        """The epoch's log row (without ``seconds``); ``epoch`` is already numbered from ``first_epoch``."""
        return {"epoch": epoch, "train_loss": train_loss, "lr": lr, **validation.columns}

    def epoch_line(self, row: dict, validation: Validation, improved: bool) -> str:
        """The line printed after each epoch (rank 0, unless quiet)."""
        return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())

    def state(self) -> dict:
        """The hooks' part of the checkpoint (tensors and plain values only)."""
        return {}

    def restore(self, extra: dict) -> None:
        """Take back what ``state`` saved (``extra`` holds the whole checkpoint's extras)."""

    def card(self, trainer: Trainer) -> ModelCard:
        """The finished model's card (metrics, training record); may write extra files to ``trainer.work``."""
        raise NotImplementedError


def averaging_record(average_last: int) -> dict | None:
    """The card's ``training.weight_averaging`` for ``LoopSettings.average_last`` (None: off)."""
    if not average_last:
        return None
    return {"last_epochs": int(average_last), "batchnorm": "recomputed over one pass of augmented training batches"}


def kept_average(trainer: Trainer, hooks: Hooks) -> bool:
    """Whether the weights the tracker kept are the averaged ones (numbered one past the last epoch)."""
    k = trainer.settings.average_last
    return bool(k) and trainer.tracker.best_epoch == trainer.settings.epochs + hooks.first_epoch


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs and where it writes (file names inside ``OUT/train``)."""

    epochs: int
    seed: int
    resume: bool = True
    quiet: bool = False
    progress: bool = False  # a bar per epoch on rank 0
    checkpoint: str = "last.pt"
    log: str = "log.csv"
    best: str = "best.safetensors"
    tensorboard: bool = True  # TensorBoard scalars beside the CSV log when tensorboard is installed
    average_last: int = 0  # > 0: also offer the mean of the last K epochs' weights (see the module docstring)


class Trainer:
    """Runs the epochs of one model (already on its device, wrapped in DDP if distributed) with
    ``optimizer``, ``scheduler`` (stepped once per epoch) and ``amp``, and writes ``out_dir``.
    ``config`` holds the settings a checkpoint must share to be resumed from."""

    def __init__(self, ctx: common.DistContext, model: torch.nn.Module, optimizer, scheduler, amp: common.Amp,
                 out_dir: str | Path, settings: LoopSettings, config: dict):
        self.ctx, self.model, self.optimizer, self.scheduler, self.amp = ctx, model, optimizer, scheduler, amp
        self.out_dir = Path(out_dir)
        self.work = self.out_dir / "train"
        self.settings = settings
        self.config = config
        self.tracker = common.BestTracker(self.work / settings.best, mode="max")
        self.start_epoch = 0
        self.resumed_seconds = 0.0  # the logged epoch times of earlier (resumed) runs
        k = int(settings.average_last)
        if not 0 <= k <= settings.epochs:
            raise TmlnError(f"cannot average the weights of the last {k} epochs of {settings.epochs}")
        self.averaged = (torch.optim.swa_utils.AveragedModel(common.unwrap(model), use_buffers=False)
                         if k else None)

    @property
    def checkpoint_path(self) -> Path:
        return self.work / self.settings.checkpoint

    def fit(self, hooks: Hooks) -> ModelCard:
        """Resume if asked and possible, train the remaining epochs, write the model directory;
        returns its card."""
        self._resume(hooks)
        logger = common.CSVLogger(self.work / self.settings.log, start_epoch=self.start_epoch + hooks.first_epoch,
                                  tensorboard=self.settings.tensorboard)
        self.resumed_seconds = sum(float(r.get("seconds") or 0) for r in logger.rows)
        for epoch in range(self.start_epoch, self.settings.epochs):
            self._epoch(hooks, epoch, logger)
        if self.averaged is not None:
            self._offer_average(hooks, logger)
        logger.close()
        card = hooks.card(self)
        common.barrier()
        self.tracker.save_model_dir(self.out_dir, card, fallback_model=self.model)
        common.barrier()
        return card

    def _resume(self, hooks: Hooks) -> None:
        path = self.checkpoint_path
        if not (self.settings.resume and path.is_file()):
            if self.ctx.is_main and path.exists():  # a stale checkpoint of an earlier run
                path.unlink()
            return
        state = common.load_checkpoint(path, self.model, self.optimizer, self.scheduler, map_location="cpu",
                                       config=self.config)
        extra = state.get("extra", {})
        self.amp.load_state_dict(extra.get("amp") or {})
        self.start_epoch = int(state["epoch"])
        if self.averaged is not None:
            k_saved = extra.get("average_last")
            if "averaged" in extra and k_saved == self.settings.average_last:
                self.averaged.load_state_dict(extra["averaged"])
            elif "averaged" in extra and int(extra["averaged"]["n_averaged"]) > 0:
                raise TmlnError(f"cannot resume with weight averaging over the last {self.settings.average_last} "
                                f"epochs: the checkpoint holds the mean of the last {k_saved}", path)
            elif self.start_epoch > self._average_from:
                raise TmlnError(f"cannot resume with weight averaging over the last {self.settings.average_last} "
                                f"epochs: the checkpoint is after epoch {self.start_epoch} and holds no average", path)
        self.tracker.best = state.get("best_metric")
        self.tracker.best_secondary = extra.get("best_secondary")
        self.tracker.best_epoch = extra.get("best_epoch")
        self.tracker.load()
        hooks.restore(extra)
        self._stretch_schedule()
        common.main_print(f"resuming after epoch {self.start_epoch}", self.settings.quiet)

    def _stretch_schedule(self) -> None:
        """A resumed run that asks for more (or fewer) epochs than its checkpoint's: the cosine schedule
        is set to the new length at the epoch reached, as if the run had been started with it. (The
        scheduler's recursive update alone would continue from the old schedule's rate: 0 after a
        finished run, so that every further epoch trained at learning rate 0.)"""
        s = self.scheduler
        if not isinstance(s, torch.optim.lr_scheduler.CosineAnnealingLR) or s.T_max == self.settings.epochs:
            return
        s.T_max = max(1, self.settings.epochs)
        for group, base in zip(self.optimizer.param_groups, s.base_lrs):
            group["lr"] = s.eta_min + (base - s.eta_min) * (1 + math.cos(math.pi * s.last_epoch / s.T_max)) / 2
        s._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _epoch(self, hooks: Hooks, epoch: int, logger: common.CSVLogger) -> None:
        t0 = time.time()
        hooks.on_epoch_start(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        sums = self._train(hooks, epoch)
        self.scheduler.step()
        train_loss = self._reduce(hooks, *sums)
        self._validate_and_log(hooks, epoch, train_loss, lr, t0, logger)  # before the checkpoint: a resume trims the log
        extra = {"config": self.config, "amp": self.amp.state_dict(), "best_epoch": self.tracker.best_epoch,
                 "best_secondary": self.tracker.best_secondary, **hooks.state()}
        if self.averaged is not None and epoch >= self._average_from:
            self.averaged.update_parameters(common.unwrap(self.model))
        if self.averaged is not None:
            extra["averaged"] = self.averaged.state_dict()
            extra["average_last"] = int(self.settings.average_last)
        common.save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.scheduler, epoch + 1,
                               self.tracker.best, extra)
        common.barrier()

    def _offer_average(self, hooks: Hooks, logger: common.CSVLogger) -> None:
        """Load the averaged weights, recompute BatchNorm statistics, validate them and offer them to
        the tracker as epoch ``epochs`` (the model keeps the averaged weights afterwards)."""
        t0 = time.time()
        epoch = self.settings.epochs
        module = common.unwrap(self.model)
        module.load_state_dict(self.averaged.module.state_dict())
        self._recompute_batchnorm(hooks, epoch)
        self._validate_and_log(hooks, epoch, float("nan"), float("nan"), t0, logger,
                               averaged_epochs=int(self.settings.average_last))

    def _validate_and_log(self, hooks: Hooks, epoch: int, train_loss: float, lr: float, t0: float,
                          logger: common.CSVLogger, **columns) -> None:
        """Validate the model as ``epoch`` (0-based), offer it to the tracker, log its row (with
        ``columns`` and the seconds since ``t0``) and print its line."""
        validation = hooks.validate(epoch, train_loss)
        number = epoch + hooks.first_epoch
        improved = self.tracker.update(validation.metric, number, self.model, validation.secondary)
        row = {**hooks.record(number, train_loss, lr, validation, improved), **columns}
        row["seconds"] = round(time.time() - t0, 3)
        logger.log(row)
        common.main_print(hooks.epoch_line(row, validation, improved), self.settings.quiet)

    @property
    def _average_from(self) -> int:
        """The first (0-based) epoch whose weights go into the average."""
        return self.settings.epochs - self.settings.average_last

    @torch.no_grad()
    def _recompute_batchnorm(self, hooks: Hooks, epoch: int) -> None:
        """BatchNorm running statistics as the plain mean over one pass of ``epoch``'s training
        batches (in float32, without autocast), averaged over ranks."""
        module = common.unwrap(self.model)
        norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
        was_training = module.training
        module.train()
        loader, n_items = hooks.batches(epoch)
        generator = self._generator(epoch)
        bar = common.progress_bar(n_items, "batch-norm statistics", hooks.unit,
                                  self.settings.progress and self.ctx.is_main)
        for batch in loader:
            x, y = hooks.inputs(batch, generator)
            module(x.float())
            bar.update(len(y))
        bar.close()
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            if self.ctx.distributed:
                for buf in (m.running_mean, m.running_var):
                    torch.distributed.all_reduce(buf)
                    buf.div_(self.ctx.world_size)
        module.train(was_training)

    def _generator(self, epoch: int) -> torch.Generator:
        """The augmentation generator of ``epoch`` on this rank."""
        return torch.Generator().manual_seed(int(self.settings.seed) * 1_000_003 + epoch * 7919 + self.ctx.rank)

    def _train(self, hooks: Hooks, epoch: int) -> tuple[float, int, list[float]]:
        """One pass over this rank's batches: (sum of item losses, items, batch losses)."""
        loader, n_items = hooks.batches(epoch)
        s = self.settings
        generator = self._generator(epoch)
        self.model.train()
        loss_sum, n_seen, batch_losses = 0.0, 0, []
        bar = common.progress_bar(n_items, f"epoch {epoch + 1}/{s.epochs}", hooks.unit, s.progress and self.ctx.is_main)
        for batch in loader:
            x, y = hooks.inputs(batch, generator)
            with self.amp.autocast():
                output = self.model(x)
            loss = hooks.loss(output, y)
            self.amp.step(loss, self.optimizer)
            value = float(loss.detach())
            batch_losses.append(value)
            loss_sum += value * len(y)
            n_seen += len(y)
            bar.update(len(y))
            bar.set_postfix(loss=f"{loss_sum / n_seen:.4f}", refresh=False)
        bar.refresh()  # the epoch's final rate and loss, however short the epoch
        bar.close()
        return loss_sum, n_seen, batch_losses

    def _reduce(self, hooks: Hooks, loss_sum: float, n_seen: int, batch_losses: list[float]) -> float:
        """The epoch's training loss over all ranks."""
        if hooks.mean_of_batches:
            return common.all_reduce_mean(float(np.mean(batch_losses)) if batch_losses else float("nan"))
        device = self.ctx.device if self.ctx.device.type == "cuda" else None
        total, n = common.all_reduce_sum([loss_sum, float(n_seen)], device)
        return total / max(n, 1)

