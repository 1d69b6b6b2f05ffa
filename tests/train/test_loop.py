"""The shared training loop on a toy model: the hooks are called in order, the best epoch is kept,
an interrupted-and-resumed run equals an uninterrupted one bit for bit, the training loss is
averaged per item or per batch, checkpoints of other settings are refused."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from tmln.errors import TmlnError
from tmln.models.card import ModelCard, load_state_dict, read_card
from tmln.train import common
from tmln.train.loop import Hooks, LoopSettings, Trainer, Validation, session


class ToyHooks(Hooks):
    """Twelve random 4-feature samples, labels 0/1; noise from the loop's generator; a shuffling
    loader (the global torch RNG, which a resume must restore)."""

    unit = "sample"

    def __init__(self, model, metrics=None, stop_at=None, loss=None):
        self.model = model
        self.metrics = metrics  # validation metric per epoch; default: minus the training loss
        self.stop_at = stop_at  # epoch at whose start the run is "killed"
        self.loss_fn = loss
        x = torch.randn(12, 4, generator=torch.Generator().manual_seed(1))
        self.data = torch.utils.data.TensorDataset(x, (torch.arange(12) % 2).float())
        self.calls: list[str] = []
        self.seen = 0  # hook state carried by the checkpoints
        self.weights: dict[int, dict] = {}  # weights after each epoch

    def on_epoch_start(self, epoch):
        self.calls.append(f"start {epoch}")
        if epoch == self.stop_at:
            raise KeyboardInterrupt("simulated kill")

    def batches(self, epoch):
        self.calls.append(f"batches {epoch}")
        return torch.utils.data.DataLoader(self.data, batch_size=4, shuffle=self.loss_fn is None), len(self.data)

    def inputs(self, batch, generator):
        x, y = batch
        self.seen += len(y)
        return x + 0.01 * torch.randn(x.shape, generator=generator), y

    def loss(self, output, target):
        self.calls.append("loss")
        if self.loss_fn is not None:
            return self.loss_fn(output, target)
        return F.binary_cross_entropy_with_logits(output[:, 0], target)

    def validate(self, epoch, train_loss):
        self.calls.append(f"validate {epoch}")
        self.weights[epoch] = {k: v.clone() for k, v in common.unwrap(self.model).state_dict().items()}
        metric = self.metrics[epoch] if self.metrics else -train_loss
        return Validation(metric, columns={"val_metric": metric})

    def record(self, epoch, train_loss, lr, validation, improved):
        self.calls.append(f"record {epoch} {'best' if improved else '-'}")
        return super().record(epoch, train_loss, lr, validation, improved)

    def state(self):
        return {"seen": self.seen}

    def restore(self, extra):
        self.calls.append("restore")
        self.seen = extra["seen"]

    def card(self, trainer):
        self.calls.append("card")
        return ModelCard(task="tumour-classifier", architecture="toy", mpp=1.0, patch_size=4, classes=["normal", "tumour"],
                         metrics={"best_epoch": trainer.tracker.best_epoch}, training={"seen": self.seen})


def fit(out, epochs=3, resume=True, config=None, average_last=0, batchnorm=False, **hooks_kw):
    """A seeded run of the toy model (built after seeding, as the trainers do); returns (card, hooks)."""
    with session("cpu", seed=7) as ctx:
        layers = [torch.nn.Linear(4, 8)] + ([torch.nn.BatchNorm1d(8)] if batchnorm else []) + [torch.nn.ReLU(), torch.nn.Linear(8, 1)]
        model = common.prepare_model(torch.nn.Sequential(*layers), ctx)
        hooks = ToyHooks(model, **hooks_kw)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        trainer = Trainer(ctx, model, optimizer, scheduler, common.Amp(ctx.device, enabled=False), out,
                          LoopSettings(epochs=epochs, seed=7, resume=resume, quiet=True, average_last=average_last),
                          config or {"width": 8})
        return trainer.fit(hooks), hooks


def log_rows(out):
    with open(out / "train" / "log.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_hooks_are_called_in_order(tmp_path):
    card, hooks = fit(tmp_path / "m", epochs=2, metrics=[0.5, 0.4])
    per_epoch = lambda e, best: [f"start {e}", f"batches {e}", "loss", "loss", "loss", f"validate {e}", f"record {e} {best}"]  # noqa: E731
    assert hooks.calls == per_epoch(0, "best") + per_epoch(1, "-") + ["card"]
    assert hooks.seen == 24 and card.training["seen"] == 24
    assert [r["epoch"] for r in log_rows(tmp_path / "m")] == ["0", "1"]
    assert list(log_rows(tmp_path / "m")[0]) == ["epoch", "train_loss", "lr", "val_metric"]
    assert read_card(tmp_path / "m").to_dict() == card.to_dict()


def test_best_epoch_is_kept(tmp_path):
    card, hooks = fit(tmp_path / "m", epochs=3, metrics=[0.2, 0.9, 0.5])
    assert card.metrics["best_epoch"] == 1
    kept = load_state_dict(tmp_path / "m")
    for k, v in hooks.weights[1].items():
        assert torch.equal(kept[k], v), k
    assert not all(torch.equal(kept[k], v) for k, v in hooks.weights[2].items())  # not simply the last epoch


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole, _ = fit(tmp_path / "a", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", epochs=3, stop_at=2)
    assert not (tmp_path / "b" / "model_card.json").exists()
    assert torch.load(tmp_path / "b" / "train" / "last.pt", weights_only=True)["epoch"] == 2
    resumed, hooks = fit(tmp_path / "b", epochs=3)
    assert hooks.calls[0] == "restore" and hooks.calls[1] == "start 2"  # only the missing epoch
    assert resumed.training["seen"] == whole.training["seen"] == 36  # the hooks' state came back
    assert resumed.metrics == whole.metrics
    assert log_rows(tmp_path / "a") == log_rows(tmp_path / "b")
    wa, wb = load_state_dict(tmp_path / "a"), load_state_dict(tmp_path / "b")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # more epochs later continue from the checkpoint; other settings are refused
    fit(tmp_path / "b", epochs=4)
    assert [r["epoch"] for r in log_rows(tmp_path / "b")] == ["0", "1", "2", "3"]
    with pytest.raises(TmlnError, match="other settings.*width"):
        fit(tmp_path / "b", epochs=5, config={"width": 16})


def test_a_finished_run_resumed_with_more_epochs_keeps_learning(tmp_path):
    """1 epoch, then resumed to 3: the cosine schedule is stretched to 3 epochs at the epoch reached
    (the rates of a run started with 3), not continued from the finished schedule's rate 0."""
    fit(tmp_path / "a", epochs=3)
    fit(tmp_path / "b", epochs=1)
    fit(tmp_path / "b", epochs=3)
    rates = lambda out: [float(r["lr"]) for r in log_rows(out)]  # noqa: E731
    assert rates(tmp_path / "b") == pytest.approx(rates(tmp_path / "a"))
    assert rates(tmp_path / "b")[1:] == pytest.approx([0.05 * 0.75, 0.05 * 0.25])


