"""Camelyon16 FROC: hand-made cases with known answers, mask rules, parsing, order invariance."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, box

from tmln.annotations import Annotation
from tmln.errors import InputTableError, TmlnError
from tmln.evaluate.froc import (
    SlideDetections,
    compute_froc,
    evaluation_mask,
    evaluation_mask_from_annotations,
    froc_curve,
    froc_score,
    rasterise_truth,
    read_predictions,
    score_slide,
)

MPP = 0.243
W, H = 60000, 40000  # level-0 px; evaluation grid 1875 x 1250 at level 5
LESION_A = box(10000, 10000, 14000, 14000)  # 972 µm square: a lesion
LESION_B = box(30000, 10000, 34000, 14000)
ITC = Point(20000, 30000).buffer(150)  # 73 µm across: below 200 µm -> ITC


def _mask(*anns):
    return evaluation_mask_from_annotations([Annotation(g, label) for g, label in anns], W, H, MPP)


def _preds(*rows):
    return pd.DataFrame(rows, columns=["probability", "x", "y"], dtype=float)


# ---------------------------------------------------------------------------- evaluation mask rules
def test_margin_is_75um_over_2_strict():
    tumour = np.zeros((41, 41), bool)
    tumour[20, 20] = True
    m = evaluation_mask(tumour, MPP, level=5)
    limit = 75 / (MPP * 32 * 2)  # 4.82 level-5 px
    yy, xx = np.mgrid[:41, :41]
    expected = np.hypot(yy - 20, xx - 20) < limit
    assert np.array_equal(m.labels > 0, expected)
    assert m.n_regions == 1


def test_margin_scales_with_mpp_and_level():
    tumour = np.zeros((41, 41), bool)
    tumour[20, 20] = True
    m = evaluation_mask(tumour, 0.5, level=4)
    limit = 75 / (0.5 * 16 * 2)  # 4.6875
    yy, xx = np.mgrid[:41, :41]
    assert (m.labels > 0).sum() == (np.hypot(yy - 20, xx - 20) < limit).sum()


def test_itc_limit_is_275um_major_axis():
    limit_px = 275 / (MPP * 32)  # 35.36 level-5 px, the official number
    assert math.isclose(limit_px, 35.36, abs_tol=0.01)
    # two thin horizontal bars: 20 px long (ITC after the margin) and 40 px long (a lesion)
    tumour = np.zeros((60, 120), bool)
    tumour[15, 10:30] = True
    tumour[45, 50:90] = True
    m = evaluation_mask(tumour, MPP)
    assert m.n_regions == 2 and m.itc == frozenset({1}) and m.n_lesions == 1


def test_holes_filled_and_8_connectivity():
    tumour = np.zeros((80, 80), bool)
    tumour[10:70, 10:70] = True
    tumour[20:60, 20:60] = False  # a large hole, far beyond the margin: still filled
    m = evaluation_mask(tumour, MPP)
    assert m.n_regions == 1 and (m.labels[40, 40] == 1)
    # diagonal touch joins regions under 8-connectivity (margin 0 with a huge mpp)
    t2 = np.zeros((10, 10), bool)
    t2[2, 2] = t2[3, 3] = True
    assert evaluation_mask(t2, 1000.0).n_regions == 1


def test_fast_path_matches_scipy_full_frame_computation():
    from scipy import ndimage
    from skimage.measure import label

    rng = np.random.default_rng(3)
    for i in range(8):
        mpp, level = [(MPP, 5), (0.5, 3), (0.25, 1), (1.0, 6)][i % 4]  # level 1: exact-EDT branch
        tumour = ndimage.binary_dilation(rng.random((90, 130)) > 0.995, iterations=2)
        tumour[:, :3] |= rng.random((90, 3)) > 0.9  # touching the border
        tumour[40:60, 60:80] = True
        tumour[45:55, 65:75] = False  # a hole
        m = evaluation_mask(tumour, mpp, level)
        dist = ndimage.distance_transform_edt(~tumour)
        ref = label(ndimage.binary_fill_holes(dist < 75 / (mpp * 2 ** level * 2)), connectivity=2)
        assert np.array_equal(m.labels, ref), (mpp, level)


def test_rasterise_exclusion_and_tiny_polygons():
    anns = [Annotation(box(0, 0, 3200, 3200), "_0"), Annotation(box(0, 0, 1600, 3200), "_2"),
            Annotation(box(5000, 5000, 5005, 5005), "Tumor"), Annotation(box(6000, 0, 7000, 900), "other")]
    t = rasterise_truth(anns, 8000, 8000)
    assert t.shape == (250, 250)
    assert t[:100, 50:100].all() and not t[:100, :50].any()  # right half kept, left half excluded
    assert t[156, 156]  # 5 px polygon still marks its pixel
    assert not t[:28, 187:219].any()  # unrelated label ignored
    assert t.sum() == 100 * 50 + 1


# ---------------------------------------------------------------------------- hand-made FROC cases
def test_one_lesion_hit_of_two():
    m = _mask((LESION_A, "_0"), (LESION_B, "_1"))
    s = score_slide("t1", _preds((0.9, 12000, 12000)), m)
    assert s.n_lesions == 2 and list(s.region_probs) == [0.9, 0.0]
    r = compute_froc([s])
    # pooled {0, 0.9}: threshold 0.9 gives sensitivity 0.5 at 0 FP
    assert r.froc == pytest.approx(0.5)
    assert r.sensitivities == {k: pytest.approx(0.5) for k in ("0.25", "0.5", "1", "2", "4", "8")}
    assert r.n_slides == 1 and r.n_tumour_slides == 1 and r.n_lesions == 2


def test_single_perfect_hit_official_threshold_quirk():
    m = _mask((LESION_A, "_0"))
    s = score_slide("t1", _preds((0.9, 12000, 12000)), m)
    # the official code drops the lowest pooled probability: here the only one
    assert compute_froc([s]).froc == 0.0
    assert compute_froc([s], official_thresholds=False).froc == 1.0


def test_itc_only_slide():
    lesion_slide = score_slide("t1", _preds((0.9, 12000, 12000)), _mask((LESION_A, "_0"), (LESION_B, "_0")))
    m = _mask((ITC, "_0"))
    assert m.n_regions == 1 and m.n_lesions == 0 and len(m.itc) == 1
    itc_slide = score_slide("t2", _preds((0.8, 20000, 30000), (0.6, 50000, 5000)), m)
    assert itc_slide.n_lesions == 0 and itc_slide.n_itc == 1
    assert list(itc_slide.fp_probs) == [0.6]  # the hit on the ITC is neither TP nor FP
    assert list(itc_slide.detections["outcome"]) == ["itc", "fp"]
    r = compute_froc([lesion_slide, itc_slide])
    # pool {0, 0.6, 0.9}: t=0.6 -> 0.5 FP/slide, sens 0.5; t=0.9 -> 0 FP, sens 0.5
    assert r.froc == pytest.approx(0.5)
    assert list(r.curve["fps_per_slide"]) == [0.5, 0.0, 0.0]
    with pytest.raises(TmlnError, match="no lesion"):
        compute_froc([itc_slide])


def test_two_hits_on_one_lesion_count_once_and_margin():
    m = _mask((LESION_A, "_0"), (LESION_B, "_0"))
    s = score_slide("t1", _preds((0.7, 11000, 11000), (0.9, 13000, 13000), (0.5, 14100, 12000),
                                 (0.4, 14400, 12000)), m)
    # 14100 is 100 px = 24 µm outside the outline (< 37.5 µm margin): a hit; 14400 (97 µm) is not
    assert list(s.region_probs) == [0.9, 0.0]
    assert list(s.detections["outcome"]) == ["duplicate", "tp", "duplicate", "fp"]
    assert list(s.fp_probs) == [0.4]
    r = compute_froc([s])
    # pool {0, 0.4, 0.9}: t=0.4 -> 1 FP, sens .5; t=0.9 -> 0 FP, sens .5
    assert r.froc == pytest.approx(0.5)
    assert r.detections["outcome"].tolist().count("tp") == 1


def test_hits_in_exclusion_regions():
    # left part of the tumour outline excluded (open to the outside): a hit deep inside is an FP;
    # an exclusion hole enclosed by tumour is filled by the official hole filling: a hit there counts
    m = _mask((box(8000, 8000, 20000, 20000), "_0"), (box(6000, 8000, 15000, 20000), "_2"),
              (box(30000, 8000, 42000, 20000), "Tumor"), (box(33000, 11000, 39000, 17000), "Exclusion"))
    assert m.n_lesions == 2
    s = score_slide("t1", _preds((0.8, 10000, 14000), (0.7, 36000, 14000)), m)
    assert list(s.detections["outcome"]) == ["fp", "tp"]
    assert list(s.fp_probs) == [0.8]
    assert sorted(s.region_probs) == [0.0, 0.7]


def test_normal_slide_false_positives_averaged_over_all_slides():
    tumour = score_slide("t1", _preds((0.8, 12000, 12000)), _mask((LESION_A, "_0"), (LESION_B, "_0")))
    normal = score_slide("n1", _preds((0.9, 100, 100), (0.5, 200, 200), (0.2, 300, 300)), None)
    assert not normal.is_tumour and list(normal.fp_probs) == [0.9, 0.5, 0.2]
    r = compute_froc([tumour, normal])
    # thresholds .2 .5 .8 .9: FPs/slide 1.5 1.0 .5 .5, sensitivity .5 .5 .5 0, then (0, 0)
    assert list(r.curve["fps_per_slide"]) == [1.5, 1.0, 0.5, 0.5, 0.0]
    assert list(r.curve["sensitivity"]) == [0.5, 0.5, 0.5, 0.0, 0.0]
    # at 0.25 interpolates between (0, 0) and (0.5, 0); at 0.5 numpy takes the last tied point (.5)
    assert r.sensitivities == {"0.25": 0.0, "0.5": 0.5, "1": 0.5, "2": 0.5, "4": 0.5, "8": 0.5}
    assert r.froc == pytest.approx(2.5 / 6)
    assert r.n_slides == 2 and r.n_tumour_slides == 1


def test_interpolation_at_six_points():
    # one FP and one lesion hit share probability 0.6; the other lesion is missed
    m = _mask((LESION_A, "_0"), (LESION_B, "_0"))
    s = score_slide("t1", _preds((0.6, 12000, 12000), (0.6, 50000, 30000)), m)
    r = compute_froc([s])
    # curve: (1 FP, .5) at t=.6, then (0, 0): linear between them, flat beyond 1 FP
    assert r.sensitivities == {"0.25": 0.125, "0.5": 0.25, "1": 0.5, "2": 0.5, "4": 0.5, "8": 0.5}
    assert r.froc == pytest.approx((0.125 + 0.25 + 0.5 * 4) / 6)
    score, sens = froc_score(r.curve, (0.75,))
    assert score == pytest.approx(0.375)


def test_curve_counts_from_synthetic_detections():
    a = SlideDetections("a", True, np.array([0.8, 0.6]), np.array([0.9, 0.7, 0.3, 0.0]), 4)
    b = SlideDetections("b", False, np.array([0.4, 0.2]), np.zeros(0), 0)
    c = froc_curve([a, b])
    assert list(c["threshold"][:-1]) == [0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    assert list(c["fps_per_slide"]) == [2.0, 1.5, 1.5, 1.0, 0.5, 0.5, 0.0, 0.0]
    assert list(c["sensitivity"]) == [0.75, 0.75, 0.5, 0.5, 0.5, 0.25, 0.25, 0.0]


# ---------------------------------------------------------------------------- order invariance
def _random_slides(seed: int) -> list[SlideDetections]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(6):
        if rng.random() < 0.5:
            n = int(rng.integers(1, 4))
            probs = np.where(rng.random(n) < 0.3, 0.0, np.round(rng.random(n), 2))
            out.append(SlideDetections(f"t{i}", True, np.round(rng.random(rng.integers(0, 5)), 2), probs, n))
        else:
            out.append(SlideDetections(f"n{i}", False, np.round(rng.random(rng.integers(0, 5)), 2), np.zeros(0), 0))
    out.append(SlideDetections("t_last", True, np.zeros(0), np.array([0.5, 0.0]), 2))
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_permuting_slides_does_not_change_score(seed, data):
    slides = _random_slides(seed)
    perm = data.draw(st.permutations(slides))
    a, b = compute_froc(slides), compute_froc(list(perm))
    assert a.froc == b.froc
    assert a.sensitivities == b.sensitivities
    pd.testing.assert_frame_equal(a.curve, b.curve)
    pd.testing.assert_frame_equal(a.slides, b.slides)
    pd.testing.assert_frame_equal(a.detections, b.detections)


# ---------------------------------------------------------------------------- predictions CSV
def test_read_predictions_with_and_without_header(tmp_path):
    (tmp_path / "a.csv").write_text("0.9,100,200\n0.5,300,400\n")
    (tmp_path / "b.csv").write_text("Y,X,Probability\n200,100,0.9\n")
    (tmp_path / "c.csv").write_text("")
    a = read_predictions(tmp_path / "a.csv")
    assert a.to_dict("list") == {"probability": [0.9, 0.5], "x": [100, 300], "y": [200, 400]}
    b = read_predictions(tmp_path / "b.csv")
    assert b.to_dict("list") == {"probability": [0.9], "x": [100], "y": [200]}
    assert len(read_predictions(tmp_path / "c.csv")) == 0


@pytest.mark.parametrize("text,msg", [("1.5,1,1\n", "outside \\[0, 1\\]"), ("0.5,-1,1\n", "negative"),
                                      ("0.5,abc,1\n", "not a finite number"), ("0.5,1\n", "3 columns")])
def test_read_predictions_rejects_bad_rows(tmp_path, text, msg):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputTableError, match=msg) as err:
        read_predictions(p)
    assert "bad.csv" in str(err.value)


def test_prediction_outside_slide_is_an_error():
    m = _mask((LESION_A, "_0"))
    with pytest.raises(InputTableError, match="outside the slide"):
        score_slide("t1", _preds((0.5, W + 100, 10)), m, path="t1.csv")
    small = evaluation_mask_from_annotations([Annotation(box(0, 0, 500, 500), "_0")], 1000, 1000, MPP)
    assert small.labels.shape == (32, 32)  # ceil(1000 / 32)
    with pytest.raises(InputTableError, match="1000 x 1000"):  # inside the grid, beyond the slide
        score_slide("s", _preds((0.5, 1010, 10)), small, path="s.csv")


# ---------------------------------------------------------------------------- real Camelyon16 outlines
@pytest.mark.shared
def test_real_camelyon16_outlines(shared_data):
    from tmln.annotations import read_annotations

    folder = shared_data / "camelyon16-annotations"
    files = sorted(folder.glob("Tumor_*.json"))
    if not files:
        pytest.skip("no Camelyon16 NCRF outlines")
    slides = []
    for path in files:
        anns = read_annotations(path)
        assert anns
        x1 = max(a.geometry.bounds[2] for a in anns)
        y1 = max(a.geometry.bounds[3] for a in anns)
        m = evaluation_mask_from_annotations(anns, int(math.ceil(x1)) + 1, int(math.ceil(y1)) + 1, 0.243)
        from shapely.ops import unary_union

        pos = unary_union([a.geometry for a in anns if a.label == "positive"])
        neg = [a.geometry for a in anns if a.label == "negative"]  # NCRF's name for `_2` exclusions
        tumour_mm2 = (pos.difference(unary_union(neg)) if neg else pos).area * 0.243 ** 2 / 1e6
        mask_mm2 = rasterise_truth(anns, int(x1) + 1, int(y1) + 1).sum() * (32 * 0.243) ** 2 / 1e6
        assert 0.3 < tumour_mm2 < 20  # real metastases: 0.5 to 8 mm² in these four slides
        assert mask_mm2 == pytest.approx(tumour_mm2, rel=0.01)  # level-5 pixel-centre mask keeps the area
        assert m.n_regions >= 1 and m.n_lesions >= 1
        pts = [a.geometry.representative_point() for a in anns if a.label == "positive"]
        cents = [a.geometry.centroid for a in anns if a.label == "positive"]
        # a detection at every outline's centroid (or an inner point where the centroid falls outside)
        rows = [(0.9, (c if a.geometry.contains(c) else p).x, (c if a.geometry.contains(c) else p).y)
                for a, c, p in zip([a for a in anns if a.label == "positive"], cents, pts)]
        slides.append(score_slide(path.stem, _preds(*rows), m))
    r = compute_froc(slides, official_thresholds=False)
    assert r.froc == 1.0
    assert r.sensitivities["0.25"] == 1.0
    assert int((r.detections["outcome"] == "fp").sum()) == 0
    # the same predictions under the official threshold rule: 0 is pooled only if an ITC exists
    assert compute_froc(slides).froc in (0.0, 1.0)
    json.dumps(r.to_json())


def test_vectorised_curve_equals_the_official_loop():
    """The official computeFROC loop (thresholds = sorted distinct pooled values but the first;
    count >= threshold; then a final (0, 0)), written out plainly, on random data with ties."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        slides = _random_slides(int(rng.integers(0, 1000)))
        fps = [p for s in slides for p in s.fp_probs]
        tps = [p for s in slides for p in s.region_probs]
        total_fp, total_tp = [], []
        for t in sorted(set(fps + tps))[1:]:
            total_fp.append(sum(p >= t for p in fps))
            total_tp.append(sum(p >= t for p in tps))
        total_fp.append(0)
        total_tp.append(0)
        c = froc_curve(slides)
        assert np.allclose(c["fps_per_slide"], np.array(total_fp) / len(slides))
        assert np.allclose(c["sensitivity"], np.array(total_tp) / sum(s.n_lesions for s in slides))


