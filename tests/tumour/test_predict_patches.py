"""predict-patches: every image under a folder (recursive, PNG/JPEG/TIFF), resampled from --mpp,
card normalisation (Macenko reference) applied, probabilities in [0, 1], clear errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tmln.errors import TmlnError
from tmln.tumour.predict_patches import predict_patches

from .helpers import make_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random-weight resnet18 tumour classifier at 0.5 µm/px, 64 px."""
    return make_model_dir(tmp_path_factory.mktemp("model") / "rn18", mpp=0.5, patch=64)


def _folder(root: Path, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    (root / "tumor" / "sub").mkdir(parents=True)
    (root / "normal").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "tumor" / f"t{i}.png")
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "tumor" / "sub" / "deep.jpg")
    Image.fromarray(rng.integers(0, 255, (size, size, 4), dtype=np.uint8)).save(root / "normal" / "rgba.png")
    import tifffile

    tifffile.imwrite(root / "normal" / "n.tif", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    (root / "normal" / "notes.txt").write_text("not an image")
    return root


def test_predicts_every_image(model_dir, tmp_path):
    folder = _folder(tmp_path / "imgs")
    frame = predict_patches(model_dir, folder, device="cpu", batch_size=4)
    assert list(frame.columns) == ["path", "p_tumour"]
    assert sorted(frame["path"]) == sorted(["tumor/t0.png", "tumor/t1.png", "tumor/t2.png", "tumor/sub/deep.jpg",
                                            "normal/rgba.png", "normal/n.tif"])
    p = frame["p_tumour"].to_numpy()
    assert np.all((p >= 0) & (p <= 1)) and np.unique(p).size > 1


def test_matches_direct_model_call_and_resampling(model_dir, tmp_path):
    """The CSV value equals the model applied to the card-normalised patch; --mpp resamples."""
    from tmln.models.classifier import load_classifier, predict_proba

    rng = np.random.default_rng(1)
    big = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)  # at 0.25 µm/px: 64 px at the model's 0.5
    (tmp_path / "a").mkdir()
    Image.fromarray(big).save(tmp_path / "a" / "x.png")
    f = predict_patches(model_dir, tmp_path / "a", mpp=0.25, device="cpu")
    module, card = load_classifier(model_dir, "cpu")
    from tmln.imaging import resize_rgb

    small = resize_rgb(big, (64, 64))
    direct = float(predict_proba(module, torch.from_numpy(small[None]), card=card)[0])
    assert f["p_tumour"][0] == pytest.approx(direct, abs=1e-5)
    # without --mpp the image is taken at the model's µm/px: a centre crop of 64 px
    g = predict_patches(model_dir, tmp_path / "a", device="cpu")
    crop = float(predict_proba(module, torch.from_numpy(np.ascontiguousarray(big[32:96, 32:96])[None]), card=card)[0])
    assert g["p_tumour"][0] == pytest.approx(crop, abs=1e-5)


def test_macenko_reference_from_card_is_applied(tmp_path):
    from tmln.models.card import ModelCard, save_model_dir
    from tmln.models.classifier import build_classifier, load_classifier, predict_proba
    from tmln.stain import estimate, normalise

    rng = np.random.default_rng(2)
    # a stained-looking image: two OD components
    h = rng.gamma(2, 0.3, (64, 64))[..., None] * np.array([0.65, 0.70, 0.29])
    e = rng.gamma(2, 0.3, (64, 64))[..., None] * np.array([0.07, 0.99, 0.11])
    img = np.clip(240 * np.exp(-(h + e)), 0, 255).astype(np.uint8)
    ref_img = np.clip(240 * np.exp(-(1.5 * h + 0.5 * e)), 0, 255).astype(np.uint8)
    ref = estimate(ref_img)
    torch.manual_seed(0)
    card = ModelCard(task="tumour-classifier", architecture="resnet18", mpp=0.5, patch_size=64,
                     classes=["normal", "tumour"])
    card.normalisation["stain"] = ref
    save_model_dir(tmp_path / "m", build_classifier("resnet18").state_dict(), card)
    (tmp_path / "i").mkdir()
    Image.fromarray(img).save(tmp_path / "i" / "x.png")
    f = predict_patches(tmp_path / "m", tmp_path / "i", device="cpu")
    module, c = load_classifier(tmp_path / "m", "cpu")
    want = float(predict_proba(module, torch.from_numpy(normalise(img, ref)[None]), card=c)[0])
    raw = float(predict_proba(module, torch.from_numpy(img[None]), card=c)[0])
    assert f["p_tumour"][0] == pytest.approx(want, abs=1e-5)
    assert abs(want - raw) > 1e-6  # normalisation changed the input


def test_errors(model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TmlnError, match="no PNG"):
        predict_patches(model_dir, tmp_path / "empty", device="cpu")
    with pytest.raises(TmlnError, match="not found"):
        predict_patches(model_dir, tmp_path / "nope", device="cpu")
    folder = _folder(tmp_path / "imgs")
    (folder / "tumor" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(TmlnError, match="broken.png"):
        predict_patches(model_dir, folder, device="cpu")


def test_cli(model_dir, tmp_path):
    from click.testing import CliRunner

    from tmln.cli import main

    folder = _folder(tmp_path / "imgs")
    out = tmp_path / "preds.csv"
    r = CliRunner().invoke(main, ["predict-patches", "--model", str(model_dir), str(folder), "--out", str(out),
                                  "--patches-mpp", "0.5", "--batch-size", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    import pandas as pd

    t = pd.read_csv(out)
    assert len(t) == 6 and t["p_tumour"].between(0, 1).all()
    # the old spelling still works for one release, with a warning, and means the same
    r = CliRunner().invoke(main, ["predict-patches", "--model", str(model_dir), str(folder), "--out",
                                  str(tmp_path / "old.csv"), "--mpp", "0.5", "--batch-size", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "--mpp is deprecated" in r.output and "--patches-mpp" in r.output
    assert pd.read_csv(tmp_path / "old.csv").equals(t)
    (folder / "normal" / "bad.tif").write_bytes(b"II*\x00garbage")
    r = CliRunner().invoke(main, ["predict-patches", "--model", str(model_dir), str(folder), "--out", str(tmp_path / "p2.csv")])
    assert r.exit_code == 2 and "bad.tif" in r.output
    assert not (tmp_path / "p2.csv").exists()
