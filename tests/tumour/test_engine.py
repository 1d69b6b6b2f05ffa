"""The dense tumour-map engine: fully convolutional equivalence, seamless tiling, masks, geometry.

Most tests use a one-block-per-stage torchvision ResNet (same code path as ResNet-18, a quarter of
the cost) passed as ``(module, card)``; slides are lossless TIFFs written in the test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from shapely.geometry import box

from tmln.errors import TmlnError
from tmln.models.classifier import build_classifier
from tmln.slide import Slide
from tmln.tumour.dense import dense_form, receptive_field
from tmln.tumour import ProbabilityMap, tumour_map

from .helpers import card, small_resnet, texture, write_slide


def _reference_map(img: np.ndarray, module, k: int, pad_cells: int = 10) -> np.ndarray:
    """Independent reference: the dense form on the whole slide at once (white canvas around it),
    k×k mean of cell logits per output pixel, sigmoid. Slide at the model's µm/px, k odd."""
    h, w, _ = img.shape
    s = 32
    ny, nx = -(-h // s), -(-w // s)
    p = pad_cells * s
    canvas = np.full((ny * s + 2 * p, nx * s + 2 * p, 3), 255, np.uint8)
    canvas[p : p + h, p : p + w] = img
    x = torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        cells = dense_form(module, fuse_bn=False)((x - mean) / std)[0, 0]
    a = (k - 1) // 2
    out = np.empty((ny, nx), np.float32)
    for r in range(ny):
        for c in range(nx):
            win = cells[pad_cells + r - a : pad_cells + r - a + k, pad_cells + c - a : pad_cells + c - a + k]
            out[r, c] = torch.sigmoid(win.mean())
    return out


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "densenet121"])
def test_dense_form_mean_of_cells_is_patch_logit(arch):
    """Exact identity: on one patch, the mean of the 1×1-conv head over the feature cells equals the
    classifier's logit (global average pooling and the linear head commute). Tolerance 1e-4."""
    torch.manual_seed(0)
    net = build_classifier(arch).eval()
    form = dense_form(net)
    assert form is not None
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        assert torch.allclose(form(x).mean((2, 3)), net(x), atol=1e-4)


def test_unsupported_architectures_have_no_dense_form():
    # squeeze-and-excitation (global context inside the features) and non-linear heads are not equivalent
    assert dense_form(build_classifier("efficientnet_b0").eval()) is None
    assert dense_form(build_classifier("mobilenet_v3_small").eval()) is None


def test_receptive_field_of_resnet18():
    net = build_classifier("resnet18").eval()
    rf = receptive_field(dense_form(net, fuse_bn=False).features)
    assert (rf.size, rf.stride, rf.start) == (435, 32, 0.0)
    assert rf.margins() == (7, 6)  # cells 217 px left / 218 px right of their centre pixel


@pytest.mark.parametrize("method", ["stream", "dense"])
def test_tiling_is_exact_and_matches_whole_slide_reference(tmp_path, method):
    """No seams: maps from three tile (dense) or strip (stream) widths are identical, and equal the
    dense form applied to the whole slide at once (so coordinates, margins, stitching and pooling
    are right). Tol 1e-5."""
    img = texture(360, 400, seed=1)
    path = write_slide(tmp_path / "s.tif", img, 0.5)
    net, c = small_resnet(), card(patch=96)  # k = 3
    maps = [tumour_map(path, (net, c), mask=None, tile_size=t, num_workers=0, device="cpu", method=method, precision="fp32").array
            for t in (320, 480, 2048)]
    assert maps[0].shape == (12, 13)
    assert np.abs(maps[0] - maps[1]).max() < 1e-5 and np.abs(maps[0] - maps[2]).max() < 1e-5
    ref = _reference_map(img, net, k=3)
    assert np.abs(maps[0] - ref).max() < 1e-5


