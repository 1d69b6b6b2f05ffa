import json

import pytest
import torch
from click.testing import CliRunner

from tmln.cli import main
from tmln.errors import ModelCardError
from tmln.models import card as mc


def _card(**kw):
    base = dict(task="tumour-classifier", architecture="resnet18", mpp=0.5, patch_size=224, classes=["normal", "tumour"])
    base.update(kw)
    return mc.ModelCard(**base)


def test_roundtrip(tmp_path):
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2)}
    c = _card(threshold=0.3, metrics={"val_auc": 0.9})
    mc.save_model_dir(tmp_path / "m", sd, c)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.safetensors", "model_card.json"]
    back = mc.read_card(tmp_path / "m")
    assert back == c and back.tmln_version
    sd2 = mc.load_state_dict(tmp_path / "m")
    assert torch.equal(sd2["w"], sd["w"]) and torch.equal(sd2["b"], sd["b"])


@pytest.mark.parametrize(
    "kw,msg",
    [(dict(task="x"), "unknown task"), (dict(mpp=0), "mpp must be positive"), (dict(patch_size=0), "patch_size")],
)
def test_invalid_card_values(kw, msg):
    with pytest.raises(ModelCardError, match=msg):
        _card(**kw)


def test_card_file_problems(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    with pytest.raises(ModelCardError, match="no model_card.json"):
        mc.read_card(d)
    (d / "model_card.json").write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        mc.read_card(d)
    (d / "model_card.json").write_text(json.dumps({"task": "tumour-classifier"}))
    with pytest.raises(ModelCardError, match="lacks required"):
        mc.read_card(d)
    good = _card().to_dict()
    good["surprise"] = 1
    (d / "model_card.json").write_text(json.dumps(good))
    with pytest.raises(ModelCardError, match="unknown field"):
        mc.read_card(d)
    good.pop("surprise")
    (d / "model_card.json").write_text(json.dumps(good))
    with pytest.raises(ModelCardError, match="no model.safetensors"):
        mc.load_state_dict(d)
    (d / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ModelCardError, match="cannot read weights"):
        mc.load_state_dict(d)


def test_unknown_model_name():
    with pytest.raises(ModelCardError, match="not a model directory nor a bundled model"):
        mc.resolve_model_dir("no-such-model-xyz")


def test_every_bundled_model_has_a_valid_card_and_weights():
    for name in mc.list_bundled():
        card = mc.read_card(name)
        assert "not for diagnosis" in card.intended_use.lower()
        assert mc.load_state_dict(name)


def test_models_cli_lists_or_shows(tmp_path):
    mc.save_model_dir(tmp_path / "m", {"w": torch.zeros(1)}, _card())
    r = CliRunner().invoke(main, ["models", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["architecture"] == "resnet18"
    r = CliRunner().invoke(main, ["models", "nope-xyz"])
    assert r.exit_code == 2 and "nope-xyz" in r.output