# ---------------------------------------------------------------------------- official mask images
def _write_mask_tif(path, mask, levels, mpp=MPP):
    import tifffile

    with tifffile.TiffWriter(path) as tw:
        lvl = mask
        for i in range(levels):
            tile = (128, 128) if min(lvl.shape) >= 128 else (16, 16)
            tw.write(lvl, tile=tile, photometric="minisblack", compression="zlib", subfiletype=0 if i == 0 else 1,
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
            lvl = lvl[::2, ::2]


@pytest.mark.parametrize("levels", [6, 1])  # with a level-5 page, and sampled from level 0
def test_mask_image_truth_matches_annotations(tmp_path, levels):
    from tmln.evaluate.froc import read_mask_truth

    w, h = 4096, 3072
    raw = np.zeros((h, w), np.uint8)
    raw[640:1920, 320:1600] = 255  # 1280 px square (311 µm): a lesion
    raw[2560:2592, 3200:3232] = 255  # 32 px square: an ITC
    path = tmp_path / "Tumor_009_Mask.tif"
    _write_mask_tif(path, raw, levels)
    m = read_mask_truth(path, level=5)
    ref = evaluation_mask_from_annotations(
        [Annotation(box(320, 640, 1600, 1920), "_0"), Annotation(box(3200, 2560, 3232, 2592), "_0")], w, h, MPP)
    assert m.mpp == pytest.approx(MPP) and m.size == (w, h)
    assert np.array_equal(m.labels, ref.labels) and m.itc == ref.itc and m.n_lesions == 1
