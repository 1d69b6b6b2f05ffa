"""Patch sources: folders (aliases, RGBA, groups), slides + annotations (sampling inside tumour / tissue),
patient-level split, class balance, bad inputs."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tmln.errors import AnnotationError, SlideError, TmlnError
from tmln.train import patches as P

from .train_synth import NORMAL_RGB, make_patch_folder


def test_collect_patch_folder_groups_and_labels(patch_folder):
    ps = P.collect_patch_folder(patch_folder)
    assert len(ps.records) == 48
    assert ps.labels().sum() == 24
    assert set(ps.groups()) == {"slide0", "slide1", "slide2", "slide3"}


def test_aliases_rgba_and_resampling(tmp_path):
    root = tmp_path / "p"
    make_patch_folder(root, n_groups=2, per_group=2, rgba=True)
    (root / "tumor").rename(root / "Tumour")
    (root / "normal").rename(root / "negative")
    # a transparent pixel becomes white
    img = np.zeros((40, 40, 4), np.uint8)
    Image.fromarray(img).save(root / "negative" / "slide9_0_0.png")
    ps = P.collect_patch_folder(root, source_mpp=0.25)
    ds = P.PatchDataset(ps, range(len(ps.records)), mpp=0.5, patch_size=16)
    idx = [i for i, r in enumerate(ps.records) if r.source.endswith("slide9_0_0.png")][0]
    x, y = ds[idx]
    assert tuple(x.shape) == (16, 16, 3) and y == 0 and int(x.min()) == 255


def test_groups_csv(tmp_path):
    root = make_patch_folder(tmp_path / "p", n_groups=2, per_group=2)
    lines = ["file,patient_id"] + [f"{p.relative_to(root).as_posix()},PAT{p.name[5]}" for p in root.rglob("*.png")]
    (tmp_path / "g.csv").write_text("\n".join(lines) + "\n")
    ps = P.collect_patch_folder(root, groups_csv=tmp_path / "g.csv")
    assert set(ps.groups()) == {"PAT0", "PAT1"}


def test_source_prefix():
    assert P.source_prefix("tumor_001_69916_134313.png") == "tumor_001"
    assert P.source_prefix("S12-x1024-y2048.jpg") == "S12"
    assert P.source_prefix("plain.png") == "plain"


@pytest.mark.parametrize("case", ["empty", "missing_class", "no_images", "not_a_folder"])
def test_bad_patch_folders(tmp_path, case):
    root = tmp_path / "p"
    if case != "not_a_folder":
        root.mkdir()
    if case == "missing_class":
        make_patch_folder(root, n_groups=1, per_group=1)
        import shutil

        shutil.rmtree(root / "normal")
    if case == "no_images":
        (root / "tumor").mkdir()
        (root / "normal").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "tumor" / "a_1_1.png")
    with pytest.raises(TmlnError) as err:
        P.collect_patch_folder(root)
    msg = str(err.value)
    assert str(root) in msg
    if case == "missing_class":
        assert "normal" in msg
    if case == "no_images":
        assert "normal" in msg


def test_group_split_no_patient_on_both_sides():
    labels = np.array([0, 1] * 20)
    groups = np.array([f"g{i // 4}" for i in range(40)])
    tr, va = P.group_split(labels, groups, 0.25, seed=0)
    assert len(tr) + len(va) == 40 and len(va) > 0
    assert not set(groups[tr]) & set(groups[va])
    assert set(labels[va]) == {0, 1}
    tr0, va0 = P.group_split(labels, groups, 0.0)
    assert len(tr0) == 40 and len(va0) == 0
    with pytest.raises(TmlnError, match="at least 2"):
        P.group_split(labels, np.array(["one"] * 40), 0.25)


def test_balance_and_hard_negative_weights():
    labels = np.array([0] * 8 + [1] * 2)
    w = P.balance_weights(labels)
    assert np.isclose(w[labels == 0].sum(), 0.5) and np.isclose(w[labels == 1].sum(), 0.5)
    scores = np.linspace(0, 1, 10)
    hw = P.hard_negative_weights(labels, scores, top_fraction=0.25, boost=4)
    assert np.isclose(hw[labels == 0].sum(), 0.5)
    neg = np.nonzero(labels == 0)[0]
    assert hw[neg[-1]] == pytest.approx(4 * hw[neg[0]])  # highest-scoring negative oversampled


def test_collect_slides_samples_inside_tumour_and_tissue(slide_cohort):
    csv, adir = slide_cohort
    ps = P.collect_slides(csv, adir, mpp=1.0, patch_size=32, patches_per_class=20, seed=0)
    assert ps.kind == "slides" and len(ps.slides) == 4
    labels = ps.labels()
    assert (labels == 1).sum() == 80 and (labels == 0).sum() == 80
    ds = P.PatchDataset(ps, range(len(ps.records)), mpp=1.0, patch_size=32)
    for i in range(0, len(ds), 7):
        x, y = ds[i]
        px = x.numpy().reshape(-1, 3).astype(int)
        purple = (px[:, 0] < 160).mean()  # tumour pixels (R ~ 90); tissue R ~ 230, background 245
        pink = (np.abs(px - np.array(NORMAL_RGB)).max(1) < 45).mean()
        if y == 1:
            assert purple >= 0.45, (i, purple)  # >= 50 % tumour by construction (pixel-grid tolerance)
        else:
            assert purple == 0 and pink >= 0.45, (i, purple, pink)  # touches no tumour, mostly tissue
    assert set(ps.groups()) == {"P0", "P1", "P2", "P3"}
    # picklable for DataLoader workers
    import pickle

    ds2 = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(ds2[3][0].numpy(), ds[3][0].numpy())


def test_collect_slides_reserve_pool(slide_cohort):
    csv, adir = slide_cohort
    ps = P.collect_slides(csv, adir, mpp=1.0, patch_size=32, patches_per_class=10, negative_pool_factor=3, seed=0)
    main, reserve = P.split_reserve(ps.records)
    assert len(reserve) == 4 * 20 and all(ps.records[i].label == 0 for i in reserve)
    assert sum(ps.records[i].label == 0 for i in main) == 40


def test_missing_annotation_and_missing_slide(slide_cohort, tmp_path):
    csv, adir = slide_cohort
    (adir / "S3.geojson").unlink()
    with pytest.raises(AnnotationError, match="S3"):
        P.collect_slides(csv, adir, mpp=1.0, patch_size=32)
    # annotation for a slide whose file is missing
    (adir / "S3.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (csv.parent / "slides" / "S3.tif").unlink()
    with pytest.raises(SlideError, match="S3.tif"):
        P.collect_slides(csv, adir, mpp=1.0, patch_size=32)


def test_annotation_outside_slide(slide_cohort):
    from .train_synth import write_geojson_tumour

    csv, adir = slide_cohort
    write_geojson_tumour(adir / "S0.geojson", [[900, 900], [5000, 900], [5000, 5000]])
    with pytest.raises(AnnotationError, match="outside the slide"):
        P.collect_slides(csv, adir, mpp=1.0, patch_size=32)


def test_tumour_geometry_exclusions():
    from shapely.geometry import box

    from tmln.annotations import Annotation

    anns = [Annotation(box(0, 0, 100, 100), label="_0"), Annotation(box(10, 10, 20, 20), label="_2"),
            Annotation(box(200, 200, 210, 210), label="Ignore")]
    tum, ign = P.tumour_geometry(anns)
    assert tum.area == pytest.approx(100 * 100 - 100)
    assert ign.area == pytest.approx(100)


def test_dataloader_workers_open_their_own_slides(slide_cohort):
    import torch

    csv, adir = slide_cohort
    ps = P.collect_slides(csv, adir, mpp=1.0, patch_size=32, patches_per_class=4, seed=0)
    ds = P.PatchDataset(ps, range(len(ps.records)), mpp=1.0, patch_size=32)
    serial = torch.cat([x for x, _ in torch.utils.data.DataLoader(ds, batch_size=8)])
    assert ds._slides  # the main process opened slides while reading serially
    ds.close()
    par = torch.cat([x for x, _ in torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2)])
    assert torch.equal(serial, par)
    assert not ds._slides  # workers used their own handles


def test_real_camelyon_outlines_agree_with_patch_labels(shared_data):
    """NCRF JSON outlines (real Camelyon16) -> tumour geometry; the real patches' labels agree."""
    import pandas as pd
    from shapely.geometry import box

    from tmln.annotations import read_annotations

    ann_dir, patches = shared_data / "camelyon16-annotations", shared_data / "camelyon16-patches"
    if not (patches / "labels.csv").is_file() or not ann_dir.is_dir():
        pytest.skip("Camelyon16 data absent")
    labels = pd.read_csv(patches / "labels.csv")
    checked = 0
    for slide, rows in labels.groupby("camelyon16_slide"):
        path = P.find_annotation(ann_dir, slide.replace("tumor", "Tumor"))
        assert path is not None, slide
        tumour, _ = P.tumour_geometry(read_annotations(path))
        assert tumour.area > 0
        for r in rows.itertuples():
            frac = tumour.intersection(box(r.x_level0, r.y_level0, r.x_level0 + 256, r.y_level0 + 256)).area / 256**2
            assert frac == pytest.approx(r.tumor_fraction_vs_ncrf_polygon_if_xy_is_topleft, abs=0.01)
            checked += 1
    assert checked == 89


