"""train_tumour end to end on tiny synthetic data: learns separable classes, writes a complete model
directory, resumes exactly, runs under torchrun (2 gloo processes), rejects bad input."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tmln.errors import TmlnError
from tmln.models.card import load_state_dict, read_card
from tmln.train import common
from tmln.train.tumour import train_tumour, youden_threshold

from .train_synth import make_patch_folder

TINY = dict(epochs=2, patch_size=32, batch_size=8, device="cpu", val_fraction=0.5, quiet=True)


def test_trains_separable_patches_and_writes_model_dir(patch_folder, tmp_path):
    card = train_tumour(tmp_path / "m", patches=patch_folder, **TINY)
    assert card.metrics["auc"] > 0.9
    on_disk = read_card(tmp_path / "m")
    assert on_disk.to_dict() == card.to_dict()
    assert card.task == "tumour-classifier" and card.classes == ["normal", "tumour"]
    assert card.architecture == "resnet18" and card.mpp == 0.5 and card.patch_size == 32
    assert 0 <= card.threshold <= 1 and card.params["num_outputs"] == 1
    data = card.training["data"]
    assert data["train"]["n_patches"] + data["validation"]["n_patches"] == 48
    assert not set(data["train"]["groups"]) & set(data["validation"]["groups"])
    assert card.tmln_version
    rows = list(csv.DictReader(open(tmp_path / "m" / "train" / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "val_auc" in rows[0]
    # the engine's loader reads it and scores the classes apart
    from tmln.models.classifier import load_classifier, predict_proba

    module, c = load_classifier(tmp_path / "m", "cpu")
    from .train_synth import NORMAL_RGB, TUMOUR_RGB

    batch = torch.tensor(np.array([np.full((32, 32, 3), TUMOUR_RGB), np.full((32, 32, 3), NORMAL_RGB)]), dtype=torch.uint8)
    p = predict_proba(module, batch, card=c)
    assert p[0] > p[1]


def test_same_seed_same_weights_and_exact_resume(tmp_path, monkeypatch):
    folder = make_patch_folder(tmp_path / "p", n_groups=2, per_group=4)
    kw = dict(TINY, val_fraction=0.5)
    train_tumour(tmp_path / "a", patches=folder, **kw)
    # interrupted after the first epoch's checkpoint, then run again: continues at epoch 1
    real_save = common.save_checkpoint
    calls = []

    def save_then_die(*a, **k):
        real_save(*a, **k)
        calls.append(1)
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(common, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_tumour(tmp_path / "b", patches=folder, **kw)
    monkeypatch.setattr(common, "save_checkpoint", real_save)
    assert not (tmp_path / "b" / "model_card.json").exists()  # no partial model directory
    state = torch.load(tmp_path / "b" / "train" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    train_tumour(tmp_path / "b", patches=folder, **kw)
    rows = list(csv.DictReader(open(tmp_path / "b" / "train" / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    wa, wb = load_state_dict(tmp_path / "a"), load_state_dict(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # more epochs later: continues from epoch 2
    card = train_tumour(tmp_path / "b", patches=folder, **dict(kw, epochs=3))
    rows = list(csv.DictReader(open(tmp_path / "b" / "train" / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and card.training["epochs"] == 3
    # a resume with other settings is refused
    with pytest.raises(TmlnError, match="patch_size"):
        train_tumour(tmp_path / "b", patches=folder, **dict(kw, epochs=4, patch_size=40))


def test_slides_with_macenko_hard_negatives_and_init(slide_cohort, tmp_path):
    csv_path, adir = slide_cohort
    card = train_tumour(tmp_path / "m", slides=csv_path, annotations=adir, mpp=1.0, patches_per_class=12,
                        macenko=True, hard_negative=True, **dict(TINY, epochs=2))
    stain = card.normalisation["stain"]
    assert stain["method"] == "macenko" and np.asarray(stain["stain_matrix"]).shape == (3, 2)
    data = card.training["data"]
    assert data["source"] == "slides" and data["train"]["n_slides"] + data["validation"]["n_slides"] == 4
    assert not set(data["train"]["groups"]) & set(data["validation"]["groups"])  # patients
    assert card.training["hard_negative_mining"]["enabled"]
    # hard-negative round added reserve normals to training
    assert data["train"]["n_normal"] > data["train"]["n_tumour"]
    json.dumps(card.to_dict())
    # initialise a new model from the first one
    card2 = train_tumour(tmp_path / "m2", slides=csv_path, annotations=adir, mpp=1.0, patches_per_class=6,
                         init_checkpoint=tmp_path / "m", **dict(TINY, epochs=1))
    assert card2.training["init_note"].startswith("122 of 122") or "tensors loaded" in card2.training["init_note"]


def test_bad_inputs(tmp_path):
    with pytest.raises(TmlnError):
        train_tumour(tmp_path / "m", **TINY)  # neither source
    (tmp_path / "empty").mkdir()
    with pytest.raises(TmlnError, match="empty"):
        train_tumour(tmp_path / "m", patches=tmp_path / "empty", **TINY)
    with pytest.raises(TmlnError, match="unknown architecture"):
        folder = make_patch_folder(tmp_path / "p", n_groups=2, per_group=1)
        train_tumour(tmp_path / "m", patches=folder, **dict(TINY, arch="no_such_net"))
    with pytest.raises(TmlnError, match="weight_decay"):
        train_tumour(tmp_path / "m", patches=folder, **dict(TINY, weight_decay=-0.1))
    with pytest.raises(TmlnError, match="average_epochs"):
        train_tumour(tmp_path / "m", patches=folder, **dict(TINY, average_epochs=3))
    with pytest.raises(TmlnError, match="supports resnet18, resnet34, not 'mobilenet_v2'"):
        train_tumour(tmp_path / "m", patches=folder, **dict(TINY, arch="mobilenet_v2", equivariant=True))
    with pytest.raises(TmlnError, match="random weights"):
        train_tumour(tmp_path / "m", patches=folder, init_checkpoint="pcam-tumour", **dict(TINY, equivariant=True))


def test_youden_threshold():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    t = youden_threshold(y, s)
    assert 0.3 < t <= 0.7
    assert youden_threshold(np.zeros(3), s[:3]) == 0.5


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("RANK", None)
    return env


def test_cli(tmp_path, patch_folder):
    from click.testing import CliRunner

    from tmln.cli import main

    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["train", "tumour", "--out", str(tmp_path / "m"), "--patches", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "error:" in r.output and "empty" in r.output
    assert not (tmp_path / "m" / "model_card.json").exists()
    r = CliRunner().invoke(main, ["train", "tumour", "--out", str(tmp_path / "m"), "--patches", str(patch_folder),
                                  "--slides", "x.csv"])
    assert r.exit_code != 0 and "either" in r.output
    r = CliRunner().invoke(main, ["train", "tumour", "--out", str(tmp_path / "m"), "--patches", str(patch_folder),
                                  "--epochs", "1", "--patch-size", "32", "--batch-size", "8", "--device", "cpu",
                                  "--val-fraction", "0.5", "--arch", "resnet18", "--weight-decay", "0.05", "--quiet",
                                  "--keep", "last", "--average-epochs", "1"])
    assert r.exit_code == 0, r.output
    training = read_card(tmp_path / "m").training
    assert training["weight_averaging"]["last_epochs"] == 1
    assert training["epochs"] == 1 and training["optimizer"].startswith("AdamW(weight_decay=0.05)")


def test_equivariant_training_ships_a_plain_network_that_ignores_turns(tmp_path, patch_folder):
    from click.testing import CliRunner

    from tmln.cli import main
    from tmln.models.classifier import load_classifier, predict_proba
    from tmln.models.equivariant import act_torch

    out = tmp_path / "m"
    args = ["train", "tumour", "--out", str(out), "--patches", str(patch_folder), "--epochs", "2",
            "--patch-size", "32", "--batch-size", "8", "--device", "cpu", "--val-fraction", "0.5", "--quiet",
            "--equivariant"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    card = read_card(out)
    assert card.architecture == "resnet18" and "D4" in card.training["weight_tying"]
    assert card.metrics["auc"] > 0.9
    module, c = load_classifier(out, "cpu")  # the plain torchvision network, loaded strictly
    assert type(module).__name__ == "ResNet"
    x = torch.randint(0, 256, (3, 33, 33, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = x.permute(0, 3, 1, 2)
    p = [predict_proba(module, act_torch(g, x).permute(0, 2, 3, 1).contiguous(), card=c) for g in range(8)]
    assert (p[0].max() - p[0].min()).item() > 1e-4  # the patches score differently ...
    for q in p[1:]:  # ... and each the same in all 8 orientations (33 px: odd at every strided layer)
        torch.testing.assert_close(q, p[0], rtol=0, atol=1e-5)
    plain = train_tumour(tmp_path / "plain", patches=patch_folder, **TINY)
    assert plain.training["weight_tying"] is None
    # a run is resumed only with the same setting
    (out / "model_card.json").unlink()
    with pytest.raises(TmlnError, match="equivariant"):
        train_tumour(out, patches=patch_folder, **dict(TINY, epochs=3))


@pytest.mark.slow
def test_torchrun_two_gloo_processes(tmp_path):
    folder = make_patch_folder(tmp_path / "p", n_groups=4, per_group=4)
    args = ["train", "tumour", "--out", str(tmp_path / "ddp"), "--patches", str(folder), "--epochs", "1",
            "--patch-size", "32", "--batch-size", "8", "--val-fraction", "0.5", "--device", "cpu", "--quiet",
            "--average-epochs", "1"]  # the averaged weights' batch-norm pass, all-reduced over the ranks
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "tmln", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = read_card(tmp_path / "ddp")
    single = train_tumour(tmp_path / "single", patches=folder, average_epochs=1, **dict(TINY, epochs=1))
    a, b = ddp.to_dict(), single.to_dict()
    assert a.keys() == b.keys() and a["training"].keys() == b["training"].keys()
    for k in ("task", "architecture", "mpp", "patch_size", "classes", "normalisation", "params"):
        assert a[k] == b[k], k
    assert a["training"]["data"] == b["training"]["data"]  # same split on every rank
    assert ddp.training["world_size"] == 2 and single.training["world_size"] == 1
    assert a["metrics"].keys() == b["metrics"].keys() and a["metrics"]["n"] == b["metrics"]["n"]
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "train" / "log.csv")))
    assert len(rows) == 2 and rows[-1]["averaged_epochs"] == "1"  # rank 0 only: the epoch and the average


def test_explicit_validation_folder_keep_last_and_label_region(tmp_path):
    """--val-patches: validation = that folder (no split of the training folder), recorded in the card
    with the label's meaning; keep='last' keeps the last epoch whatever its validation AUC."""
    train = make_patch_folder(tmp_path / "tr", n_groups=3, per_group=3, seed=1)
    val = make_patch_folder(tmp_path / "va", n_groups=2, per_group=2, seed=2)
    card = train_tumour(tmp_path / "m", patches=train, val_patches=val, keep="last", label_region="centre 8x8 px",
                        **dict(TINY, epochs=2))
    assert card.training["weight_averaging"] is None
    data = card.training["data"]
    assert data["train"]["n_patches"] == 18 and data["validation"]["n_patches"] == 8
    assert card.training["label_region"] == "centre 8x8 px" and card.training["val_fraction"] is None
    assert "validation folder" in card.training["split"]
    assert card.metrics["best_epoch"] == 1 and card.metrics["kept"] == "last epoch"
    assert card.metrics["n"] == 8 and card.metrics["auc"] > 0.9
    with pytest.raises(TmlnError, match="val_patches"):
        train_tumour(tmp_path / "x", slides=tmp_path / "s.csv", annotations=tmp_path, val_patches=val, **TINY)
    # weight averaging with keep='last': the averaged weights are kept, and the card says so
    card = train_tumour(tmp_path / "avg", patches=train, val_patches=val, keep="last", average_epochs=2,
                        **dict(TINY, epochs=2))
    assert card.metrics["best_epoch"] == 2 and card.metrics["kept"].startswith("mean of the weights of the last 2")
    assert card.training["weight_averaging"]["last_epochs"] == 2 and card.metrics["auc"] > 0.9


