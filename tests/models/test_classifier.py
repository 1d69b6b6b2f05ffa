"""Classifier construction, loading from a model directory, input transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tmln.errors import ModelCardError
from tmln.models.card import ModelCard, save_model_dir
from tmln.models.classifier import build_classifier, input_transform, load_classifier, predict_proba


def _card(**kw):
    base = dict(task="tumour-classifier", architecture="resnet18", mpp=0.5, patch_size=64, classes=["normal", "tumour"])
    base.update(kw)
    return ModelCard(**base)


def test_build_torchvision_and_timm_output_size():
    x = torch.zeros(2, 3, 64, 64)
    tv = build_classifier("resnet18").eval()
    assert tv.fc.out_features == 1 and tv(x).shape == (2, 1)
    tm = build_classifier("resnet10t", num_classes=3).eval()  # timm-only name
    assert tm(x).shape == (2, 3)


def test_unknown_architecture():
    with pytest.raises(ModelCardError, match="unknown architecture"):
        build_classifier("no_such_net_42")


def test_load_roundtrip_gives_same_outputs(tmp_path):
    torch.manual_seed(0)
    net = build_classifier("resnet18").eval()
    # DDP-style prefix is tolerated
    save_model_dir(tmp_path / "m", {f"module.{k}": v for k, v in net.state_dict().items()}, _card())
    loaded, card = load_classifier(tmp_path / "m", device="cpu")
    assert card.architecture == "resnet18" and not loaded.training
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(net(x), loaded(x))


def test_load_mismatched_weights(tmp_path):
    net = build_classifier("resnet18", num_classes=4)
    save_model_dir(tmp_path / "m", net.state_dict(), _card())
    with pytest.raises(ModelCardError, match="do not fit"):
        load_classifier(tmp_path / "m", device="cpu")


def test_input_transform_normalises_with_card_stats():
    card = _card(normalisation={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0], "stain": None})
    tf = input_transform(card)
    rgb = np.full((8, 6, 3), 255, np.uint8)
    rgb[0, 0] = (0, 0, 0)
    x = tf(rgb)
    assert x.shape == (3, 8, 6) and x.dtype == torch.float32
    assert torch.allclose(x[:, 1, 1], torch.tensor([2.0, 1.0, 0.5]))
    assert torch.allclose(x[:, 0, 0], torch.tensor([-2.0, -1.0, -0.5]))
    batch = tf(np.stack([rgb, rgb]))
    assert batch.shape == (2, 3, 8, 6)
    with pytest.raises(ValueError):
        tf(rgb.astype(np.float32))


def test_predict_proba_in_unit_interval():
    net = build_classifier("resnet18").eval()
    p = predict_proba(net, torch.from_numpy(np.zeros((3, 64, 64, 3), np.uint8)), card=_card())
    assert p.shape == (3,) and bool(((p >= 0) & (p <= 1)).all())


def test_stain_reference_is_applied(monkeypatch):
    import tmln.models.classifier as classifier

    calls = []

    def fake_normalise(rgb, reference):  # stands in for tmln.stain.normalise
        calls.append(reference)
        return np.zeros_like(rgb)

    monkeypatch.setattr(classifier, "stain_normalise", fake_normalise)
    ref = {"stain_matrix": [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]], "max_concentrations": [1.9, 1.0]}
    card = _card(normalisation={"mean": [0, 0, 0], "std": [1, 1, 1], "stain": ref})
    x = input_transform(card)(np.full((4, 4, 3), 200, np.uint8))
    assert calls == [ref] and float(x.abs().max()) == 0.0
