"""The node U-Net: build from card / dict / string, save and load a model directory, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tmln.errors import ModelCardError
from tmln.models.card import ModelCard, save_model_dir
from tmln.models.unet import build_unet, input_multiple, load_unet, unet_params

TINY = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}


def tiny_card(classes=("node", "node_core"), **kw):
    return ModelCard(task="node-segmentation", architecture="unet:tu-mobilenetv3_small_050", mpp=8.0, patch_size=64,
                     classes=list(classes), params={"unet": dict(TINY), "overlap": 16}, **kw)


def test_params_from_card_dict_and_string():
    p = unet_params(tiny_card())
    assert p == {"encoder": "tu-mobilenetv3_small_050", "encoder_depth": 3, "decoder_channels": [16, 8, 8], "classes": 2}
    assert unet_params("unet:resnet18")["decoder_channels"] == [256, 128, 64, 32, 16]
    assert unet_params({"encoder": "resnet18", "encoder_depth": 4})["decoder_channels"] == [256, 128, 64, 32]
    assert input_multiple(tiny_card()) == 8


@pytest.mark.parametrize("bad, msg", [
    ("fpn:resnet18", "not 'unet"),
    ({"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8]}, "needs 3 entries"),
    ({"encoder": "resnet18", "encoder_depth": 7}, "encoder_depth"),
    ({"encoder": "no-such-encoder"}, "cannot build"),
])
def test_bad_parameters(bad, msg):
    with pytest.raises(ModelCardError, match=msg):
        build_unet(bad)


def test_forward_shape():
    import torch

    net = build_unet(tiny_card()).eval()
    with torch.no_grad():
        y = net(torch.zeros(2, 3, 64, 48))
    assert tuple(y.shape) == (2, 2, 64, 48)


def test_save_and_load_round_trip(tmp_path):
    import torch

    torch.manual_seed(0)
    card = tiny_card()
    net = build_unet(card).eval()
    save_model_dir(tmp_path / "m", net.state_dict(), card)
    loaded, card2 = load_unet(tmp_path / "m", device="cpu")
    assert card2 == card and not loaded.training
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), loaded(x).numpy(), atol=1e-6)


def test_load_rejects_wrong_task_and_mismatched_weights(tmp_path):
    import torch

    card = tiny_card()
    net = build_unet(card)
    bad_task = ModelCard(task="tumour-classifier", architecture="resnet18", mpp=0.5, patch_size=224, classes=["t"])
    save_model_dir(tmp_path / "t", {"w": torch.zeros(1)}, bad_task)
    with pytest.raises(ModelCardError, match="expected 'node-segmentation'"):
        load_unet(tmp_path / "t")
    save_model_dir(tmp_path / "mismatch", net.state_dict(), tiny_card(classes=("node",)))
    with pytest.raises(ModelCardError, match="do not match"):
        load_unet(tmp_path / "mismatch")
    with pytest.raises(ModelCardError):
        load_unet(tmp_path / "absent")
