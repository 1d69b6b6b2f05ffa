"""Real data, read in place: the 89 Camelyon16 patches (RGBA PNG, 0.243 µm/px) go through the whole
training path (1 tiny epoch) and predict-patches; skipped where ../shared is absent."""

import numpy as np
import pytest

from tmln.models.card import read_card
from tmln.train.tumour import train_tumour
from tmln.tumour.predict_patches import predict_patches

pytestmark = pytest.mark.shared


def test_camelyon_patches_train_and_predict(shared_data, tmp_path):
    folder = shared_data / "camelyon16-patches"
    if not (folder / "labels.csv").is_file():
        pytest.skip("camelyon16-patches absent")
    card = train_tumour(tmp_path / "m", patches=folder, patches_mpp=0.243, mpp=1.0, patch_size=48, epochs=1,
                        batch_size=16, device="cpu", val_fraction=0.25, quiet=True)
    c = read_card(tmp_path / "m")
    assert c.to_dict() == card.to_dict()
    data = c.training["data"]
    assert data["train"]["n_patches"] + data["validation"]["n_patches"] == 89
    # grouped by source slide from the file names (tumor_001_<x>_<y>.png -> tumor_001)
    groups = set(data["train"]["groups"]) | set(data["validation"]["groups"])
    assert groups == {"tumor_001", "tumor_004", "tumor_064", "tumor_073"}
    assert not set(data["train"]["groups"]) & set(data["validation"]["groups"])
    assert c.metrics["n"] == data["validation"]["n_patches"] and 0 <= c.threshold <= 1
    pred = predict_patches(tmp_path / "m", folder, mpp=0.243, device="cpu")
    assert len(pred) == 89 and pred["path"].str.match(r"^(tumor|normal)/").all()
    p = pred["p_tumour"].to_numpy()
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
