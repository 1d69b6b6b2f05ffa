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

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from tmln.atomic import write_csv
from tmln.errors import TmlnError
from tmln.evaluate.auc import threshold_metrics as metrics
from tmln.imaging import read_image
from tmln.models.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from tmln.models.classifier import build_classifier
from tmln.stain import StainEstimationError, estimate, reference_from_images
from tmln.train import common
from tmln.train import patches as P
from tmln.train.augment import Augmenter

log = logging.getLogger("tmln.train")

DEFAULT_LR = 1e-3
WEIGHT_DECAY = 1e-4
CONFIG_KEYS = ("arch", "mpp", "patch_size", "macenko", "source", "val_source", "keep")  # must match to resume


def train_tumour(
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
    colour, hed : augmentation strengths (``tmln.train.augment.Augmenter``).
    label_region : what a patch's label refers to, recorded in the card (e.g. ``"centre 32x32 px"``
        for PCam: tumour in the centre 32 x 32 px of the 96 px patch); default: the whole patch.
    keep : ``"best"`` (the epoch of highest validation AUC) or ``"last"`` (the last epoch: the
        validation set then chooses only the threshold, so its AUC is an honest held-out figure).
    progress : a progress bar per epoch (patches/s, ETA, running loss); default: unless ``quiet``.
    AMP: bf16 on GPUs that support it and on CPUs that run bf16 natively (AVX512-BF16 / AMX).
    """
    import torch

    if (patches is None) == (slides is None):
        raise TmlnError("give either a patch folder (patches=) or a slides table (slides=) with annotations=")
    if keep not in ("best", "last"):
        raise TmlnError(f"keep must be 'best' or 'last', got {keep!r}")
    if val_patches is not None and patches is None:
        raise TmlnError("val_patches= (a validation patch folder) goes with patches=, not with slides=")
    if slides is not None and annotations is None:
        raise TmlnError("slides= needs annotations= (the annotation folder)")
    if epochs < 1 or batch_size < 2 or patch_size < 8 or not mpp > 0:
        raise TmlnError(f"bad settings: epochs={epochs} (>= 1), batch_size={batch_size} (>= 2), "
                        f"patch_size={patch_size} (>= 8), mpp={mpp} (> 0)")
    out_dir = Path(out_dir)
    work = out_dir / "train"
    ctx = common.init_distributed(device)
    common.seed_everything(seed, deterministic=ctx.device.type == "cpu")
    t_start = time.time()
    show = (not quiet) if progress is None else bool(progress)
    try:
        # ---- data (rank 0 collects, everyone receives the same records)
        pool_factor = 4 if hard_negative else 1
        if patches is not None:
            patch_set = _on_main(ctx, lambda: P.collect_patch_folder(
                patches, groups_csv=groups, source_mpp=patches_mpp, progress=show and ctx.is_main,
                val_folder=val_patches))
        else:
            patch_set = _on_main(ctx, lambda: P.collect_slides(
                slides, annotations, mpp, patch_size, patches_per_class=patches_per_class,
                negative_pool_factor=pool_factor, seed=seed))
        main_idx, reserve_idx = P.split_reserve(patch_set.records)
        labels_all = patch_set.labels()
        groups_all = patch_set.groups()
        if val_patches is not None:  # an explicit validation folder: no split of the training patches
            is_val = np.array([r.split == "validation" for r in patch_set.records])
            train_idx = np.nonzero(~is_val)[0]
            val_idx = np.nonzero(is_val)[0]
        else:
            tr_rel, va_rel = P.group_split(labels_all[main_idx], groups_all[main_idx], val_fraction, seed)
            train_idx = np.asarray(main_idx)[tr_rel]
            val_idx = np.asarray(main_idx)[va_rel]
        val_groups = set(groups_all[val_idx].tolist())
        reserve_idx = np.asarray([i for i in reserve_idx if groups_all[i] not in val_groups], dtype=np.int64)

        # ---- stain reference
        stain_ref = None
        if macenko:
            stain_ref = _on_main(ctx, lambda: _stain_reference(macenko, patch_set, train_idx, mpp, patch_size, seed))

        config = {"arch": arch, "mpp": float(mpp), "patch_size": int(patch_size), "macenko": bool(macenko),
                  "source": str(patches if patches is not None else slides),
                  "val_source": None if val_patches is None else str(val_patches), "keep": keep}

        # ---- model, optimiser
        model = build_classifier(arch, 1)
        init_note = None
        if init_checkpoint is not None:
            init_note = common.load_initial_weights(model, init_checkpoint)
        model = common.prepare_model(model, ctx)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        scaler = common.Amp(ctx.device, enabled=amp, cpu_bf16=True)

        tracker = common.BestTracker(work / "best.safetensors", mode="max")
        start_epoch = 0
        weights = P.balance_weights(labels_all[train_idx])
        hn_done = False
        best_val = None
        last_path = work / "last.pt"
        if resume and last_path.is_file():
            state = common.load_checkpoint(last_path, model, optimizer, scheduler, map_location="cpu")
            extra = state.get("extra", {})
            old = extra.get("config", {})
            diff = [k for k in CONFIG_KEYS if k in old and old[k] != config[k]]
            if diff:
                raise TmlnError(f"cannot resume: the checkpoint was trained with different {', '.join(diff)} "
                                f"({', '.join(f'{k}={old[k]!r}' for k in diff)}); use another output folder or resume=False",
                                last_path)
            start_epoch = int(state["epoch"])
            tracker.best = state.get("best_metric")
            tracker.best_secondary = extra.get("best_secondary")
            tracker.load()
            if "train_idx" in extra:
                train_idx = extra["train_idx"].numpy()
                weights = extra["weights"].numpy()
            hn_done = bool(extra.get("hn_done", False))
            if "best_val_scores" in extra:
                best_val = (extra["best_val_scores"].numpy(), extra["best_val_labels"].numpy())
            if "amp" in extra:
                scaler.load_state_dict(extra["amp"])
            scheduler.T_max = epochs  # a resumed run may ask for more epochs
            common.main_print(f"resuming after epoch {start_epoch}", quiet)
        elif ctx.is_main and last_path.exists():
            last_path.unlink()

        aug = Augmenter(flips=True, rot90=True, colour=float(colour), hed=float(hed))
        mean = torch.tensor(_norm_mean(), device=ctx.device).view(1, 3, 1, 1)
        std = torch.tensor(_norm_std(), device=ctx.device).view(1, 3, 1, 1)
        val_ds = P.PatchDataset(patch_set, val_idx, mpp, patch_size, train=False, stain=stain_ref)
        logger = common.CSVLogger(work / "log.csv", start_epoch=start_epoch)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        hn_epoch = max(1, epochs // 2) if hard_negative_epoch is None else int(hard_negative_epoch)
        metrics: dict[str, Any] = {}

        for epoch in range(start_epoch, epochs):
            t0 = time.time()
            if hard_negative and not hn_done and epoch >= hn_epoch:
                train_idx, weights = _mine_hard_negatives(model, patch_set, train_idx, reserve_idx, mpp, patch_size,
                                                          stain_ref, ctx, mean, std, batch_size, num_workers)
                hn_done = True
            train_ds = P.PatchDataset(patch_set, train_idx, mpp, patch_size, train=True, stain=stain_ref, seed=seed)
            train_ds.epoch = epoch
            sampler = common.DistributedWeightedSampler(weights, len(train_idx), seed=seed)
            sampler.set_epoch(epoch)
            per_rank = len(sampler)
            loader = torch.utils.data.DataLoader(
                train_ds, batch_size=min(batch_size, per_rank), sampler=sampler, num_workers=num_workers,
                drop_last=per_rank > batch_size and per_rank % batch_size == 1,  # no batch of one (BatchNorm)
                worker_init_fn=common.worker_init_fn, persistent_workers=False,
                pin_memory=ctx.device.type == "cuda")
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + ctx.rank)
            model.train()
            epoch_lr = optimizer.param_groups[0]["lr"]
            loss_sum, n_seen = 0.0, 0
            bar = common.progress_bar(per_rank, f"epoch {epoch + 1}/{epochs}", "patch", show and ctx.is_main)
            for xb, yb in loader:
                x = xb.to(ctx.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
                x = aug(x, generator=gen)
                x = common.to_device_batch((x - mean) / std, ctx.device)
                y = yb.to(ctx.device, dtype=torch.float32)
                with scaler.autocast():
                    logits = model(x)[:, 0]
                loss = loss_fn(logits.float(), y)
                scaler.step(loss, optimizer)
                loss_sum += float(loss.detach()) * len(y)
                n_seen += len(y)
                bar.update(len(y))
                bar.set_postfix(loss=f"{loss_sum / n_seen:.4f}", refresh=False)
            bar.refresh()  # the epoch's final rate and loss, however short the epoch
            bar.close()
            scheduler.step()
            tot = common.all_reduce_sum([loss_sum, float(n_seen)], ctx.device if ctx.device.type == "cuda" else None)
            train_loss = tot[0] / max(tot[1], 1)

            # ---- validation (sharded over ranks, gathered)
            row = {"epoch": epoch, "train_loss": train_loss, "lr": epoch_lr}
            if len(val_idx):
                scores, vlabels = _predict(common.unwrap(model), val_ds, ctx, mean, std, batch_size, num_workers)
                vm = validation_metrics(vlabels, scores)
                row.update({f"val_{k}": v for k, v in vm.items()})
                metric, secondary = vm["auc"], -vm["loss"]
                if math.isnan(metric):  # one class in validation: rank by validation loss
                    metric, secondary = -vm["loss"], None
            else:
                scores = vlabels = None
                metric, secondary = -train_loss, None  # no validation: the lowest training loss
            if keep == "last":  # every epoch replaces the kept weights
                metric, secondary = float(epoch), None
            improved = tracker.update(metric, epoch, model, secondary)
            if improved and scores is not None:
                best_val = (scores, vlabels)
            row["best"] = int(improved)
            row["seconds"] = round(time.time() - t0, 3)
            logger.log(row)
            common.main_print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), quiet)
            extra = {"config": config, "train_idx": torch.as_tensor(train_idx), "weights": torch.as_tensor(weights),
                     "hn_done": hn_done, "amp": scaler.state_dict(), "best_secondary": tracker.best_secondary}
            if best_val is not None:
                extra["best_val_scores"] = torch.as_tensor(best_val[0])
                extra["best_val_labels"] = torch.as_tensor(best_val[1])
            common.save_checkpoint(last_path, model, optimizer, scheduler, epoch + 1, tracker.best, extra)
            common.barrier()
        logger.close()

        # ---- model card
        threshold, metrics = 0.5, {}
        if best_val is not None:
            metrics = validation_metrics(best_val[1], best_val[0])
            threshold = youden_threshold(best_val[1], best_val[0])
            metrics["threshold_rule"] = "youden" if threshold != 0.5 else "default 0.5"
            metrics.update({f"at_threshold_{k}": v for k, v in threshold_metrics(best_val[1], best_val[0], threshold).items()})
        metrics["best_epoch"] = tracker.best_epoch
        metrics["kept"] = "last epoch" if keep == "last" else "best epoch by validation AUC"
        summary = P.summarise(patch_set, train_idx, val_idx)
        card = ModelCard(
            task="tumour-classifier",
            architecture=arch,
            mpp=float(mpp),
            patch_size=int(patch_size),
            classes=list(P.CLASSES),
            threshold=float(threshold),
            normalisation={"mean": list(_norm_mean()), "std": list(_norm_std()), "stain": stain_ref},
            params={"num_outputs": 1, "output": "sigmoid(logit) = P(tumour)"},
            training={
                "data": summary,
                "epochs": int(epochs),
                "batch_size": int(batch_size),
                "lr": float(lr),
                "optimizer": f"AdamW(weight_decay={WEIGHT_DECAY}), cosine decay",
                "loss": "BCEWithLogits",
                "seed": int(seed),
                "val_fraction": None if val_patches is not None else float(val_fraction),
                "split": ("the validation folder val_patches (no split of the training patches)" if val_patches is not None
                          else "patient-level (StratifiedGroupKFold fold)"),
                "label_region": label_region or "the whole patch",
                "class_balance": "weighted sampling (equal class totals)",
                "augmentation": {"flips": True, "rot90": True, "colour": aug.colour, "hed": aug.hed},
                "macenko": bool(macenko),
                "hard_negative_mining": {"enabled": bool(hard_negative), "after_epoch": hn_epoch if hard_negative else None},
                "init_checkpoint": None if init_checkpoint is None else str(init_checkpoint),
                "init_note": init_note,
                "world_size": ctx.world_size,
                "device": ctx.device.type,
                "amp": scaler.enabled and str(scaler.dtype).replace("torch.", ""),
                "wall_seconds": round(time.time() - t_start, 1),
                "hardware": common.hardware_description(ctx.device),
            },
            metrics=_clean(metrics),
        )
        common.barrier()
        tracker.save_model_dir(out_dir, card, fallback_model=model)
        if ctx.is_main:
            _write_split(work / "split.csv", patch_set, train_idx, val_idx)
        common.barrier()
        return card
    finally:
        if ctx.owns_group:
            common.cleanup_distributed()


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


def _predict(module, dataset, ctx, mean, std, batch_size, num_workers, indices=None):
    """Tumour probabilities for ``dataset`` (sharded over ranks and gathered, dataset order)."""
    import torch

    n = len(dataset)
    shard = common.shard_indices(n)
    sub = torch.utils.data.Subset(dataset, shard.tolist())
    loader = torch.utils.data.DataLoader(sub, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         worker_init_fn=common.worker_init_fn)
    was_training = module.training
    module.eval()
    out, labs = [], []
    with torch.inference_mode():
        for xb, yb in loader:
            x = xb.to(ctx.device).permute(0, 3, 1, 2).float().div_(255.0)
            x = common.to_device_batch((x - mean) / std, ctx.device)
            out.append(torch.sigmoid(module(x)[:, 0].float()).cpu().numpy())
            labs.append(yb.numpy())
    module.train(was_training)
    p = np.concatenate(out) if out else np.zeros(0, np.float32)
    y = np.concatenate(labs) if labs else np.zeros(0, np.int64)
    allp, ally, alli = common.gather_arrays(p, y, shard)
    order = np.argsort(alli, kind="stable")
    return allp[order].astype(np.float64), ally[order]


def _mine_hard_negatives(model, patch_set, train_idx, reserve_idx, mpp, patch_size, stain, ctx, mean, std,
                         batch_size, num_workers):
    """Score normal candidates; return (new train indices, new sampling weights)."""
    labels = patch_set.labels()
    train_idx = np.asarray(train_idx)
    if len(reserve_idx):
        pool = np.asarray(reserve_idx)
        ds = P.PatchDataset(patch_set, pool, mpp, patch_size, train=False, stain=stain)
        scores, _ = _predict(common.unwrap(model), ds, ctx, mean, std, batch_size, num_workers)
        n_neg = int((labels[train_idx] == 0).sum())
        k = min(len(pool), max(1, n_neg // 2))
        hardest = pool[np.argsort(-scores, kind="stable")[:k]]
        train_idx = np.concatenate([train_idx, hardest])
        common.main_print(f"hard negatives: added {k} of {len(pool)} reserve normal patches "
                          f"(tumour probability >= {np.sort(scores)[::-1][k - 1]:.3f})")
    neg_scores = np.zeros(len(train_idx))
    neg_pos = np.nonzero(labels[train_idx] == 0)[0]
    sub = P.PatchDataset(patch_set, train_idx[neg_pos], mpp, patch_size, train=False, stain=stain)
    s, _ = _predict(common.unwrap(model), sub, ctx, mean, std, batch_size, num_workers)
    neg_scores[neg_pos] = s
    return train_idx, P.hard_negative_weights(labels[train_idx], neg_scores)


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
