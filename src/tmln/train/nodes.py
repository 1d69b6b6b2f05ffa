"""Train the lymph-node U-Net on slides with node outlines -> a model directory.

``train_nodes`` reads every slide at the card's µm/px (``tmln.train.node_data``), splits by patient,
trains ``smp.Unet`` (``encoder_weights=None``) on random crops with flips/90° rotations, colour and
HED stain jitter (``tmln.train.augment``), loss = BCE + soft Dice on logits, AdamW with a cosine
schedule. After each epoch the validation slides are segmented whole with the same tiled inference
and post-processing as ``tmln node-map``; the best checkpoint maximises pixel Dice of the node
channel + instance F1 at IoU >= 0.5 (a model that fuses touching nodes is not the best one).

Runs single-process, or under ``torchrun --nproc_per_node N -m tmln train nodes ...`` with DDP
(NCCL on GPUs, gloo on CPU; crops are sharded by index, validation slides by rank). AMP and
channels-last on CUDA. ``resume=True`` continues from ``OUT/train/train_state.pt`` (read with
``torch.load(weights_only=True)``); the finished model is ``OUT/model.safetensors`` +
``OUT/model_card.json`` (task ``node-segmentation``), training log and checkpoints in ``OUT/train/``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from tmln.errors import TmlnError
from tmln.evaluate.segmentation import match_instances
from tmln.models.appearance import feature_table, patch_distances, slide_patches, table_statistics
from tmln.models.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from tmln.models.unet import TASK, build_unet, normalise, unet_params
from tmln.nodes.edges import edge_check_params
from tmln.nodes.infer import NodeSegmenter
from tmln.nodes.instances import InstanceParams
from tmln.slide import Slide
from tmln.tissue import tissue_from_rgb
from tmln.train.augment import Augmenter
from tmln.train.common import (
    Amp,
    DistContext,
    all_reduce_sum,
    count_parameters,
    distributed_sampler,
    hardware_description,
    is_main_process,
    load_initial_weights,
    prepare_model,
    set_epoch,
    shard_indices,
    to_device_batch,
    unwrap,
)
from tmln.train.loop import Hooks, LoopSettings, Trainer, Validation, averaging_record, kept_average, session
from tmln.train.node_data import (
    CLASSES_INSTANCE,
    CLASSES_SEMANTIC,
    NodeCropDataset,
    crop,
    data_summary,
    load_node_slides,
    mistake_components,
    split_by_patient,
)

STATE_NAME = "train_state.pt"
BEST_NAME = "best.safetensors"
LOG_NAME = "train_log.csv"


def soft_dice_loss(logits, target, eps: float = 1.0):
    """1 - soft Dice per channel (over batch and pixels), averaged over channels."""
    import torch

    p = torch.sigmoid(logits.float())
    dims = (0, 2, 3)
    inter = (p * target).sum(dims)
    denom = p.sum(dims) + target.sum(dims)
    return (1 - (2 * inter + eps) / (denom + eps)).mean()


SHARED_BORDER_WEIGHT = 10.0


def segmentation_loss(logits, target, shared_border_weight: float = SHARED_BORDER_WEIGHT):
    """BCE on logits + soft Dice. With a ``node_core`` channel, its BCE weighs the band along borders
    shared by touching nodes (node but not core: a tiny fraction of pixels) ``shared_border_weight`` times."""
    import torch
    import torch.nn.functional as F

    weight = None
    if target.shape[1] > 1 and shared_border_weight != 1:
        band = (target[:, :1] - target[:, 1:2]).clamp(min=0)
        weight = torch.ones_like(target)
        weight[:, 1:2] += (shared_border_weight - 1) * band
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, weight=weight)
    return bce + soft_dice_loss(logits, target)



def _overlap_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    tp = int(np.count_nonzero(pred & truth))
    return tp, int(np.count_nonzero(pred & ~truth)), int(np.count_nonzero(~pred & truth))


@contextmanager
def _segmenter(net, card, overlap: int | None, batch_size: int):
    """A ``NodeSegmenter`` over ``net`` in eval mode (``overlap`` px, at most half a tile); the
    training mode is given back on exit."""
    was_training = net.training
    net.eval()
    seg = NodeSegmenter((net, card), batch_size=batch_size)
    if overlap is not None:
        seg.overlap = min(int(overlap), seg.tile // 2)
    try:
        yield seg
    finally:
        if was_training:
            net.train()


def evaluate_slides(net, card, slides, device, instances: bool = False, overlap: int | None = None,
                    batch_size: int = 8) -> dict:
    """Node-channel pixel Dice/IoU over ``slides`` (pooled), and instance matching when asked.

    Under DDP each rank takes every world-size-th slide; counts are summed over ranks."""

    tp = fp = fn = 0
    inst = np.zeros(4)  # tp, n_truth, n_pred, split/merge errors
    per_slide = []
    with _segmenter(net, card, overlap, batch_size) as seg:
        for i in shard_indices(len(slides)):
            s = slides[int(i)]
            prob = seg.probabilities(s.image)
            pred = prob[0] >= card.threshold
            truth = s.instances > 0
            a, b, c = _overlap_counts(pred, truth)
            tp, fp, fn = tp + a, fp + b, fn + c
            row = {"slide_id": s.slide_id, "dice": 2 * a / max(1, 2 * a + b + c)}
            if instances:
                labels = seg.instances(prob)
                m = match_instances(s.instances, labels, iou=0.5)
                inst += [m["tp"], m["n_truth"], m["n_pred"], m["split_errors"] + m["merge_errors"]]
                row.update(n_truth=m["n_truth"], n_pred=m["n_pred"], tp=m["tp"])
            per_slide.append(row)
    tot = all_reduce_sum([tp, fp, fn, *inst.tolist()])
    tp, fp, fn = tot[:3]
    out = {"dice": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0,
           "iou": tp / (tp + fp + fn) if (tp + fp + fn) else 1.0}
    if instances:
        itp, nt, npred, errs = tot[3:]
        out.update(tp=int(itp), instance_precision=itp / npred if npred else None,
                   instance_recall=itp / nt if nt else None,
                   n_truth=int(nt), n_pred=int(npred), count_error=int(npred - nt), split_merge_errors=int(errs))
    out["per_slide"] = per_slide
    return out


def _config(**kw) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}


def train_nodes(  # public API: one keyword per option of `tmln train nodes` (the signature is most of its length)
    out_dir,
    *,
    slides,
    annotations,
    epochs: int = 40,
    mpp: float = 8.0,
    tile_size: int = 256,
    crop_size: int | None = None,
    encoder: str = "resnet18",
    encoder_depth: int = 5,
    decoder_channels=None,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device="auto",
    resume: bool = True,
    val_fraction: float = 0.25,
    samples_per_epoch: int | None = None,
    instance_target: bool = True,
    border_um: float = 24.0,
    overlap: int | None = None,
    threshold: float = 0.5,
    params: dict | None = None,
    augment: dict | None = None,
    workers: int = 0,
    amp: bool = True,
    quiet: bool = False,
    init: str | Path | None = None,
    non_node_crops: float = 0.0,
    metastasis_crops: float = 0.0,
    mistake_crops: float = 0.0,
    mine_every: int = 4,
    average_epochs: int = 0,
):
    """Train the node U-Net; returns the ``ModelCard`` of the model written to ``out_dir``.

    slides : slides table (``slide_path``, ``patient_id``[, ``mpp``]); annotations : folder with one
    node outline file per slide. ``mpp`` µm/px of the model; ``tile_size`` px: the inference tile
    (a multiple of 2 ** encoder_depth); ``crop_size`` px: training crops (default ``tile_size``).
    ``instance_target`` adds the ``node_core`` channel (touching-node splitting learned from the
    outlines; a ``border_um`` wide band along shared borders is left out of the cores). ``params`` override the
    post-processing parameters stored in the card (``tmln.nodes.instances.InstanceParams``, and the node-edge
    check's ``edge_model`` and ``min_edge_score``: ``tmln.nodes.edges``; a fine-tuned model checks no edges
    unless they are given).
    ``init``: initial weights to fine-tune (a bundled model name such as ``demo-nodes``, a model
    directory, .safetensors or a state dict; ``tmln.train.common.load_initial_weights``): tensors of
    the same name and shape are loaded, the others stay at their initialisation. A resumed run
    continues from its checkpoint instead. ``non_node_crops``: share of training crops centred on
    tissue outside the nodes (septa, vessels, other tissue: the hard negatives), taken evenly from the
    other kinds of crops. ``metastasis_crops``: share of crops centred on outlined tumour inside nodes,
    read from ``<slide_id>.tumour.*`` files in ``annotations`` where present (a node replaced by
    carcinoma is still a node; the crops come from the slides that have them, or are node-centred
    where none has). ``mistake_crops``: share of crops centred on the model's own mistakes on the
    training slides (node called outside the outlines, missed inside them: ``mistake_components``,
    each mistake equally likely), mined with the weights of the moment before the first epoch when
    fine-tuning from ``init`` (else before the epoch after half of them) and again every
    ``mine_every`` epochs (0: once); until the first mining those crops are non-node crops.
    ``average_epochs``: stochastic weight averaging over the last N epochs, offered as
    one more candidate (``tmln.train.loop``). The card's ``training.appearance`` holds the appearance statistics of the
    training slides (``tmln.models.appearance``), against which analyze measures each slide.
    """
    t_start = time.time()
    with session(device, seed, deterministic=True) as ctx:
        classes = CLASSES_INSTANCE if instance_target else CLASSES_SEMANTIC
        arch_params = unet_params({"encoder": encoder, "encoder_depth": encoder_depth,
                                   "decoder_channels": decoder_channels, "classes": classes})
        multiple = 2 ** arch_params["encoder_depth"]
        crop_size = int(crop_size or tile_size)
        for name, v in (("tile size", tile_size), ("crop size", crop_size)):
            if v % multiple:
                raise TmlnError(f"{name} {v} must be a multiple of {multiple} (2 ** encoder depth)")
        if not 0 <= average_epochs <= epochs:
            raise TmlnError(f"average_epochs={average_epochs} must be between 0 and epochs={epochs}")
        if overlap is None:
            overlap = min(64, tile_size // 4)
        if not 0 <= overlap <= tile_size // 2:
            raise TmlnError(f"overlap {overlap} must be in [0, tile_size / 2]")
        config = _config(mpp=float(mpp), tile_size=int(tile_size), crop_size=crop_size, encoder=encoder,
                         encoder_depth=arch_params["encoder_depth"], decoder_channels=arch_params["decoder_channels"],
                         instance_target=bool(instance_target), border_um=float(border_um), seed=int(seed),
                         batch_size=int(batch_size), val_fraction=float(val_fraction))  # must match to resume (lr may change)

        if not 0.0 <= non_node_crops < 1.0:
            raise TmlnError(f"non_node_crops {non_node_crops} must be in [0, 1)")
        if not 0.0 <= metastasis_crops < 1.0 or non_node_crops + metastasis_crops >= 1.0:
            raise TmlnError(f"metastasis_crops {metastasis_crops} must be in [0, 1) and, with non_node_crops "
                            f"{non_node_crops}, below 1")
        if not 0.0 <= mistake_crops < 1.0 or non_node_crops + metastasis_crops + mistake_crops >= 1.0:
            raise TmlnError(f"mistake_crops {mistake_crops} must be in [0, 1) and, with non_node_crops {non_node_crops} "
                            f"and metastasis_crops {metastasis_crops}, below 1")
        if mine_every < 0:
            raise TmlnError(f"mine_every {mine_every} must be >= 0 epochs (0: mine once)")
        items = load_node_slides(slides, annotations, mpp=mpp, border_um=border_um if instance_target else None,
                                 tumour=metastasis_crops > 0)
        train_items, val_items = split_by_patient(items, val_fraction, seed)
        validation_note = "held-out patients"
        if not val_items:
            val_items = train_items
            validation_note = "training slides (fewer than two patients: no held-out validation)"
        keep = 1.0 - float(non_node_crops) - float(metastasis_crops) - float(mistake_crops)
        dataset = NodeCropDataset(train_items, crop_size, samples_per_epoch, seed=seed, p_boundary=0.5 * keep,
                                  p_foreground=0.25 * keep, p_non_node=float(non_node_crops),
                                  p_metastasis=float(metastasis_crops), p_mistake=float(mistake_crops))
        mining = None
        if mistake_crops > 0:
            first = 0 if init is not None else epochs // 2
            mining = list(range(first, epochs, mine_every)) if mine_every else [first]

        card = ModelCard(
            task=TASK, architecture=f"unet:{encoder}", mpp=float(mpp), patch_size=int(tile_size), classes=classes,
            threshold=float(threshold),
            normalisation={"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "stain": None},
            params={**InstanceParams.from_dict(params).to_dict(), **edge_check_params(params), "overlap": int(overlap),
                    "border_um": float(border_um) if instance_target else None,
                    "unet": {"encoder_depth": arch_params["encoder_depth"],
                             "decoder_channels": arch_params["decoder_channels"]}},
        )
        net = build_unet(card)
        init_note = None if init is None else load_initial_weights(net, init)
        model = prepare_model(net, ctx)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=lr * 0.02)
        augmenter = Augmenter(**(augment or {}))
        # bf16 autocast on CUDA and on CPUs that run it natively (AVX512-BF16 / AMX: 1.7-1.9x faster steps of
        # the pcam-nodes U-Net on 2 Sapphire Rapids cores, benchmarks/node_training_precision.py), float32 elsewhere
        mixed = Amp(ctx.device, enabled=amp, cpu_bf16=True)
        card.training = {  # train_seconds and appearance: filled in by _NodeHooks.card
            "data": data_summary(train_items, [] if validation_note.startswith("training") else val_items),
            "slides_table": str(Path(slides).resolve()), "annotations": str(Path(annotations).resolve()),
            "epochs": int(epochs), "tile_size_px": int(tile_size), "crop_size_px": crop_size, "batch_size": int(batch_size),
            "samples_per_epoch": len(dataset), "lr": float(lr), "weight_decay": float(weight_decay),
            "seed": int(seed), "loss": f"bce+dice on logits (shared-border band x{SHARED_BORDER_WEIGHT:g} in node_core BCE)", "optimizer": "AdamW, cosine schedule",
            "augmentation": {"flips": augmenter.flips, "rot90": augmenter.rot90, "colour": augmenter.colour,
                             "hed": augmenter.hed},
            "world_size": ctx.world_size, "device": str(ctx.device.type),
            "amp": mixed.enabled and str(mixed.dtype).replace("torch.", ""),
            "hardware": hardware_description(ctx.device),
            "parameters": count_parameters(model),
            "train_seconds": None,  # incl. resumed runs' epochs
            "split": "by patient", "validation": validation_note,
            "init_checkpoint": None if init is None else str(init), "init_note": init_note,
            "non_node_crops": float(non_node_crops),
            "metastasis_crops": float(metastasis_crops),
            "slides_with_tumour_outlines": sum(it.tumour is not None for it in train_items),
            "mistake_crops": float(mistake_crops),
            "mistake_mining": None if mining is None else {
                "planned_before_epochs": [e + 1 for e in mining], "mined": [],  # mined: {before_epoch, mistakes} as done
                "what": "node called outside the outlines or missed inside them, on the training slides, "
                        "with the weights of the moment (tmln.train.node_data.mistake_components)"},
            "weight_averaging": averaging_record(average_epochs),
            "appearance": None,
        }
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=distributed_sampler(dataset, shuffle=False, seed=seed),
                            num_workers=workers, drop_last=len(dataset) >= 2 * batch_size * ctx.world_size, collate_fn=_collate)
        hooks = _NodeHooks(ctx, model, optimizer, card, loader, augmenter, train_items, val_items, overlap=overlap,
                           epochs=epochs, seed=seed, t_start=t_start, mining=mining)
        settings = LoopSettings(epochs=epochs, seed=seed, resume=resume, quiet=quiet, checkpoint=STATE_NAME, log=LOG_NAME,
                                best=BEST_NAME, tensorboard=False, average_last=int(average_epochs))
        return Trainer(ctx, model, optimizer, scheduler, mixed, out_dir, settings, config).fit(hooks)


@dataclass
class _NodeHooks(Hooks):
    """The node U-Net's part of the training loop: random crops with their masks augmented alike,
    BCE + soft Dice, validation on whole slides (pixel Dice + instance F1 at IoU >= 0.5), the card's
    metrics recomputed with the best weights."""

    ctx: DistContext
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    card_template: ModelCard  # all but the metrics and training.train_seconds / training.appearance
    loader: DataLoader
    augmenter: Augmenter
    train_items: list
    val_items: list
    overlap: int
    epochs: int
    seed: int
    t_start: float
    mining: list[int] | None = None  # the (0-based) epochs before which mistakes are mined
    first_epoch = 1  # the log and the card count epochs from 1
    mean_of_batches = True
    unit = "crop"

    def on_epoch_start(self, epoch):
        if self.mining and epoch in self.mining:
            self._mine(epoch)

    def _mine(self, epoch: int) -> None:
        """The training slides' mistakes with the weights of the moment (every rank mines them all:
        same weights, same mistakes), given to the dataset and counted in the card."""
        with _segmenter(unwrap(self.model), self.card_template, self.overlap, self.loader.batch_size) as seg:
            found = [mistake_components(s, seg.probabilities(s.image)[0], self.card_template.threshold)
                     for s in self.train_items]
        self.loader.dataset.set_mistakes(found)
        record = self.card_template.training["mistake_mining"]
        record["mined"] = [*(m for m in record["mined"] if m["before_epoch"] <= epoch),
                           {"before_epoch": epoch + 1, "mistakes": sum(map(len, found))}]

    def state(self):
        """The mined mistakes as rows (slide index, mistake index, row, column), and the minings so far
        as rows (before epoch, mistakes)."""
        mined = self.card_template.training["mistake_mining"]["mined"] if self.mining else []
        if not mined:
            return {}
        parts = [np.column_stack([np.full(len(m), i), np.full(len(m), k), m]) for k, (i, m) in
                 enumerate(self.loader.dataset.mistakes)]
        rows = np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)
        return {"mistakes": torch.as_tensor(rows, dtype=torch.int64),
                "mined": torch.as_tensor([[m["before_epoch"], m["mistakes"]] for m in mined], dtype=torch.int64)}

    def restore(self, extra):
        if "mined" not in extra or not self.mining:
            return
        rows = extra["mistakes"].numpy()
        per_slide = [[] for _ in self.train_items]
        if len(rows):  # rows come grouped by mistake
            for part in np.split(rows, np.flatnonzero(np.diff(rows[:, 1])) + 1):
                per_slide[int(part[0, 0])].append(part[:, 2:])
        self.loader.dataset.set_mistakes(per_slide)
        self.card_template.training["mistake_mining"]["mined"] = [{"before_epoch": e, "mistakes": n}
                                                                  for e, n in extra["mined"].tolist()]

    def batches(self, epoch):
        self.loader.dataset.set_epoch(epoch)
        set_epoch(self.loader.sampler, epoch)
        return self.loader, len(self.loader.sampler)

    def inputs(self, batch, generator):
        img, tgt = batch
        x = torch.from_numpy(img).permute(0, 3, 1, 2).float().div_(255.0)
        x, y = self.augmenter(x, masks=torch.from_numpy(tgt), generator=generator)
        return normalise(to_device_batch(x, self.ctx.device), self.card_template), y.to(self.ctx.device, non_blocking=True)

    def loss(self, output, target):
        return segmentation_loss(output, target)

    def _evaluate(self) -> dict:
        return evaluate_slides(unwrap(self.model), self.card_template, self.val_items, self.ctx.device, instances=True,
                               overlap=self.overlap, batch_size=self.loader.batch_size)

    def validate(self, epoch, train_loss):
        val = self._evaluate()
        f1 = 2 * val["tp"] / (val["n_truth"] + val["n_pred"]) if val["n_truth"] + val["n_pred"] else 1.0
        score = val["dice"] + f1  # pixel Dice and instance F1 (touching nodes must come apart)
        columns = {"val_dice": round(val["dice"], 6), "val_iou": round(val["iou"], 6), "val_instance_f1": round(f1, 6),
                   "val_score": round(score, 6)}
        return Validation(score, None, columns, detail={"train_loss": train_loss, "dice": val["dice"], "f1": f1})

    def record(self, epoch, train_loss, lr, validation, improved):
        return {"epoch": epoch, "train_loss": round(train_loss, 6), **validation.columns,
                "lr": self.optimizer.param_groups[0]["lr"]}  # the next epoch's rate (after the scheduler step)

    def epoch_line(self, row, validation, improved):
        d = validation.detail
        return (f"epoch {row['epoch']}/{self.epochs} loss {d['train_loss']:.4f} val Dice {d['dice']:.4f} "
                f"instance F1 {d['f1']:.3f}{' *' if improved else ''} ({row['seconds']:.1f} s)")

    def card(self, trainer):
        """Final metrics with the best weights (pixel and instance) and the training slides' appearance."""
        state = trainer.tracker.load()
        if state is not None:
            unwrap(self.model).load_state_dict(state)
        final = self._evaluate()
        per_slide = final.pop("per_slide")
        card = self.card_template
        card.metrics = {"validation": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in final.items()},
                        "validation_on": card.training["validation"], "best_epoch": trainer.tracker.best_epoch,
                        "selection": "best validation node Dice + instance F1 (IoU >= 0.5)"
                                     + (" among the epochs and the mean of the last "
                                        f"{trainer.settings.average_last}" if trainer.settings.average_last else ""),
                        "kept_average": kept_average(trainer, self),
                        "per_slide": per_slide if is_main_process() else []}
        card.training["train_seconds"] = round(trainer.resumed_seconds + time.time() - self.t_start, 1)
        card.training["appearance"] = appearance_of_slides(self.train_items, card.mpp, seed=self.seed)
        return card


