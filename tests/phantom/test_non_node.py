"""Non-node tissue of phantom slides (tmln.phantom.non_node): what a node finder must not count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tmln.phantom import make_cohort
from tmln.phantom.geometry import SlideSpec, make_layout
from tmln.phantom.non_node import NODE_GAP_UM, SECTIONS
from tmln.phantom.render import SlideRenderer
from tmln.phantom.texture import FAT, LYMPH, OTHER_CLASSES


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_perinodal_tissue_changes_no_node_deposit_or_truth(seed):
    plain = make_layout(SlideSpec(seed=seed, size_mm=(6.0, 4.5), mpp=2.0))
    rich = make_layout(SlideSpec(seed=seed, size_mm=(6.0, 4.5), mpp=2.0, perinodal=True))
    assert [p.wkb for p in plain.nodes] == [p.wkb for p in rich.nodes]
    assert [p.wkb for p in plain.tumour] == [p.wkb for p in rich.tumour]
    assert plain.fat.equals(rich.fat)
    assert plain.other == [] and plain.node_fat == []
    assert rich.other, "perinodal tissue was asked for"
    kinds = {k for k, _ in rich.other}
    assert kinds <= set(OTHER_CLASSES)
    gap_px = NODE_GAP_UM / rich.mpp
    for kind, g in rich.other:
        assert g.is_valid and g.area > 0
        for node in rich.nodes:
            # septa, vessels, islands keep clear of every node by the gap (fragments even farther)
            assert g.distance(node) >= gap_px - 1.0, (kind, g.distance(node))
    for f in rich.node_fat:  # fatty replacement lies inside a node: the node stays one node
        assert any(n.contains(f) for n in rich.nodes)


def test_renderer_paints_non_node_tissue_and_node_fat_with_their_classes():
    for seed in range(1, 30):
        lay = make_layout(SlideSpec(seed=seed, size_mm=(8.0, 6.0), mpp=2.0, perinodal=True))
        if lay.node_fat and any(k == "stroma" for k, _ in lay.other):
            break
    else:
        pytest.fail("no seed gave both fatty replacement and stroma")
    r = SlideRenderer(lay)
    lab = r.labels(1, 0, 0, lay.width, lay.height)
    stroma = next(g for k, g in lay.other if k == "stroma")
    p = stroma.representative_point()
    assert lab[int(p.y), int(p.x)] == OTHER_CLASSES["stroma"]
    f = lay.node_fat[0].representative_point()
    assert lab[int(f.y), int(f.x)] == FAT
    assert (lab == LYMPH).any()


@pytest.mark.parametrize("kind", SECTIONS[1:])
def test_sections_without_nodes_hold_tissue_and_no_node(kind):
    lay = make_layout(SlideSpec(seed=4, size_mm=(6.0, 4.5), mpp=2.0, section=kind))
    assert lay.nodes == [] and lay.tumour == []
    assert lay.tissue.area * lay.mpp**2 / 1e6 > 2.0  # mm²: a real section's worth of tissue
    assert lay.other
    lab = SlideRenderer(lay).labels(4, 0, 0, lay.width // 4, lay.height // 4)
    assert not (lab == LYMPH).any()
    codes = {OTHER_CLASSES[k] for k, _ in lay.other}
    assert codes & set(np.unique(lab).tolist())


def test_unknown_section_is_refused():
    with pytest.raises(ValueError, match="unknown non-node section 'liver'"):
        make_layout(SlideSpec(seed=1, section="liver"))


def test_cohort_with_node_free_sections_has_no_truth_rows_for_them(tmp_path):
    csv = make_cohort(tmp_path, patients=4, seed=5, size_mm=(3.0, 2.5), mpp=2.0, perinodal=True,
                      non_node_fraction=0.5)
    slides = pd.read_csv(csv)
    truth = pd.read_csv(tmp_path / "truth_nodes.csv")
    with_nodes = set(truth["slide_id"])
    assert "P001_S01" in with_nodes  # the first slide is always a node slide (it holds the touching pair)
    assert len(with_nodes) == 2  # two of the four are sections without nodes
    patients = pd.read_csv(tmp_path / "truth_patients.csv").set_index("patient_id")
    empty = [p for p in slides["patient_id"] if f"{p}_S01" not in with_nodes]
    assert (patients.loc[empty, "n_nodes"] == 0).all()


def test_cohort_without_the_new_options_keeps_its_bytes(tmp_path):
    a = make_cohort(tmp_path / "a", patients=2, seed=9, size_mm=(1.5, 1.2), mpp=2.0)
    b = make_cohort(tmp_path / "b", patients=2, seed=9, size_mm=(1.5, 1.2), mpp=2.0, perinodal=False,
                    non_node_fraction=0.0, textures=None, pen_marks=False)
    for name in ("P001_S01.tiff", "P002_S01.tiff", "truth_nodes.csv", "P001_S01.nodes.geojson"):
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes()


def test_artefacts_come_with_perinodal_tissue_and_change_only_the_look(tmp_path):
    for seed in range(1, 40):
        lay = make_layout(SlideSpec(seed=seed, size_mm=(4.0, 3.0), mpp=2.0, perinodal=True))
        kinds = {k for k, _ in lay.artefacts}
        if {"tear", "fold"} <= kinds and lay.shading[0] > 0.01:
            break
    else:
        pytest.fail("no seed with a tear and a fold")
    plain = make_layout(SlideSpec(seed=seed, size_mm=(4.0, 3.0), mpp=2.0))
    assert plain.artefacts == [] and plain.shading is None
    assert [p.wkb for p in plain.nodes] == [p.wkb for p in lay.nodes]
    r = SlideRenderer(lay)
    lab = r.labels(1, 0, 0, lay.width, lay.height)
    tear = next(g for k, g in lay.artefacts if k == "tear")
    p = tear.representative_point()
    assert lab[int(p.y), int(p.x)] == 0  # glass shows through a tear
    fold = next(g for k, g in lay.artefacts if k == "fold")
    q = fold.representative_point()
    x, y = int(q.x) // 16 * 16, int(q.y) // 16 * 16
    if lab[y:y + 16, x:x + 16].min() > 0:  # on tissue: darker than the same tile without the fold
        folded = r.tile(1, x, y, 16, 16).astype(float)
        r._artefacts["fold"] = []
        assert folded.mean() < r.tile(1, x, y, 16, 16).astype(float).mean() - 3
