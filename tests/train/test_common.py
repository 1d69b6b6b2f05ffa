"""Training utilities: seeding, checkpoints (weights_only), CSV log resume, best tracking, gloo collectives."""

import csv
import os
import socket

import numpy as np
import pytest
import torch

from tmln.models.card import ModelCard, load_state_dict, read_card
from tmln.train import common


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))


def test_seed_everything_reproducible():
    g1 = common.seed_everything(5)
    a = torch.rand(3, generator=g1), torch.rand(3), np.random.rand()
    g2 = common.seed_everything(5)
    b = torch.rand(3, generator=g2), torch.rand(3), np.random.rand()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


def test_single_process_context_and_helpers():
    ctx = common.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    assert common.is_main_process()
    assert common.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]
    assert common.all_reduce_mean(3.0) == 3.0
    assert common.shard_indices(5).tolist() == [0, 1, 2, 3, 4]
    assert common.shard_indices(5, rank=1, world_size=2).tolist() == [1, 3]
    assert common.distributed_sampler(list(range(4))) is None
    m = common.prepare_model(_model(), ctx)
    assert common.unwrap(m) is m
    amp = common.Amp(ctx.device)
    assert not amp.enabled  # AMP only on CUDA
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with amp.autocast():
        loss = m(torch.ones(2, 4)).sum()
    before = [p.clone() for p in m.parameters()]
    amp.step(loss, opt)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_weighted_sampler_balances_classes():
    labels = np.array([0] * 90 + [1] * 10)
    w = np.where(labels == 1, 1 / 10, 1 / 90)
    s = common.DistributedWeightedSampler(w, 2000, seed=0)
    idx = list(s)
    assert len(idx) == 2000
    assert 0.4 < labels[idx].mean() < 0.6
    s.set_epoch(1)
    assert list(s) != idx


def test_checkpoint_round_trip(tmp_path):
    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    m(torch.ones(2, 4)).sum().backward()
    opt.step()
    sched.step()
    path = tmp_path / "last.pt"
    common.save_checkpoint(path, m, opt, sched, epoch=3, best_metric=0.75, extra={"note": "x", "n": [1, 2]})
    m2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=5)
    state = common.load_checkpoint(path, m2, opt2, sched2)
    assert state["epoch"] == 3 and state["best_metric"] == 0.75 and state["extra"]["n"] == [1, 2]
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert sched2.last_epoch == 1 and opt2.state_dict()["state"]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    from tmln.errors import TmlnError

    with pytest.raises(TmlnError, match="bad.pt"):
        common.load_checkpoint(tmp_path / "bad.pt", m2)
    # other settings are refused before anything is restored; weights of another model, by name
    common.save_checkpoint(path, m, opt, sched, epoch=3, best_metric=0.75, extra={"config": {"arch": "a", "lr": 1}})
    before = [p.detach().clone() for p in m2.parameters()]
    with pytest.raises(TmlnError, match=r"arch='a', now 'b'.*--no-resume"):
        common.load_checkpoint(path, m2, config={"arch": "b", "lr": 1, "new_setting": 2})
    assert all(torch.equal(a, b) for a, b in zip(before, m2.parameters()))
    assert common.load_checkpoint(path, m2, config={"arch": "a", "new_setting": 2})["epoch"] == 3
    with pytest.raises(TmlnError, match=r"last.pt: cannot resume: the checkpoint.s weights do not fit this model \(Unexpected key"):
        common.load_checkpoint(path, torch.nn.Sequential(torch.nn.Linear(5, 3)))


def test_csv_logger_resume_drops_later_rows(tmp_path):
    path = tmp_path / "log.csv"
    lg = common.CSVLogger(path, tensorboard=False)
    for e in range(3):
        lg.log({"epoch": e, "loss": 1.0 / (e + 1), "val_auc": np.float64(0.5 + e / 10)})
    lg2 = common.CSVLogger(path, start_epoch=2, tensorboard=False)
    lg2.log({"epoch": 2, "loss": 0.1, "val_auc": 0.9})
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and rows[-1]["loss"] == "0.1"


def test_best_tracker_saves_best_and_model_dir(tmp_path):
    m = _model()
    bt = common.BestTracker(tmp_path / "best.safetensors")
    assert bt.update(0.6, 0, m)
    best_w = m[0].weight.detach().clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
    assert not bt.update(0.5, 1, m)
    assert bt.best == 0.6 and bt.best_epoch == 0
    # a fresh tracker (resumed run) reads the best weights back from disk
    bt2 = common.BestTracker(tmp_path / "best.safetensors", best=0.6)
    assert torch.equal(bt2.load()["0.weight"], best_w) and bt2.best_epoch == 0
    card = ModelCard(task="tumour-classifier", architecture="mlp", mpp=0.5, patch_size=4, classes=["normal", "tumour"])
    bt2.save_model_dir(tmp_path / "model", card)
    assert read_card(tmp_path / "model").architecture == "mlp"
    assert torch.equal(load_state_dict(tmp_path / "model")["0.weight"], best_w)
    # NaN metrics never replace a real best
    assert not bt.update(float("nan"), 2, m)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = common.init_distributed("cpu")
    s = common.all_reduce_sum([rank + 1.0, 10.0])
    (g,) = common.gather_arrays(np.array([rank * 10, rank * 10 + 1]))
    obj = common.broadcast_object({"from": rank})
    ids = common.shard_indices(5)
    sampler = common.DistributedWeightedSampler(np.ones(10), 10, seed=0)
    m = common.prepare_model(_model(), ctx)
    with open(out / f"rank{rank}.txt", "w") as fh:
        fh.write(repr((s, g.tolist(), obj, ids.tolist(), list(sampler), common.is_main_process(), type(m).__name__)))
    common.cleanup_distributed()


@pytest.mark.slow
def test_gloo_collectives(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True)
    r0 = eval((tmp_path / "rank0.txt").read_text())
    r1 = eval((tmp_path / "rank1.txt").read_text())
    assert r0[0] == r1[0] == [3.0, 20.0]
    assert r0[1] == r1[1] == [0, 1, 10, 11]
    assert r0[2] == r1[2] == {"from": 0}
    assert r0[3] == [0, 2, 4] and r1[3] == [1, 3]
    assert len(r0[4]) == len(r1[4]) == 5
    assert r0[5] is True and r1[5] is False
    assert r0[6] == "DistributedDataParallel"