def test_no_resume_starts_afresh(tmp_path):
    fit(tmp_path / "m", epochs=2)
    _, hooks = fit(tmp_path / "m", epochs=2, resume=False)
    assert "restore" not in hooks.calls and hooks.calls[0] == "start 0"
    assert [r["epoch"] for r in log_rows(tmp_path / "m")] == ["0", "1"]


@pytest.mark.parametrize("per_batch, expected", [(False, 2.5), (True, 3.0)])
def test_training_loss_per_item_or_per_batch(tmp_path, per_batch, expected):
    """A loss of 1.5 on a batch of 4 samples and 4.5 on one of 2: 2.5 per sample, 3.0 per batch."""

    class Uneven(ToyHooks):
        mean_of_batches = per_batch

        def batches(self, epoch):  # batches of 4 and 2 samples
            return torch.utils.data.DataLoader(torch.utils.data.Subset(self.data, range(6)), batch_size=4), 6

    losses = iter([1.5, 4.5])  # the first and the second batch's

    def loss(output, target):
        return output.sum() * 0 + next(losses)

    with session("cpu", seed=7) as ctx:
        model = common.prepare_model(torch.nn.Linear(4, 1), ctx)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = Trainer(ctx, model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1), common.Amp(ctx.device, enabled=False),
                          tmp_path / "m", LoopSettings(epochs=1, seed=7, quiet=True), {})
        trainer.fit(Uneven(model, metrics=[0.0], loss=loss))
    assert float(log_rows(tmp_path / "m")[0]["train_loss"]) == expected  # (1.5 * 4 + 4.5 * 2) / 6 or (1.5 + 4.5) / 2