def test_streaming_equals_tiles_and_pays_the_margin_once(tmp_path):
    """The streamed engine gives the tiled engine's map (tol 1e-5) through far fewer model pixels:
    one segment instead of many tiles each recomputing its margins."""
    img = texture(640, 576, seed=4)
    path = write_slide(tmp_path / "t.tif", img, 0.5)
    net, c = small_resnet(), card(patch=96)
    tiled = tumour_map(path, (net, c), mask=None, tile_size=320, num_workers=0, device="cpu", method="dense",
                       precision="fp32")
    streamed = tumour_map(path, (net, c), mask=None, tile_size=2048, num_workers=0, device="cpu", precision="fp32")
    assert streamed.info["method"] == "stream" and tiled.info["method"] == "dense"
    assert np.abs(streamed.array - tiled.array).max() < 1e-5
    assert streamed.info["tiles"] == 1 and tiled.info["tiles"] >= 16
    assert streamed.info["model_mpx"] < 0.5 * tiled.info["model_mpx"]


@pytest.mark.parametrize("method", ["stream", "dense"])
def test_constant_slide_gives_constant_map(tmp_path, method):
    """A constant-colour slide: every output pixel whose receptive field lies inside the slide has the
    same value, across many tile / strip borders (10 cells wide, 3 kept)."""
    img = np.zeros((512, 512, 3), np.uint8)
    img[:] = (200, 120, 170)
    path = write_slide(tmp_path / "c.tif", img, 0.5)
    pm = tumour_map(path, (small_resnet(), card(patch=96)), mask=None, tile_size=320, num_workers=0, device="cpu",
                    method=method, precision="fp32")
    assert pm.info["tiles"] >= (9 if method == "dense" else 6)
    inner = pm.array[5:-5, 5:-5]  # 5 cells: receptive field (195 px) + pooling window clear of the slide edge
    assert inner.size >= 36 and np.ptp(inner) < 1e-6
    assert np.ptp(pm.array) > 1e-4  # the edges do differ (white beyond the slide): the check can fail


def _probe_model(img_a, img_b):
    """The small ResNet with its linear head set to separate two textures (logits about ±3): a
    stand-in for a trained classifier whose output varies strongly across the slide."""
    net = small_resnet()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats = []
    for im in (img_a, img_b):
        x = (torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255 - mean) / std
        with torch.inference_mode():
            body = torch.nn.Sequential(*list(net.children())[:-1])
            feats.append(body(x).flatten(1)[0])
    d = feats[0] - feats[1]
    w = 6 * d / d.dot(d)
    with torch.no_grad():
        net.fc.weight.copy_(w[None])
        net.fc.bias.fill_(float(-w.dot((feats[0] + feats[1]) / 2)))
    return net


def test_dense_agrees_with_patchwise_classification(tmp_path):
    """Dense (fully convolutional) vs grid (the patch classifier itself, one 224 px patch per output
    pixel) at the same grid points. The patches are identical; the outputs differ by border effects
    only (zero padding at the patch edge vs the real surrounding tissue). For a random-feature
    network these are NOT small: on a two-texture slide with a linear-probe head fit on padded
    patches, measured r = 0.94 (the maps agree in shape) but mean |dP| = 0.24 with a systematic
    offset (thresholded labels agree on 69 %): calibration differs. Tolerances: r > 0.85 and
    mean |dP| < 0.3 (a one-cell misalignment or a wrong pooling window fails them)."""
    tum = texture(384, 192, seed=2, cell=12)
    tum[..., 1] //= 2  # purple, fine
    nor = texture(384, 192, seed=3, cell=40)
    nor[..., 2] = np.minimum(nor[..., 2], 180)
    img = np.concatenate([tum, nor], axis=1)
    path = write_slide(tmp_path / "two.tif", img, 0.5)
    net, c = _probe_model(tum[:224, :224], nor[:224, :224]), card(patch=224)
    band = [box(0, 4 * 32, 384, 8 * 32)]  # output rows 4..7, all columns: the grid method is costly
    d = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32").array[4:8]
    g = tumour_map(path, (net, c), mask="nodes", node_polygons=band, method="grid", grid_stride=32, num_workers=0,
                   device="cpu", precision="fp32").array[4:8]
    assert d.shape == g.shape == (4, 12) and not np.isnan(g).any()
    diff = np.abs(d - g)
    print(f"mean |dP| {diff.mean():.3f}, label agreement {((d >= 0.5) == (g >= 0.5)).mean():.3f}, "
          f"r {np.corrcoef(d.ravel(), g.ravel())[0, 1]:.3f}")
    assert diff.mean() < 0.3
    assert np.corrcoef(d.ravel(), g.ravel())[0, 1] > 0.85
    assert g[:, :3].mean() > 0.8 and g[:, 6:].min() < 0.3  # the probe does separate the halves


