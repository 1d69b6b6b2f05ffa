"""tmln.raster: one raster type, one sidecar format, for tissue masks, tumour maps and node label maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tmln.errors import TmlnError
from tmln.raster import Raster, raster_fields, read_raster

COMMON = {"format", "array", "mpp", "origin_px", "slide_mpp", "shape", "values"}


def test_write_read_round_trip(tmp_path):
    r = Raster(np.arange(12, dtype=np.int32).reshape(3, 4), 8.0, (16.0, -8.0), (0.5, 0.25))
    side = r.write(tmp_path / "m.npy", {"extra": 1})
    assert set(side) == COMMON | {"extra"} and side["array"] == "m.npy" and side["shape"] == [3, 4]
    assert json.loads((tmp_path / "m.json").read_text()) == side
    arr, meta = read_raster(tmp_path / "m.npy")
    np.testing.assert_array_equal(arr, r.array)
    back = Raster(arr, **raster_fields(meta))
    assert (back.mpp, back.origin, back.slide_mpp) == (8.0, (16.0, -8.0), (0.5, 0.25))
    assert r.scale == (16.0, 32.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing temporary left


def test_errors_name_the_file(tmp_path):
    with pytest.raises(TmlnError, match="not found") as e:
        read_raster(tmp_path / "none.npy", "node label map")
    assert "none.npy" in str(e.value)
    np.save(tmp_path / "a.npy", np.zeros((2, 2)))
    with pytest.raises(TmlnError, match="µm/px is unknown"):
        read_raster(tmp_path / "a.npy")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(TmlnError, match="cannot read"):
        read_raster(tmp_path / "a.npy")
    np.save(tmp_path / "b.npy", np.zeros(3))
    (tmp_path / "b.json").write_text(json.dumps({"mpp": 1.0}))
    with pytest.raises(TmlnError, match="2-D"):
        read_raster(tmp_path / "b.npy")
    with pytest.raises(TmlnError, match="µm/px"):
        Raster(np.zeros((1, 1)), 1.0).scale  # noqa: B018


def test_every_map_is_a_raster_with_the_common_sidecar(tmp_path):
    """Tissue mask, tumour probability map and node label map: one type, the same sidecar keys."""
    from tmln.nodes.regions import NodeMap
    from tmln.tissue import TissueMask
    from tmln.tumour import ProbabilityMap

    tm = TissueMask(np.ones((4, 5), bool), 8.0, slide_mpp=(0.5, 0.5), slide_path="s.svs")
    pm = ProbabilityMap(np.full((4, 5), 0.3), 16.0, (0.0, 0.0), (0.5, 0.5), "m", 0.5, {"method": "stream"})
    nm = NodeMap(np.zeros((4, 5), np.int32), 8.0, (0.0, 0.0), (0.5, 0.5))
    for r in (tm, pm, nm):
        assert isinstance(r, Raster) and COMMON <= set(r.sidecar("x.npy"))
    assert tm.mask is tm.array and nm.labels is nm.array and pm.array.dtype == np.float32
    side = json.loads(tm.save(tmp_path / "tissue.png").read_text())
    assert COMMON <= set(side) and side["array"] == "tissue.png" and side["tissue_found"]
    back = TissueMask.load(tmp_path / "tissue.png")
    assert back.slide_mpp == (0.5, 0.5) and back.mask.all() and back.slide_path == "s.svs"
    pm.save(tmp_path / "tm")
    assert ProbabilityMap.load(tmp_path / "tm").info["method"] == "stream"
