"""Slide/patch AUC against hand computation, bootstrap CI, threshold metrics, label parsing."""

import numpy as np
import pytest

from tmln.errors import InputTableError
from tmln.evaluate import auc


def _pairwise_auc(y, s):
    """Hand AUC: fraction of (positive, negative) pairs ordered correctly, ties 1/2."""
    pos, neg = [v for v, t in zip(s, y) if t], [v for v, t in zip(s, y) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_hand_computed():
    y = [1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.4, 0.6, 0.5, 0.4, 0.1, 0.2]
    # pairs: 0.9 beats 4; 0.6 beats 4; 0.4 beats 0.1, 0.2, ties 0.4, loses to 0.5 -> 2.5; total 10.5/12
    assert auc.roc_auc(y, s) == pytest.approx(10.5 / 12)
    assert auc.roc_auc(y, s) == pytest.approx(_pairwise_auc(y, s))


def test_bootstrap_ci_seeded_and_contains_estimate():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(40), np.zeros(60)].astype(int)
    s = np.r_[rng.normal(1, 1, 40), rng.normal(0, 1, 60)]
    lo, hi = auc.bootstrap_auc_ci(y, s, n_boot=300, seed=5)
    assert (lo, hi) == auc.bootstrap_auc_ci(y, s, n_boot=300, seed=5)
    assert (lo, hi) != auc.bootstrap_auc_ci(y, s, n_boot=300, seed=6)
    a = auc.roc_auc(y, s)
    assert lo < a < hi and hi - lo < 0.3


def test_threshold_metrics_counts():
    m = auc.threshold_metrics([1, 1, 1, 0, 0], [0.9, 0.5, 0.2, 0.5, 0.1], threshold=0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(0.5)
    lo, hi = m["sensitivity_ci95"]
    assert 0 < lo < 2 / 3 < hi < 1


def test_one_class_gives_no_auc():
    assert auc.evaluate_scores([1, 0], [0.9, 0.2], n_boot=0)["auc_ci"] == [None, None]
    m = auc.evaluate_scores([1, 1], [0.2, 0.9])
    assert m["auc"] is None and m["sensitivity"] == 0.5
    with pytest.raises(ValueError, match="both"):
        auc.roc_auc([0, 0], [0.1, 0.2])


def test_slide_scores_and_labels_from_folders(tmp_path):
    from shapely.geometry import box

    from tmln.annotations import Annotation, write_asap_xml

    preds, truth = tmp_path / "p", tmp_path / "t"
    preds.mkdir()
    truth.mkdir()
    (preds / "a.csv").write_text("0.2,1,1\n0.7,2,2\n")
    (preds / "b.csv").write_text("")
    (preds / "c.csv").write_text("probability,x,y\n0.4,5,5\n")
    write_asap_xml(truth / "a.xml", [Annotation(box(0, 0, 100, 100), "_0")])
    write_asap_xml(truth / "c.xml", [Annotation(box(0, 0, 100, 100), "_2")])  # exclusion only: normal
    s = auc.slide_scores_from_predictions(preds)
    assert s.to_dict("list") == {"slide_id": ["a", "b", "c"], "score": [0.7, 0.0, 0.4]}
    assert list(auc.slide_labels_from_truth(truth, ["a", "b", "c"])) == [1, 0, 0]
    (truth / "b_Mask.tif").write_bytes(b"")  # an official mask marks a tumour slide
    assert list(auc.slide_labels_from_truth(truth, ["a", "b", "c"])) == [1, 1, 0]
    assert list(auc.slide_scores_from_predictions(preds, "mean")["score"]) == pytest.approx([0.45, 0.0, 0.4])


def test_patch_labels_from_folders_and_csv(tmp_path):
    paths = ["x/tumor/p1.png", "x/normal/p2.png", "x/Tumour/sub/p3.png"]
    assert list(auc.labels_from_folders(paths)) == [1, 0, 1]
    with pytest.raises(InputTableError, match="no tumour/normal folder"):
        auc.labels_from_folders(["x/other/p.png"])
    lab = tmp_path / "labels.csv"
    lab.write_text("path,label\nelsewhere/p1.png,normal\nx/normal/p2.png,1\n")
    assert list(auc.patch_labels(paths[:2], lab)) == [0, 1]
    pred = tmp_path / "pred.csv"
    pred.write_text("path,p_tumour\n" + "\n".join(f"{p},{v}" for p, v in zip(paths, [0.8, 0.3, 0.6])) + "\n")
    metrics, table = auc.evaluate_patches(pred, n_boot=50)
    assert metrics["auc"] == 1.0 and metrics["n"] == 3 and metrics["sensitivity"] == 1.0
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.png,maybe\n")
    with pytest.raises(InputTableError, match="maybe"):
        auc.patch_labels(["a.png"], bad)


def test_rank_auc_used_by_bootstrap_equals_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    pos = np.round(rng.random((5, 13)), 1)  # many ties
    neg = np.round(rng.random((5, 17)) * 0.8, 1)
    got = auc._rank_auc(pos, neg)
    y = np.r_[np.ones(13), np.zeros(17)]
    assert np.allclose(got, [roc_auc_score(y, np.r_[p, n]) for p, n in zip(pos, neg)])


@pytest.mark.shared
def test_real_camelyon16_patch_labels(shared_data, tmp_path):
    folder = shared_data / "camelyon16-patches"
    if not (folder / "labels.csv").is_file():
        pytest.skip("no Camelyon16 patches")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    assert len(files) == 89
    from_folders = auc.labels_from_folders(files)
    from_csv = auc.patch_labels(files, folder / "labels.csv")
    assert list(from_folders) == list(from_csv) and from_folders.sum() == 44
    # a score that is the patch's overlap with the NCRF tumour outline ranks tumour patches first
    import pandas as pd

    lab = pd.read_csv(folder / "labels.csv")
    pred = tmp_path / "pred.csv"
    pd.DataFrame({"path": lab["file"], "p_tumour": lab.iloc[:, -1].clip(0, 1)}).to_csv(pred, index=False)
    m, table = auc.evaluate_patches(pred, folder / "labels.csv", n_boot=100)
    assert m["n"] == 89 and m["n_positive"] == 44 and m["auc"] > 0.9