def test_weight_averaging_keeps_the_mean_of_the_last_epochs_with_batchnorm_recomputed(tmp_path):
    """average_last=2 of 4 epochs: the averaged candidate (numbered epoch 4) has the mean of the
    parameters after epochs 2 and 3, BatchNorm statistics recomputed over one more pass of the
    training batches; chosen when its validation is best; an interrupted run resumes to the same."""
    metrics = [0.1, 0.2, 0.3, 0.4, 0.9]  # the fifth is the average's
    card, hooks = fit(tmp_path / "a", epochs=4, average_last=2, batchnorm=True, metrics=metrics)
    assert card.metrics["best_epoch"] == 4
    assert hooks.calls[-4:] == ["batches 4", "validate 4", "record 4 best", "card"]
    rows = log_rows(tmp_path / "a")
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"] and rows[-1]["averaged_epochs"] == "2"
    kept = load_state_dict(tmp_path / "a")
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"):
        mean = (hooks.weights[2][name] + hooks.weights[3][name]) / 2
        torch.testing.assert_close(kept[name], mean, rtol=0, atol=1e-7)
        assert not torch.equal(kept[name], hooks.weights[3][name]), name
    # BatchNorm's running mean: the mean of the first layer's output over the pass (3 equal batches of
    # 4; the noise comes from epoch 4's generator, and by linearity its order does not matter)
    g = torch.Generator().manual_seed(7 * 1_000_003 + 4 * 7919)
    noise = torch.cat([0.01 * torch.randn(4, 4, generator=g) for _ in range(3)])
    x = hooks.data.tensors[0]
    expected = torch.nn.functional.linear((x + noise).mean(0), kept["0.weight"], kept["0.bias"])
    torch.testing.assert_close(kept["1.running_mean"], expected, rtol=0, atol=1e-6)
    assert int(kept["1.num_batches_tracked"]) == 3
    assert not torch.allclose(kept["1.running_var"], hooks.weights[3]["1.running_var"])
    # killed at the start of epoch 3 (inside the averaging window), resumed: the same model
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", epochs=4, average_last=2, batchnorm=True, metrics=metrics, stop_at=3)
    fit(tmp_path / "b", epochs=4, average_last=2, batchnorm=True, metrics=metrics)
    wb = load_state_dict(tmp_path / "b")
    assert kept.keys() == wb.keys() and all(torch.equal(kept[k], wb[k]) for k in kept)
    assert log_rows(tmp_path / "a") == log_rows(tmp_path / "b")


def test_weight_averaging_competes_and_is_refused_where_it_cannot_be_made(tmp_path):
    card, _ = fit(tmp_path / "a", epochs=3, average_last=3, metrics=[0.1, 0.9, 0.2, 0.5])
    assert card.metrics["best_epoch"] == 1  # a worse average is not kept
    with pytest.raises(TmlnError, match="last 4 epochs of 3"):
        fit(tmp_path / "x", epochs=3, average_last=4)
    # a checkpoint without an average, already inside the averaging window: refused
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", epochs=3, stop_at=2)
    with pytest.raises(TmlnError, match="holds no average"):
        fit(tmp_path / "b", epochs=3, average_last=2)
    fit(tmp_path / "b", epochs=3, average_last=1)  # before the window: fine
    assert log_rows(tmp_path / "b")[-1]["averaged_epochs"] == "1"
    # averaging added to a resumed run before its window, as in a run that had it from the start
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "c", epochs=3, stop_at=1)
    fit(tmp_path / "c", epochs=3, average_last=2, metrics=[0.1, 0.9, 0.2, 0.95])
    fit(tmp_path / "d", epochs=3, average_last=2, metrics=[0.1, 0.9, 0.2, 0.95])
    wc, wd = load_state_dict(tmp_path / "c"), load_state_dict(tmp_path / "d")
    assert all(torch.equal(wc[k], wd[k]) for k in wd)
    # another number of averaged epochs once averaging has begun: refused
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "e", epochs=4, average_last=3, stop_at=3)
    with pytest.raises(TmlnError, match="holds the mean of the last 3"):
        fit(tmp_path / "e", epochs=4, average_last=1)
