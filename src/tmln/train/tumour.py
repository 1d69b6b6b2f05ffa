"""Train the tumour patch classifier: ``train_tumour(out_dir, patches=... | slides=..., annotations=...)``.

One logit (tumour), BCE loss, AdamW with cosine decay, class-balanced sampling, augmentation on the
device (flips, 90° rotations, colour and HED jitter), optional Macenko normalisation (reference
estimated from training patches and stored in the card), optional hard-negative mining round.
AMP and channels-last on GPU; DDP under ``torchrun`` (NCCL on GPUs, gloo on CPU); resumes from
``OUT/train/last.pt``; best epoch by validation AUC; deterministic on CPU for a given seed.

Output: ``OUT/model.safetensors`` + ``OUT/model_card.json`` (written last, atomically) and
``OUT/train/`` (``log.csv``, ``last.pt``, ``best.safetensors``, ``split.csv``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tmln.atomic import write_csv
from tmln.errors import TmlnError
from tmln.evaluate.auc import threshold_metrics as metrics
from tmln.imaging import read_image
from tmln.models.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from tmln.models.classifier import build_classifier
from tmln.models.equivariant import SUPPORTED as EQUIVARIANT_ARCHS
from tmln.models.equivariant import D4ResNet
from tmln.stain import StainEstimationError, estimate, reference_from_images
from tmln.train import common
from tmln.train import patches as P
from tmln.train.augment import Augmenter
from tmln.train.loop import Hooks, LoopSettings, Trainer, Validation, averaging_record, kept_average, session

DEFAULT_LR = 1e-3
WEIGHT_DECAY = 1e-4
WEIGHT_TYING = ("D4 (4 rotations x 2 flips) group convolutions, Cohen & Welling 2016, as Veeling et al. 2018's p4m "
                "networks: 1/8 of the free parameters, output invariant to 90-degree turns and flips; shipped "
                "expanded as the equivalent plain network (tmln.models.equivariant)")


def train_tumour(  # public API: one keyword per option of `tmln train tumour` (the signature is most of its length)
    out_dir: str | Path,
    *,
    patches: str | Path | None = None,
    slides: str | Path | None = None,
    annotations: str | Path | None = None,
    epochs: int = 10,
    mpp: float = 0.5,
    patch_size: int = 224,
    arch: str = "resnet18",
    batch_size: int = 32,
    lr: float = DEFAULT_LR,
    weight_decay: float = WEIGHT_DECAY,
    seed: int = 0,
    init_checkpoint: str | Path | None = None,
    macenko: bool | str | Path = False,
    hard_negative: bool = False,
    device: str | None = "auto",
    resume: bool = True,
    val_fraction: float = 0.25,
    num_workers: int = 0,
    patches_mpp: float | None = None,
    groups: str | Path | None = None,
    patches_per_class: int = 200,
    hard_negative_epoch: int | None = None,
    amp: bool = True,
    quiet: bool = False,
    val_patches: str | Path | None = None,
    colour: float = 0.1,
    hed: float = 0.03,
    label_region: str | None = None,
    progress: bool | None = None,
    keep: str = "best",
    average_epochs: int = 0,
    equivariant: bool = False,
):
    """Train and write a model directory; returns its ``ModelCard``.

    patches : patch folder (``tumor/``, ``normal/``); images at ``patches_mpp`` µm/px (default:
        already at ``mpp``); ``groups`` a CSV mapping images to patients/source slides.
    slides, annotations : slides table + annotation folder (see ``tmln.train.patches``).
    mpp, patch_size : the model's input (µm/px, px).
    macenko : False, True (reference from the training patches) or a path to a reference image.
    hard_negative : after ``hard_negative_epoch`` (default ``epochs // 2``, at least 1) epochs,
        score the normal candidates and oversample the highest-scoring ones (slides: a reserve pool
        3x the normal patches is scored and its hardest members are added).
    resume : continue from ``OUT/train/last.pt`` when present (same settings required).
    val_patches : a patch folder (same classes as ``patches``) used as the validation set instead
        of a split of ``patches`` (``val_fraction`` is then ignored). Use it when the patches carry
        no slide or patient id (PCam), so that no slide lands on both sides.
    lr, weight_decay : AdamW's learning rate (cosine decay over the epochs) and decoupled weight decay.
    colour, hed : augmentation strengths (``tmln.train.augment.Augmenter``).
    label_region : what a patch's label refers to, recorded in the card (e.g. ``"centre 32x32 px"``
        for PCam: tumour in the centre 32 x 32 px of the 96 px patch); default: the whole patch.
    keep : ``"best"`` (the epoch of highest validation AUC) or ``"last"`` (the last epoch: the
        validation set then chooses only the threshold, so its AUC is an honest held-out figure).
    average_epochs : > 0: stochastic weight averaging; the mean of the weights after each of the last
        ``average_epochs`` epochs, with BatchNorm statistics recomputed on the training patches, is
        validated as one more candidate (with ``keep="last"`` it is the model kept).
    equivariant : D4 weight tying (``tmln.models.equivariant``): the network is trained as a rotation-
        and flip-equivariant group-convolution ResNet (``arch`` resnet18 or resnet34, random init) and
        shipped as the equivalent plain ResNet, which every engine runs unchanged.
    progress : a progress bar per epoch (patches/s, ETA, running loss); default: unless ``quiet``.
    AMP: bf16 on GPUs that support it and on CPUs that run bf16 natively (AVX512-BF16 / AMX).
    """
    if (patches is None) == (slides is None):
        raise TmlnError("give either a patch folder (patches=) or a slides table (slides=) with annotations=")
    if keep not in ("best", "last"):
        raise TmlnError(f"keep must be 'best' or 'last', got {keep!r}")
    if val_patches is not None and patches is None:
        raise TmlnError("val_patches= (a validation patch folder) goes with patches=, not with slides=")
    if slides is not None and annotations is None:
        raise TmlnError("slides= needs annotations= (the annotation folder)")
    if (epochs < 1 or batch_size < 2 or patch_size < 8 or not mpp > 0 or not weight_decay >= 0
            or not 0 <= average_epochs <= epochs):
        raise TmlnError(f"bad settings: epochs={epochs} (>= 1), batch_size={batch_size} (>= 2), "
                        f"patch_size={patch_size} (>= 8), mpp={mpp} (> 0), weight_decay={weight_decay} (>= 0), "
                        f"average_epochs={average_epochs} (0 to epochs)")
    if equivariant and arch not in EQUIVARIANT_ARCHS:
        raise TmlnError(f"equivariant training (D4 weight tying) supports {', '.join(EQUIVARIANT_ARCHS)}, not {arch!r}")
    if equivariant and init_checkpoint is not None:
        raise TmlnError("equivariant training starts from random weights: a plain network's weights cannot be "
                        "tied (fine-tune the shipped plain network without equivariant instead)")
    show = (not quiet) if progress is None else bool(progress)
    t_start = time.time()
    with session(device, seed) as ctx:  # deterministic kernels on CPU
        # ---- data (rank 0 collects, everyone receives the same records)
        if patches is not None:
            patch_set = _on_main(ctx, lambda: P.collect_patch_folder(
                patches, groups_csv=groups, source_mpp=patches_mpp, progress=show and ctx.is_main,
                val_folder=val_patches))
        else:
            patch_set = _on_main(ctx, lambda: P.collect_slides(
                slides, annotations, mpp, patch_size, patches_per_class=patches_per_class,
                negative_pool_factor=4 if hard_negative else 1, seed=seed))
        train_idx, val_idx, reserve_idx = _split(patch_set, val_patches is not None, val_fraction, seed)
        stain_ref = None
        if macenko:
            stain_ref = _on_main(ctx, lambda: _stain_reference(macenko, patch_set, train_idx, mpp, patch_size, seed))

        # ---- model, optimiser, the card's fixed part
        model = D4ResNet(arch, 1) if equivariant else build_classifier(arch, 1)
        init_note = None if init_checkpoint is None else common.load_initial_weights(model, init_checkpoint)
        model = common.prepare_model(model, ctx)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=float(weight_decay))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        aug = Augmenter(flips=True, rot90=True, colour=float(colour), hed=float(hed))
        hn_epoch = max(1, epochs // 2) if hard_negative_epoch is None else int(hard_negative_epoch)
        card = ModelCard(
            task="tumour-classifier", architecture=arch, mpp=float(mpp), patch_size=int(patch_size),
            classes=list(P.CLASSES), threshold=0.5,
            normalisation={"mean": list(_norm_mean()), "std": list(_norm_std()), "stain": stain_ref},
            params={"num_outputs": 1, "output": "sigmoid(logit) = P(tumour)"},
            training={  # completed by _TumourHooks.card ("data" first, the run's facts last)
                "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
                "optimizer": f"AdamW(weight_decay={float(weight_decay):g}), cosine decay", "loss": "BCEWithLogits",
                "seed": int(seed), "val_fraction": None if val_patches is not None else float(val_fraction),
                "split": ("the validation folder val_patches (no split of the training patches)" if val_patches is not None
                          else "patient-level (StratifiedGroupKFold fold)"),
                "label_region": label_region or "the whole patch",
                "class_balance": "weighted sampling (equal class totals)",
                "augmentation": {"flips": True, "rot90": True, "colour": aug.colour, "hed": aug.hed},
                "macenko": bool(macenko),
                "hard_negative_mining": {"enabled": bool(hard_negative), "after_epoch": hn_epoch if hard_negative else None},
                "init_checkpoint": None if init_checkpoint is None else str(init_checkpoint), "init_note": init_note,
                "weight_averaging": averaging_record(average_epochs),
                "weight_tying": WEIGHT_TYING if equivariant else None,
            },
        )
        hooks = _TumourHooks(ctx, model, scheduler, card, patch_set, train_idx, val_idx, reserve_idx,
                             epochs=epochs, batch_size=batch_size, num_workers=num_workers, seed=seed, keep=keep,
                             mine_after=hn_epoch if hard_negative else None, aug=aug, t_start=t_start)
        config = {"arch": arch, "mpp": float(mpp), "patch_size": int(patch_size), "macenko": bool(macenko),
                  "source": str(patches if patches is not None else slides),
                  "val_source": None if val_patches is None else str(val_patches), "keep": keep,
                  "equivariant": bool(equivariant)}  # must match to resume
        trainer = Trainer(ctx, model, optimizer, scheduler, common.Amp(ctx.device, enabled=amp, cpu_bf16=True),
                          out_dir, LoopSettings(epochs=epochs, seed=seed, resume=resume, quiet=quiet, progress=show,
                                       average_last=int(average_epochs)),
                          config)
        return trainer.fit(hooks)


def _split(patch_set: P.PatchSet, val_folder: bool, val_fraction: float, seed: int):
    """(train, validation, reserve) indices into ``patch_set.records``: the validation folder's
    patches, or a patient-level split of the main patches; reserve patches (hard-negative candidates)
    of validation patients are dropped."""
    main_idx, reserve_idx = P.split_reserve(patch_set.records)
    labels_all = patch_set.labels()
    groups_all = patch_set.groups()
    if val_folder:  # an explicit validation folder: no split of the training patches
        is_val = np.array([r.split == "validation" for r in patch_set.records])
        train_idx = np.nonzero(~is_val)[0]
        val_idx = np.nonzero(is_val)[0]
    else:
        tr_rel, va_rel = P.group_split(labels_all[main_idx], groups_all[main_idx], val_fraction, seed)
        train_idx = np.asarray(main_idx)[tr_rel]
        val_idx = np.asarray(main_idx)[va_rel]
    val_groups = set(groups_all[val_idx].tolist())
    reserve_idx = np.asarray([i for i in reserve_idx if groups_all[i] not in val_groups], dtype=np.int64)
    return train_idx, val_idx, reserve_idx


@dataclass
class _TumourHooks(Hooks):
    """The tumour classifier's part of the training loop: class-balanced sampling, augmentation on
    the device, BCE on the one logit, validation AUC, the hard-negative round, the card's metrics
    (threshold by Youden's J on the best epoch's validation scores)."""

    ctx: common.DistContext
    model: torch.nn.Module
    scheduler: Any
    card_template: ModelCard  # everything but the data summary, the run's facts, threshold and metrics
    patch_set: P.PatchSet
    train_idx: np.ndarray
    val_idx: np.ndarray
    reserve_idx: np.ndarray
    epochs: int
    batch_size: int
    num_workers: int
    seed: int
    keep: str
    mine_after: int | None  # mine hard negatives after this many epochs; None: never
    aug: Augmenter
    t_start: float
    unit = "patch"

    def __post_init__(self):
        c = self.card_template
        self.mpp, self.patch_size, self.stain = c.mpp, c.patch_size, c.normalisation["stain"]
        self.weights = P.balance_weights(self.patch_set.labels()[self.train_idx])
        self.hn_done = False
        self.best_val = None  # (scores, labels) of the best epoch's validation
        self.mean = torch.tensor(_norm_mean(), device=self.ctx.device).view(1, 3, 1, 1)
        self.std = torch.tensor(_norm_std(), device=self.ctx.device).view(1, 3, 1, 1)
        self.val_ds = P.PatchDataset(self.patch_set, self.val_idx, self.mpp, self.patch_size, train=False,
                                     stain=self.stain)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()

    def on_epoch_start(self, epoch):
        if self.mine_after is not None and not self.hn_done and epoch >= self.mine_after:
            self.train_idx, self.weights = self._mine_hard_negatives()
            self.hn_done = True

    def batches(self, epoch):
        train_ds = P.PatchDataset(self.patch_set, self.train_idx, self.mpp, self.patch_size, train=True,
                                  stain=self.stain, seed=self.seed)
        train_ds.epoch = epoch
        sampler = common.DistributedWeightedSampler(self.weights, len(self.train_idx), seed=self.seed)
        sampler.set_epoch(epoch)
        per_rank, bs = len(sampler), self.batch_size
        loader = torch.utils.data.DataLoader(
            train_ds, batch_size=min(bs, per_rank), sampler=sampler, num_workers=self.num_workers,
            drop_last=per_rank > bs and per_rank % bs == 1,  # no batch of one (BatchNorm)
            worker_init_fn=common.worker_init_fn, persistent_workers=False,
            pin_memory=self.ctx.device.type == "cuda")
        return loader, per_rank

    def inputs(self, batch, generator):
        xb, yb = batch
        x = xb.to(self.ctx.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        x = self.aug(x, generator=generator)
        return self._normalise(x), yb.to(self.ctx.device, dtype=torch.float32)

    def _normalise(self, x):
        return common.to_device_batch((x - self.mean) / self.std, self.ctx.device)

    def loss(self, output, target):
        return self.loss_fn(output[:, 0].float(), target)

    def validate(self, epoch, train_loss):
        if not len(self.val_idx):  # no validation: the lowest training loss
            result = Validation(-train_loss)
        else:  # sharded over ranks, gathered
            scores, labels = self._predict(self.val_ds)
            vm = validation_metrics(labels, scores)
            result = Validation(vm["auc"], -vm["loss"], {f"val_{k}": v for k, v in vm.items()}, (scores, labels))
            if math.isnan(result.metric):  # one class in validation: rank by validation loss
                result.metric, result.secondary = -vm["loss"], None
        if self.keep == "last":  # every epoch replaces the kept weights
            result.metric, result.secondary = float(epoch), None
        return result

    def record(self, epoch, train_loss, lr, validation, improved):
        if improved and validation.detail is not None:
            self.best_val = validation.detail
        return {**super().record(epoch, train_loss, lr, validation, improved), "best": int(improved)}

    def state(self):
        extra = {"train_idx": torch.as_tensor(self.train_idx), "weights": torch.as_tensor(self.weights),
                 "hn_done": self.hn_done}
        if self.best_val is not None:
            extra["best_val_scores"] = torch.as_tensor(self.best_val[0])
            extra["best_val_labels"] = torch.as_tensor(self.best_val[1])
        return extra

    def restore(self, extra):
        if "train_idx" in extra:
            self.train_idx = extra["train_idx"].numpy()
            self.weights = extra["weights"].numpy()
        self.hn_done = bool(extra.get("hn_done", False))
        if "best_val_scores" in extra:
            self.best_val = (extra["best_val_scores"].numpy(), extra["best_val_labels"].numpy())

    def card(self, trainer):
        threshold, metrics = 0.5, {}
        if self.best_val is not None:
            scores, labels = self.best_val
            metrics = validation_metrics(labels, scores)
            threshold = youden_threshold(labels, scores)
            metrics["threshold_rule"] = "youden" if threshold != 0.5 else "default 0.5"
            metrics.update({f"at_threshold_{k}": v for k, v in threshold_metrics(labels, scores, threshold).items()})
        metrics["best_epoch"] = trainer.tracker.best_epoch
        metrics["kept"] = (f"mean of the weights of the last {trainer.settings.average_last} epochs (batch-norm "
                           "statistics recomputed)" if kept_average(trainer, self)
                           else "last epoch" if self.keep == "last" else "best epoch by validation AUC")
        card = self.card_template
        card.threshold = float(threshold)
        card.training = {
            "data": P.summarise(self.patch_set, self.train_idx, self.val_idx),
            **card.training,
            "world_size": self.ctx.world_size,
            "device": self.ctx.device.type,
            "amp": trainer.amp.enabled and str(trainer.amp.dtype).replace("torch.", ""),
            "wall_seconds": round(time.time() - self.t_start, 1),
            "hardware": common.hardware_description(self.ctx.device),
        }
        card.metrics = _clean(metrics)
        if self.ctx.is_main:
            _write_split(trainer.work / "split.csv", self.patch_set, self.train_idx, self.val_idx)
        return card

    def _predict(self, dataset):
        """Tumour probabilities for ``dataset`` (sharded over ranks and gathered, dataset order)."""
        shard = common.shard_indices(len(dataset))
        sub = torch.utils.data.Subset(dataset, shard.tolist())
        loader = torch.utils.data.DataLoader(sub, batch_size=self.batch_size, shuffle=False,
                                             num_workers=self.num_workers, worker_init_fn=common.worker_init_fn)
        module = common.unwrap(self.model)
        was_training = module.training
        module.eval()
        out, labs = [], []
        with torch.inference_mode():
            for xb, yb in loader:
                x = xb.to(self.ctx.device).permute(0, 3, 1, 2).float().div_(255.0)
                out.append(torch.sigmoid(module(self._normalise(x))[:, 0].float()).cpu().numpy())
                labs.append(yb.numpy())
        module.train(was_training)
        p = np.concatenate(out) if out else np.zeros(0, np.float32)
        y = np.concatenate(labs) if labs else np.zeros(0, np.int64)
        allp, ally, alli = common.gather_arrays(p, y, shard)
        order = np.argsort(alli, kind="stable")
        return allp[order].astype(np.float64), ally[order]

    def _mine_hard_negatives(self):
        """Score the normal candidates; returns (new train indices, new sampling weights)."""
        labels = self.patch_set.labels()
        train_idx = np.asarray(self.train_idx)
        if len(self.reserve_idx):
            pool = np.asarray(self.reserve_idx)
            scores, _ = self._predict(self._eval_dataset(pool))
            n_neg = int((labels[train_idx] == 0).sum())
            k = min(len(pool), max(1, n_neg // 2))
            hardest = pool[np.argsort(-scores, kind="stable")[:k]]
            train_idx = np.concatenate([train_idx, hardest])
            common.main_print(f"hard negatives: added {k} of {len(pool)} reserve normal patches "
                              f"(tumour probability >= {np.sort(scores)[::-1][k - 1]:.3f})")
        neg_scores = np.zeros(len(train_idx))
        neg_pos = np.nonzero(labels[train_idx] == 0)[0]
        scores, _ = self._predict(self._eval_dataset(train_idx[neg_pos]))
        neg_scores[neg_pos] = scores
        return train_idx, P.hard_negative_weights(labels[train_idx], neg_scores)

    def _eval_dataset(self, indices):
        return P.PatchDataset(self.patch_set, indices, self.mpp, self.patch_size, train=False, stain=self.stain)


# ---------------------------------------------------------------------------- helpers
def _on_main(ctx, fn):
    """Run ``fn`` on rank 0 and broadcast its result; a ``TmlnError`` there is raised on every rank
    (so bad input ends all processes instead of leaving them waiting)."""
    out = None
    if ctx.is_main:
        try:
            out = fn()
        except TmlnError as err:
            out = err
    out = common.broadcast_object(out)
    if isinstance(out, TmlnError):
        raise out
    return out


def _norm_mean():
    return tuple(IMAGENET_MEAN)


def _norm_std():
    return tuple(IMAGENET_STD)


def _clean(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def validation_metrics(labels, scores) -> dict:
    """AUC (sklearn ``roc_auc_score``; NaN with one class), accuracy at 0.5, BCE loss, counts."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else float("nan")
    return {
        "auc": auc,
        "accuracy": float(((p >= 0.5) == (y == 1)).mean()) if y.size else float("nan"),
        "loss": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if y.size else float("nan"),
        "n": int(y.size),
        "n_tumour": int((y == 1).sum()),
        "n_normal": int((y == 0).sum()),
    }