APPEARANCE_PATCH = 64  # px at the model's µm/px: the patches of the node model's appearance statistics


def appearance_of_slides(items, mpp: float, per_slide: int = 32, seed: int = 0) -> dict | None:
    """Appearance statistics (``tmln.models.appearance``) of ``APPEARANCE_PATCH`` px patches of the
    training slides at ``mpp`` µm/px, read as ``appearance.slide_distance`` reads a slide at analysis
    (``slide_patches``: tissue mask, resampling included — texture features depend on it; crops of
    the in-memory image only where the file has no µm/px). The reference distance is that of a
    typical training *slide*, so a slide like the training data lies at ≈ 1. None when too few
    patches are stained."""
    rng = np.random.default_rng(seed)
    tables = []
    for k, s in enumerate(items):
        try:
            with Slide(s.path) as sl:
                got = slide_patches(sl, float(mpp), APPEARANCE_PATCH, per_slide, seed=seed + k)
        except TmlnError:  # no µm/px in the file (given in the slides table)
            mask, _ = tissue_from_rgb(s.image, {"mpp": float(mpp)})
            ys, xs = np.nonzero(mask)
            pick = rng.choice(len(ys), min(per_slide, len(ys)), replace=False) if len(ys) else []
            got = [crop(s.image, int(ys[i]) - APPEARANCE_PATCH // 2, int(xs[i]) - APPEARANCE_PATCH // 2,
                        APPEARANCE_PATCH, 255) for i in pick]
        tables.append(feature_table(got))
    try:
        stats = table_statistics(np.concatenate(tables), mpp, source="training slides")
    except ValueError:
        return None
    # reference: the median over slides of each slide's median patch distance (patches of one slide
    # share its stain; the pooled patch median would not describe one slide)
    per_slide_median = [float(np.median(patch_distances(t, stats))) for t in tables if len(t)]
    stats["median_distance"] = float(np.median(per_slide_median))
    stats["reference"] = "median over the training slides of each slide's median patch distance"
    stats["patch_size"] = APPEARANCE_PATCH
    return stats


def _collate(batch):
    imgs = np.stack([b[0] for b in batch])
    tgts = np.stack([b[1] for b in batch])
    return imgs, tgts


def weights_size_mb(model_dir) -> float:
    """Size of ``model.safetensors`` in MB (10**6 bytes)."""
    return Path(model_dir, "model.safetensors").stat().st_size / 1e6