def test_init_from_a_bundled_model_name(tmp_path):
    """--init takes a bundled model by name (fine-tuning a shipped model on one's own patches)."""
    folder = make_patch_folder(tmp_path / "p", n_groups=2, per_group=2)
    card = train_tumour(tmp_path / "m", patches=folder, init_checkpoint="demo-tumour",
                        **dict(TINY, epochs=1, arch="test_efficientnet", patch_size=16))
    assert "tensors loaded" in card.training["init_note"]
    with pytest.raises(TmlnError, match="no-such-model"):
        train_tumour(tmp_path / "n", patches=folder, init_checkpoint="no-such-model", **dict(TINY, epochs=1))


def test_cpu_bf16_autocast_only_where_native():
    from tmln.device import native_bf16

    amp = common.Amp(torch.device("cpu"), enabled=True, cpu_bf16=True)
    assert amp.enabled == native_bf16("cpu")
    assert amp.dtype == (torch.bfloat16 if amp.enabled else None)
    assert not common.Amp(torch.device("cpu"), enabled=False, cpu_bf16=True).enabled


def test_progress_bars_for_indexing_and_each_epoch(tmp_path, capsys):
    """A person can watch: a bar while the patch folder is indexed and one per epoch (patches/s,
    running loss), on stderr."""
    folder = make_patch_folder(tmp_path / "p", n_groups=2, per_group=2)
    train_tumour(tmp_path / "m", patches=folder, progress=True, **dict(TINY, epochs=1))
    err = capsys.readouterr().err
    assert "indexing patches" in err and "epoch 1/1" in err and "patch/s" in err and "loss=" in err
    train_tumour(tmp_path / "n", patches=folder, progress=False, **dict(TINY, epochs=1))
    assert "epoch 1/1" not in capsys.readouterr().err