# ---------------------------------------------------------------------------- bad or unusual patch folders
def _folder(tmp_path, name="p"):
    return make_patch_folder(tmp_path / name, n_groups=2, per_group=2)


@pytest.mark.parametrize("case", ["not_an_image", "truncated_jpeg", "unknown_class", "val_missing_class",
                                  "val_unknown_class", "val_empty_class"])
def test_bad_patch_files_and_validation_folders_name_the_file(tmp_path, case):
    root = _folder(tmp_path)
    val = None
    if case == "not_an_image":
        bad = root / "tumor" / "notes.jpg"
        bad.write_text("this is text, not a JPEG")
    elif case == "truncated_jpeg":
        Image.fromarray(np.full((96, 96, 3), 120, np.uint8)).save(tmp_path / "full.jpg", quality=90)
        data = (tmp_path / "full.jpg").read_bytes()
        bad = root / "normal" / "cut_1_1.jpg"
        bad.write_bytes(data[: len(data) // 2])
    elif case == "unknown_class":
        (root / "stroma").mkdir()
        bad = root
    else:
        val = bad = _folder(tmp_path, "v")
        if case == "val_missing_class":
            import shutil

            shutil.rmtree(val / "normal")
        elif case == "val_unknown_class":
            (val / "lymphocytes").mkdir()
        else:
            for f in (val / "tumor").iterdir():
                f.unlink()
    with pytest.raises(TmlnError) as err:
        P.collect_patch_folder(root, val_folder=val)
    msg = str(err.value)
    assert str(bad) in msg
    if case == "truncated_jpeg" or case == "not_an_image":
        assert "cannot decode image" in msg
    if case.startswith("val_") and case != "val_empty_class":
        assert "validation patch folder" in msg
    if "unknown" in case:
        assert "no class tmln knows" in msg


def test_greyscale_rgba_and_mixed_sizes_are_handled_and_noted(tmp_path):
    """Documented handling: greyscale -> RGB, RGBA composited on white, other sizes resampled /
    cropped / padded to the patch; mixed sizes are listed in the notes (and so in the card)."""
    root = _folder(tmp_path)
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(root / "tumor" / "grey_1_1.png")
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 0
    Image.fromarray(rgba).save(root / "normal" / "alpha_1_1.png")
    ps = P.collect_patch_folder(root)
    assert ps.notes and "2 sizes" in ps.notes[0] and "40x40" in ps.notes[0] and "64x64" in ps.notes[0]
    ds = P.PatchDataset(ps, range(len(ps.records)), mpp=0.5, patch_size=32)
    by_name = {Path(r.source).name: i for i, r in enumerate(ps.records)}
    grey = ds.read(by_name["grey_1_1.png"])
    alpha = ds.read(by_name["alpha_1_1.png"])
    assert grey.shape == (32, 32, 3) and (grey == 90).all()
    assert alpha.shape == (32, 32, 3) and (alpha == 255).all()


def test_validation_folder_records_are_marked_and_grouped_apart(tmp_path):
    root, val = _folder(tmp_path), _folder(tmp_path, "v")
    ps = P.collect_patch_folder(root, val_folder=val)
    splits = [r.split for r in ps.records]
    assert splits.count("validation") == 8 and splits.count("train") == 8
    tr = {r.group for r in ps.records if r.split == "train"}
    va = {r.group for r in ps.records if r.split == "validation"}
    assert not tr & va  # same file names, never the same group
