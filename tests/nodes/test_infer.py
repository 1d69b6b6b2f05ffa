"""Tiled inference: blending without seams, bounded streaming equals in-memory, the U-Net predictor."""

from __future__ import annotations

import numpy as np
import pytest

from tmln.nodes import infer
from tmln.nodes.infer import array_reader, blend_window, predict_tiled


def red_channel(batch):
    """A pointwise 'model': probability = red / 255 (tiles (N, h, w, 3) -> (N, 1, h, w))."""
    return batch[:, None, :, :, 0].astype(np.float64) / 255.0


@pytest.mark.parametrize("shape", [(300, 517), (64, 64), (37, 250), (1, 1)])
def test_pointwise_model_is_reproduced_exactly(shape):
    img = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    out = predict_tiled(array_reader(img), shape, red_channel, tile=64, overlap=16, batch_size=3)
    assert out.shape == (1,) + shape
    np.testing.assert_allclose(out[0], img[..., 0] / 255.0, atol=1e-6)


def test_constant_input_gives_constant_output_across_tile_borders():
    img = np.full((333, 401, 3), 200, np.uint8)
    out = predict_tiled(array_reader(img), img.shape[:2], red_channel, tile=64, overlap=32)
    assert np.ptp(out) < 1e-6 and abs(out.mean() - 200 / 255) < 1e-6


def test_tile_edge_artefacts_are_blended_away():
    """A model that is wrong on an 8 px frame of every tile (like zero padding): no seams survive."""

    def framed(batch):
        p = np.ones((len(batch), 1) + batch.shape[1:3])
        p[:, :, :8], p[:, :, -8:], p[:, :, :, :8], p[:, :, :, -8:] = 0, 0, 0, 0
        return p

    out = predict_tiled(array_reader(np.zeros((300, 300, 3), np.uint8)), (300, 300), framed, tile=128, overlap=64)
    assert out.min() > 0.99


def test_two_channels_and_bad_predict_shape():
    img = np.zeros((100, 100, 3), np.uint8)
    two = predict_tiled(array_reader(img), (100, 100), lambda b: np.stack([b[..., 0], b[..., 1] + 1], 1) / 255.0,
                        tile=32, overlap=8, channels=2)
    assert two.shape == (2, 100, 100) and np.allclose(two[1], 1 / 255)
    with pytest.raises(ValueError, match="predict returned"):
        predict_tiled(array_reader(img), (100, 100), lambda b: np.zeros((len(b), 1, 8, 8)), tile=32, overlap=8)


def test_blend_window():
    w = blend_window(64, 16)
    assert w.min() > 0 and w.max() == 1 and np.allclose(w, w.T)


def test_array_reader_pads_with_glass():
    img = np.zeros((10, 10, 3), np.uint8)
    t = array_reader(img)(-2, 5, 6, 8)
    assert t.shape == (8, 6, 3)
    assert (t[:5, 2:] == 0).all() and (t[:, :2] == 255).all() and (t[5:] == 255).all()


def test_streamed_slide_equals_in_memory(tmp_path, monkeypatch):
    """Large slides are read tile by tile: the result equals reading the slide whole (a slide stored
    at the model's µm/px, so that neither read resamples)."""
    import torch

    from tmln.models.card import ModelCard
    from tmln.models.unet import build_unet
    import tifffile

    from tmln.slide import Slide

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (312, 375, 3), dtype=np.uint8)
    img[100:200, 100:250] = (120, 60, 160)
    path = tmp_path / "s.tiff"
    tifffile.imwrite(path, img, tile=(64, 64), photometric="rgb", resolution=(1e4 / 8.0, 1e4 / 8.0),
                     resolutionunit="CENTIMETER")
    with Slide(path) as s:
        whole = s.thumbnail(8.0)
        assert infer.slide_shape(s, 8.0) == whole.shape[:2] == (312, 375)
        a = predict_tiled(array_reader(whole), whole.shape[:2], red_channel, 64, 16)
        b = predict_tiled(infer.SlideReader(s, 8.0), whole.shape[:2], red_channel, 64, 16)
        np.testing.assert_allclose(a, b, atol=1e-6)
        c = predict_tiled(infer.SlideReader(s, 8.0, workers=2), whole.shape[:2], red_channel, 64, 16)
        np.testing.assert_array_equal(b, c)  # reader processes read the same tiles, in order
        torch.manual_seed(0)
        card = ModelCard(task="node-segmentation", architecture="unet:tu-mobilenetv3_small_050", mpp=8.0,
                         patch_size=64, classes=["node"],
                         params={"unet": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}, "overlap": 16})
        seg = infer.NodeSegmenter((build_unet(card).eval(), card))
        p_mem, rgb = seg.slide_probabilities(s)
        monkeypatch.setattr(infer, "IN_MEMORY_MAX_PX", 0)
        p_stream, rgb2 = seg.slide_probabilities(s)
    assert rgb is not None and rgb2 is None
    np.testing.assert_allclose(p_mem, p_stream, atol=1e-5)


def test_model_predictor_probabilities():
    import torch

    from tmln.models.card import ModelCard
    from tmln.models.unet import build_unet

    torch.manual_seed(0)
    card = ModelCard(task="node-segmentation", architecture="unet:tu-mobilenetv3_small_050", mpp=8.0, patch_size=32,
                     classes=["node", "node_core"], params={"unet": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}})
    net = build_unet(card).eval()
    seg = infer.NodeSegmenter((net, card), params={"min_node_area_mm2": 0.0})
    img = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    p = seg.probabilities(img)
    assert p.shape == (2, 50, 70) and p.min() >= 0 and p.max() <= 1
    lab = seg.instances(p)
    assert lab.shape == (50, 70) and lab.dtype == np.int32


def test_segmenter_drops_unsure_instances_as_its_card_says():
    """``min_node_probability`` in the card's params reaches the instances (NodeSegmenter.instances)."""
    import torch

    from tmln.models.card import ModelCard
    from tmln.models.unet import build_unet

    torch.manual_seed(0)
    yy, xx = np.mgrid[:120, :200]
    sure = (yy - 60) ** 2 + (xx - 50) ** 2 < 35 ** 2
    unsure = (yy - 60) ** 2 + (xx - 150) ** 2 < 35 ** 2
    node = np.where(sure, 0.97, np.where(unsure, 0.62, 0.02)).astype(np.float32)
    prob = np.stack([node, node])
    counts = {}
    for pmin in (0.0, 0.75):
        card = ModelCard(task="node-segmentation", architecture="unet:tu-mobilenetv3_small_050", mpp=8.0,
                         patch_size=32, classes=["node", "node_core"],
                         params={"unet": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
                                 "min_node_probability": pmin})
        seg = infer.NodeSegmenter((build_unet(card).eval(), card))
        assert seg.params.min_node_probability == pmin
        lab = seg.instances(prob)
        counts[pmin] = int(lab.max())
        assert lab[60, 50] > 0
    assert counts == {0.0: 2, 0.75: 1}