def youden_threshold(labels, scores) -> float:
    """The probability threshold maximising sensitivity + specificity - 1 (0.5 with one class)."""
    from sklearn.metrics import roc_curve

    y = np.asarray(labels)
    if np.unique(y).size < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, np.asarray(scores, dtype=np.float64))
    j = tpr - fpr
    best = int(np.argmax(j))
    t = float(thr[best])
    return float(min(max(t, 0.0), 1.0)) if math.isfinite(t) else 0.5


def threshold_metrics(labels, scores, threshold: float) -> dict:
    """Validation sensitivity and specificity at the card's threshold (``tmln.evaluate.auc``)."""

    m = metrics(labels, scores, threshold)
    return {"sensitivity": m["sensitivity"], "specificity": m["specificity"]}


def _stain_reference(macenko, patch_set, train_idx, mpp, patch_size, seed) -> dict:
    if isinstance(macenko, (str, Path)) and not isinstance(macenko, bool):
        try:
            return estimate(read_image(macenko))
        except StainEstimationError as err:
            raise TmlnError(f"cannot estimate a Macenko reference from this image ({err.message})", macenko) from None
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train_idx), min(64, len(train_idx)), replace=False)
    ds = P.PatchDataset(patch_set, np.asarray(train_idx)[pick], mpp, patch_size, train=False, stain=None)
    imgs = [ds.read(i) for i in range(len(ds))]
    ds.close()
    try:
        return reference_from_images(imgs, seed=seed)
    except StainEstimationError as err:
        raise TmlnError(f"cannot estimate a Macenko reference from the training patches ({err.message}); "
                        "give --macenko-reference IMAGE or train without --macenko") from None


def _write_split(path: Path, patch_set, train_idx, val_idx) -> None:
    import pandas as pd

    rows = []
    for part, idx in (("train", train_idx), ("validation", val_idx)):
        for i in idx:
            r = patch_set.records[int(i)]
            src = r.source if isinstance(r.source, str) else patch_set.slides[int(r.source)].path
            rows.append({"split": part, "source": src, "label": r.label, "group": r.group,
                         "x_px": round(r.x, 2), "y_px": round(r.y, 2)})
    write_csv(path, pd.DataFrame(rows))