def test_grid_pixel_is_patch_classifier_at_its_centre(tmp_path):
    """Grid method coordinates: output pixel (r, c) is the classifier on the patch centred on the
    pixel's centre (origin + (c + 0.5) * stride). Tolerance 1e-5."""
    img = texture(300, 300, seed=4)
    path = write_slide(tmp_path / "g.tif", img, 0.5)
    net, c = small_resnet(), card(patch=64)
    pm = tumour_map(path, (net, c), mask=None, method="grid", grid_stride=40, num_workers=0, device="cpu", precision="fp32")
    assert pm.shape == (8, 8) and pm.origin == (0.0, 0.0) and pm.mpp == pytest.approx(20.0)
    canvas = np.full((300 + 128, 300 + 128, 3), 255, np.uint8)
    canvas[64:364, 64:364] = img
    for r, cc in [(0, 0), (3, 5), (7, 7)]:
        cx, cy = 40 * cc + 20, 40 * r + 20
        patch = canvas[64 + cy - 32 : 64 + cy + 32, 64 + cx - 32 : 64 + cx + 32]
        x = (torch.from_numpy(patch).permute(2, 0, 1)[None].float() / 255
             - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        with torch.inference_mode():
            p = torch.sigmoid(net(x))[0, 0].item()
        assert pm.array[r, cc] == pytest.approx(p, abs=1e-5)


def test_geometry_at_other_slide_resolution(tmp_path):
    """A 0.25 µm/px slide, model at 0.5 µm/px: map shape from slide size and stride, µm/px of the map,
    level-0 origin; tiles are read downsampled (same map as the slide written at 0.5 µm/px)."""
    img = texture(320, 384, seed=5)
    fine = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)  # the same tissue at 0.25 µm/px
    p_fine = write_slide(tmp_path / "fine.tif", fine, 0.25)
    p_coarse = write_slide(tmp_path / "coarse.tif", img, 0.5)
    net, c = small_resnet(), card(patch=96)
    a = tumour_map(p_fine, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32", tile_size=320)
    b = tumour_map(p_coarse, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32", tile_size=320)
    assert a.shape == (10, 12) and a.mpp == pytest.approx(16.0) and a.scale == pytest.approx((64.0, 64.0))
    assert a.origin == (0.0, 0.0) and b.scale == pytest.approx((32.0, 32.0))
    assert np.abs(a.array - b.array).max() < 1e-5
    # an even patch (64 px = 2 cells) is centred on a cell corner: the map starts half a pixel earlier
    e = tumour_map(p_fine, (net, card(patch=64)), mask=None, num_workers=0, device="cpu", precision="fp32", tile_size=320)
    assert e.origin == pytest.approx((-32.0, -32.0)) and e.shape == (11, 13)


def test_masks_are_respected(tmp_path):
    """Outside the region of interest the map is NaN; inside it equals the unmasked map (the mask
    only chooses which tiles are read)."""
    img = texture(480, 480, seed=6)
    path = write_slide(tmp_path / "m.tif", img, 0.5)
    net, c = small_resnet(), card(patch=96)
    full = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32", tile_size=320)
    node = box(40, 60, 200, 180)  # level-0 px
    pm = tumour_map(path, (net, c), mask="nodes", node_polygons=[node], num_workers=0, device="cpu", precision="fp32", tile_size=320)
    inside = ~np.isnan(pm.array)
    rows, cols = np.nonzero(inside)
    assert rows.min() == 60 // 32 and rows.max() == 179 // 32 and cols.min() == 40 // 32 and cols.max() == 199 // 32
    assert inside.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert np.abs(pm.array[inside] - full.array[inside]).max() < 1e-5
    assert pm.info["model_mpx"] < full.info["model_mpx"]
    # a tissue mask (here given directly: 8 µm/px, tissue in the lower-right quarter)
    tmask = np.zeros((30, 30), bool)
    tmask[15:, 15:] = True
    tm = tumour_map(path, (net, c), mask="tissue", tissue=(tmask, 8.0), num_workers=0, device="cpu", precision="fp32", tile_size=320)
    assert np.isnan(tm.array[:6, :]).all() and np.isnan(tm.array[:, :6]).all()
    assert not np.isnan(tm.array[9:, 9:]).any()
    with pytest.raises(Exception, match="node polygons"):
        tumour_map(path, (net, c), mask="nodes", num_workers=0, device="cpu", precision="fp32")


def test_outputs_written_and_deterministic_with_workers(tmp_path):
    img = texture(256, 256, seed=7)
    path = write_slide(tmp_path / "w.tif", img, 0.5)
    net, c = small_resnet(), card(patch=96)
    a = tumour_map(path, (net, c), mask=None, out_dir=tmp_path / "out", num_workers=0, device="cpu", precision="fp32", tile_size=256)
    b = tumour_map(Slide(path), (net, c), mask=None, num_workers=1, device="cpu", precision="fp32", tile_size=256)
    assert np.array_equal(a.array, b.array)  # reader processes change nothing
    side = json.loads((tmp_path / "out" / "tumour_map.json").read_text())
    assert side["mpp"] == 16.0 and side["origin_px"] == [0.0, 0.0] and side["shape"] == [8, 8]
    assert side["threshold"] == 0.5 and side["method"] == "stream"
    assert (tmp_path / "out" / "tumour_map.png").read_bytes()[:4] == b"\x89PNG"
    back = ProbabilityMap.load(tmp_path / "out")
    assert np.array_equal(back.array, a.array) and back.mpp == a.mpp
    assert not list((tmp_path / "out").glob(".*tmp*"))  # no temporaries left


def test_missing_mpp_is_an_error(tmp_path):
    import tifffile

    from tmln.errors import MissingMppError

    p = tmp_path / "nompp.tif"
    tifffile.imwrite(p, texture(64, 64), photometric="rgb", tile=(64, 64), metadata=None)
    with pytest.raises(MissingMppError):
        tumour_map(p, (small_resnet(), card(patch=64)), mask=None, num_workers=0, device="cpu", precision="fp32")


def test_bf16_map_is_close_to_float32_and_recorded(tmp_path):
    path = write_slide(tmp_path / "s.tif", texture(400, 300, seed=4), 1.0)
    net, c = small_resnet(), card(patch=64)
    a = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32")
    b = tumour_map(path, (net, c), mask=None, out_dir=tmp_path / "o", num_workers=0, device="cpu", precision="bf16")
    assert a.info["precision"] == "float32" and b.info["precision"] == "bfloat16"
    assert 0 < np.abs(a.array - b.array).max() < 0.02  # bf16 really ran, and stays close
    saved = ProbabilityMap.load(tmp_path / "o").info
    assert saved["precision"] == "bfloat16" and saved["reader"] == "tifffile"  # tiles decoded directly


def test_network_the_streamer_refuses_falls_back_to_tiles(tmp_path):
    """ceil_mode pooling mixes rows in a way the row executor cannot reproduce: method="stream" says
    so, method="auto" tiles instead (and still gives the dense map)."""
    path = write_slide(tmp_path / "s.tif", texture(256, 192, seed=6), 1.0)
    net, c = small_resnet(), card(patch=64)
    net.maxpool = torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    with pytest.raises(TmlnError, match="stream.*ceil_mode"):
        tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", method="stream", precision="fp32")
    auto = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32")
    tiles = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", method="dense", precision="fp32")
    assert auto.info["method"] == "dense" and np.array_equal(auto.array, tiles.array)


@pytest.mark.parametrize("slide_mpp", [0.5, 0.25, 1.5])
def test_96px_classifier_at_097_is_streamed_on_slides_of_any_resolution(tmp_path, slide_mpp):
    """A PCam-geometry classifier (96 px at 0.97 µm/px, as ``pcam-tumour``) runs fully
    convolutionally (streamed, not the grid fallback) on slides finer and coarser than its µm/px,
    non-integer factors included: the map equals the dense form applied at once to the slide
    resampled to 0.97 µm/px (``Slide.thumbnail``), on every interior cell, to 1e-5 in float32."""
    side_um = 500.0
    n = int(round(side_um / slide_mpp))
    img = texture(n, n, seed=7, cell=max(4, int(round(12 * 0.97 / slide_mpp))))
    path = write_slide(tmp_path / f"s{slide_mpp}.tif", img, slide_mpp)
    net, c = small_resnet(seed=3), card(mpp=0.97, patch=96)
    pm = tumour_map(path, (net, c), mask=None, num_workers=0, device="cpu", precision="fp32", tile_size=320)
    assert pm.info["method"] == "stream" and pm.info["pool_cells"] == 3
    assert pm.mpp == pytest.approx(32 * 0.97)
    resampled = Slide(path).thumbnail(0.97)
    ref = _reference_map(resampled, net, k=3)
    assert pm.shape == ref.shape
    lo = 5  # cells whose 195 px receptive field (+ the 3-cell pool) stays a cell clear of the slide's edge
    inner = (slice(lo, ref.shape[0] - lo), slice(lo, ref.shape[1] - lo))
    assert ref[inner].size >= 25
    assert np.abs(pm.array[inner] - ref[inner]).max() < 1e-5


def test_a_models_forms_are_built_once_and_rebuilt_when_its_weights_change(tmp_path, monkeypatch):
    """A cohort maps every slide with one model: the dense and streamed forms are kept for the last model
    (tmln.tumour.engine._cached), and changed weights are never served from the old forms."""
    import os

    from tmln.models.card import save_model_dir
    from tmln.tumour import engine

    path = write_slide(tmp_path / "c.tif", texture(256, 256, seed=5), 0.5)
    net, c = small_resnet(), card(patch=96)
    builds, loads = [], []
    real_forms, real_load = engine._forms, engine.load_classifier
    monkeypatch.setattr(engine, "_forms", lambda *a: builds.append(1) or real_forms(*a))
    monkeypatch.setattr(engine, "load_classifier", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    kw = dict(mask=None, num_workers=0, device="cpu", precision="fp32")
    a = tumour_map(path, (net, c), **kw)
    assert np.array_equal(tumour_map(path, (net, c), **kw).array, a.array) and len(builds) == 1
    with torch.no_grad():
        net.fc.bias.add_(2.0)  # the same module, new weights (one output: sigmoid)
    b = tumour_map(path, (net, c), **kw)
    assert len(builds) == 2 and np.nanmin(b.array - a.array) > 0.05  # the new weights' map
    fresh = small_resnet()
    fresh.load_state_dict(net.state_dict())
    assert np.array_equal(tumour_map(path, (fresh, c), **kw).array, b.array) and len(builds) == 3

    d = save_model_dir(tmp_path / "model", build_classifier("resnet18", 1).state_dict(), c)
    tumour_map(path, d, **kw)
    tumour_map(path, d, **kw)
    assert len(loads) == 1  # a model directory is loaded once while its files are unchanged
    w = next(p for p in d.iterdir() if p.suffix == ".safetensors")
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 10 ** 9))
    tumour_map(path, d, **kw)
    assert len(loads) == 2
