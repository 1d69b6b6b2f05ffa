"""Training the node U-Net end to end on a tiny synthetic cohort: a valid model directory, resume,
settings check on resume, bad input, the CLI, and DDP with two gloo processes (torchrun)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tmln.device import native_bf16
from tmln.models.card import read_card

TINY = dict(epochs=1, mpp=8.0, tile_size=64, crop_size=64, encoder="tu-mobilenetv3_small_050", encoder_depth=3,
            decoder_channels=[16, 8, 8], batch_size=4, samples_per_epoch=8, device="cpu", overlap=16, quiet=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from .node_synth import make_node_cohort

    d = tmp_path_factory.mktemp("node-cohort")
    return make_node_cohort(d), d


def test_train_writes_a_valid_model_dir_and_resumes(tmp_path, cohort):
    from tmln.models.unet import load_unet
    from tmln.train.nodes import train_nodes

    slides, ann = cohort
    card = train_nodes(tmp_path / "m", slides=slides, annotations=ann, **TINY)
    assert card.task == "node-segmentation" and card.architecture == "unet:tu-mobilenetv3_small_050"
    assert card.classes == ["node", "node_core"] and card.mpp == 8.0 and card.patch_size == 64
    for k in ("min_node_area_mm2", "split_touching", "min_distance_um", "neck_ratio", "overlap", "border_um"):
        assert k in card.params
    assert card.training["data"]["train"]["patients"] == 1 and card.training["data"]["validation"]["patients"] == 1
    assert set(card.training["data"]["train"]["slide_ids"]).isdisjoint(card.training["data"]["validation"]["slide_ids"])
    v = card.metrics["validation"]
    assert 0 <= v["dice"] <= 1 and v["n_truth"] > 0 and "instance_recall" in v
    # bf16 autocast where the CPU runs it natively (as tumour training), float32 elsewhere; the card says which
    assert card.training["amp"] == ("bfloat16" if native_bf16(torch.device("cpu")) else False)
    assert "torch threads" in card.training["hardware"]
    net, card2 = load_unet(tmp_path / "m", device="cpu")
    assert card2 == read_card(tmp_path / "m") and card2.metrics == card.metrics
    # resume: a second call with more epochs continues at epoch 2; the card's training time counts
    # the first run's epoch (made to look like 1000 s here), not only the resumed run's
    log_path = tmp_path / "m" / "train" / "train_log.csv"
    first = list(csv.DictReader(open(log_path)))
    first[0]["seconds"] = "1000"
    with open(log_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(first[0]))
        w.writeheader()
        w.writerows(first)
    card3 = train_nodes(tmp_path / "m", slides=slides, annotations=ann, **{**TINY, "epochs": 2})
    rows = list(csv.DictReader(open(tmp_path / "m" / "train" / "train_log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert card3.training["epochs"] == 2
    assert 1000 <= card3.training["train_seconds"] < 1000 + 600
    # resuming with other settings is refused
    from tmln.errors import TmlnError

    with pytest.raises(TmlnError, match="other settings"):
        train_nodes(tmp_path / "m", slides=slides, annotations=ann, **{**TINY, "epochs": 3, "tile_size": 96,
                                                                         "crop_size": 96})


def test_semantic_only_model(tmp_path, cohort):
    from tmln.train.nodes import train_nodes

    slides, ann = cohort
    card = train_nodes(tmp_path / "s", slides=slides, annotations=ann, instance_target=False, **TINY)
    assert card.classes == ["node"] and card.params["border_um"] is None
    assert card.training["weight_averaging"] is None and card.metrics["kept_average"] is False


def test_weight_averaging(tmp_path, cohort):
    """average_epochs: the mean of the last epochs is validated as one more row and recorded in the card."""
    from tmln.train.nodes import train_nodes

    slides, ann = cohort
    card = train_nodes(tmp_path / "a", slides=slides, annotations=ann, average_epochs=2, **{**TINY, "epochs": 2})
    assert card.training["weight_averaging"]["last_epochs"] == 2
    assert "mean of the last 2" in card.metrics["selection"]
    assert card.metrics["kept_average"] == (card.metrics["best_epoch"] == 3)
    with open(tmp_path / "a" / "train" / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[-1]["averaged_epochs"] == "2"


def test_bad_settings(tmp_path, cohort):
    from tmln.errors import TmlnError
    from tmln.train.nodes import train_nodes

    slides, ann = cohort
    with pytest.raises(TmlnError, match="multiple of 8"):
        train_nodes(tmp_path / "x", slides=slides, annotations=ann, **{**TINY, "tile_size": 60, "crop_size": 60})
    with pytest.raises(TmlnError, match="no node annotation"):
        train_nodes(tmp_path / "x", slides=slides, annotations=tmp_path, **TINY)
    with pytest.raises(TmlnError, match="average_epochs=2"):
        train_nodes(tmp_path / "x", slides=slides, annotations=ann, average_epochs=2, **TINY)
    with pytest.raises(TmlnError, match="metastasis_crops 0.6 must be"):
        train_nodes(tmp_path / "x", slides=slides, annotations=ann, non_node_crops=0.5, metastasis_crops=0.6, **TINY)
    with pytest.raises(TmlnError, match="mistake_crops 0.5 must be"):
        train_nodes(tmp_path / "x", slides=slides, annotations=ann, non_node_crops=0.5, mistake_crops=0.5, **TINY)
    with pytest.raises(TmlnError, match="mine_every -1"):
        train_nodes(tmp_path / "x", slides=slides, annotations=ann, mistake_crops=0.2, mine_every=-1, **TINY)


def test_mistakes_are_mined_on_schedule_and_kept_across_a_resume(tmp_path, cohort):
    import torch

    from tmln.train.nodes import STATE_NAME, train_nodes

    slides, ann = cohort
    state = tmp_path / "m" / "train" / STATE_NAME
    kw = {**TINY, "epochs": 2, "mistake_crops": 0.5, "mine_every": 1}
    card = train_nodes(tmp_path / "m", slides=slides, annotations=ann, **kw)
    mining = card.training["mistake_mining"]
    assert mining["planned_before_epochs"] == [2]  # from scratch: once half of the epochs are done
    (first,) = mining["mined"]
    assert first["before_epoch"] == 2 and first["mistakes"] > 0  # one epoch of a tiny network: mistakes everywhere
    rows = torch.load(state, weights_only=True)["extra"]["mistakes"].numpy()
    assert rows.shape[1] == 4 and len(set(rows[:, 1].tolist())) == first["mistakes"]  # (slide, mistake, row, column)
    # resumed without a mining in the epochs left: the same mistakes drawn from, saved again unchanged
    card = train_nodes(tmp_path / "m", slides=slides, annotations=ann, **{**kw, "epochs": 3, "mine_every": 0})
    assert card.training["mistake_mining"]["mined"] == [first]
    assert np.array_equal(torch.load(state, weights_only=True)["extra"]["mistakes"].numpy(), rows)
    # resumed with minings ahead: the earlier one is kept in the record, the new one added
    card = train_nodes(tmp_path / "m", slides=slides, annotations=ann, **{**kw, "epochs": 4})
    mined = card.training["mistake_mining"]["mined"]
    assert mined[0] == first and [m["before_epoch"] for m in mined] == [2, 4]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    return env


ARGS = ["--epochs", "1", "--model-mpp", "8", "--tile-size", "64", "--encoder", "tu-mobilenetv3_small_050",
        "--encoder-depth", "3", "--decoder-channels", "16,8,8", "--batch-size", "4", "--samples-per-epoch", "8",
        "--device", "cpu", "--quiet"]


def test_cli(tmp_path, cohort):
    from click.testing import CliRunner

    from tmln.cli import main

    slides, ann = cohort
    r = CliRunner().invoke(main, ["train", "nodes", "--out", str(tmp_path / "m"), "--slides", str(slides),
                                  "--annotations", str(ann), *ARGS, "--average-epochs", "1", "--metastasis-crops", "0.2",
                                  "--crop-size", "32"])
    assert r.exit_code == 0, r.output
    card = read_card(tmp_path / "m")
    tr = card.training
    assert tr["epochs"] == 1 and tr["weight_averaging"]["last_epochs"] == 1
    # crops smaller than the inference tile: the card's tile stays the inference tile
    assert tr["crop_size_px"] == 32 and tr["tile_size_px"] == 64 and card.patch_size == 64
    # the card says how many training slides brought tumour outlines for those crops (the cohort has none)
    assert tr["metastasis_crops"] == 0.2 and tr["slides_with_tumour_outlines"] == 0
    r = CliRunner().invoke(main, ["train", "nodes", "--out", str(tmp_path / "m2"), "--slides", str(slides),
                                  "--annotations", str(ann), "--decoder-channels", "a,b"])
    assert r.exit_code != 0 and "comma-separated" in r.output
    r = CliRunner().invoke(main, ["train", "nodes", "--out", str(tmp_path / "m3"), "--slides", str(tmp_path / "no.csv"),
                                  "--annotations", str(ann), *ARGS])
    assert r.exit_code == 2 and "slides table not found" in r.output
    # fine-tune the model just trained: every tensor fits (same architecture)
    r = CliRunner().invoke(main, ["train", "nodes", "--out", str(tmp_path / "ft"), "--slides", str(slides),
                                  "--annotations", str(ann), "--init", str(tmp_path / "m"), *ARGS,
                                  "--mistake-crops", "0.3", "--mine-every", "0"])
    assert r.exit_code == 0, r.output
    tr = read_card(tmp_path / "ft").training
    assert tr["init_checkpoint"] == str(tmp_path / "m")
    # fine-tuning: the mistakes of the initial weights, mined once before epoch 1
    assert tr["mistake_crops"] == 0.3 and tr["mistake_mining"]["planned_before_epochs"] == [1]
    assert [m["before_epoch"] for m in tr["mistake_mining"]["mined"]] == [1]
    n = int(tr["init_note"].split(" of ")[1].split()[0])
    assert tr["init_note"] == f"{n} of {n} tensors loaded"
    r = CliRunner().invoke(main, ["train", "nodes", "--out", str(tmp_path / "ft2"), "--slides", str(slides),
                                  "--annotations", str(ann), "--init", str(tmp_path / "nothing"), *ARGS])
    assert r.exit_code == 2 and "initial weights not found" in r.output


@pytest.mark.slow
def test_torchrun_two_gloo_processes(tmp_path, cohort):
    import socket

    slides, ann = cohort
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "tmln", "train", "nodes", "--out", str(tmp_path / "ddp"),
           "--slides", str(slides), "--annotations", str(ann), *ARGS]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    card = read_card(tmp_path / "ddp")
    assert card.training["world_size"] == 2
    assert card.metrics["validation"]["n_truth"] > 0  # validation counts summed over both ranks
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "train" / "train_log.csv")))
    assert len(rows) == 1  # written by rank 0 only
