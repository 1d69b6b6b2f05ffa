"""``tmln tumour-map`` end to end on the committed CMU slide (real Aperio SVS, 0.499 µm/px)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from tmln.cli import main

from .helpers import make_model_dir


def test_tumour_map_cli_on_cmu_slide(cmu_slide, tmp_path):
    # a coarse random-weight model (2 µm/px, 64 px patches) keeps this to seconds on one core
    model = make_model_dir(tmp_path / "model", mpp=2.0, patch=64, threshold=0.5)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["tumour-map", str(cmu_slide), "--model", str(model), "--out", str(out),
                                    "--loader-workers", "0", "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    side = json.loads((out / "tumour_map.json").read_text())
    arr = np.load(out / "tumour_map.npy")
    assert side["mpp"] == 64.0 and side["mask"] == "tissue" and list(arr.shape) == side["shape"]
    # 2220 x 2967 px at 0.499 µm/px = 1108 x 1481 µm -> 18 x 24 pixels of 64 µm
    assert arr.shape == (24, 18)
    mapped = ~np.isnan(arr)
    assert 0.2 < mapped.mean() < 1.0  # tissue only (the CMU region has glass around the tissue)
    gj = json.loads((out / "tumour.geojson").read_text())
    thr = side["threshold"]
    n_px = int((arr[mapped] >= thr).sum())
    area = sum(f["properties"]["measurements"]["area_mm2"] for f in gj["features"])
    assert abs(area - n_px * 0.064**2) < 1e-9  # one map pixel = 64 x 64 µm


def test_tumour_map_cli_errors(tmp_path, cmu_slide):
    model = make_model_dir(tmp_path / "model", mpp=2.0, patch=64)
    r = CliRunner().invoke(main, ["tumour-map", str(tmp_path / "nope.svs"), "--model", str(model), "--out",
                                  str(tmp_path / "o")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = CliRunner().invoke(main, ["tumour-map", str(cmu_slide), "--model", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "model_card.json" in r.output
    r = CliRunner().invoke(main, ["tumour-map", str(cmu_slide), "--model", str(model), "--out", str(tmp_path / "o"),
                                  "--mask", "nodes"])
    assert r.exit_code != 0 and "--node-annotations" in r.output
    assert not (tmp_path / "o" / "tumour_map.npy").exists()
