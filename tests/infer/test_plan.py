"""tmln.infer.plan: output grids, needed cells, tiles and streamed strips."""

import numpy as np
import pytest

from tmln.infer.plan import (any_in_window, map_shape, plan_dense, plan_grid, runs, segments, strips,
                             tile_origins, tiles_over, trim_tiles)


def _equal_strips(need, cols, gap):
    """Reference plan: each column run cut into the fewest equal strips at most ``cols`` wide."""
    out = []
    for a, b in runs(np.flatnonzero(need.any(0)), gap):
        edges = np.linspace(a, b + 1, -(-(b - a + 1) // cols) + 1).round().astype(int)
        for c0, c1 in zip(edges[:-1], edges[1:]):
            out += segments(need, c0, c1, gap)
    return out


def _cells(segs, gap):
    return sum((nr + gap) * (nc + gap) for _, _, nr, nc in segs)


def test_strips_cover_needed_cells_withsegments():
    """Streaming segments: column runs cut into strips at most ``cols`` wide, rows split where the
    gap exceeds the margin, columns trimmed per segment; together they cover every needed cell."""
    need = np.zeros((40, 30), bool)
    need[2:6, 3:7] = True
    need[9:12, 4:6] = True  # 3 rows below: joined (gap <= 5)
    need[30:33, 1:3] = True  # far below: a segment of its own
    need[5, 9:15] = True  # columns 1..14 form one run of 14 columns -> two strips
    need[0, 25] = True  # 10 columns away: a run of its own
    segs = strips(need, 10, 5, step=1)
    assert sorted(segs) == [(0, 25, 1, 1), (2, 3, 10, 4), (5, 9, 1, 6), (30, 1, 3, 2)]
    assert strips(np.zeros((4, 4), bool), 10, 5) == []
    rng = np.random.default_rng(0)
    for trial in range(20):
        need = rng.random((60, 90)) < 0.02
        need[rng.integers(0, 40):, rng.integers(0, 60):][:15, :20] = True
        for step in (1, 4, 16):
            segs = strips(need, 12, 5, step=step)
            covered = np.zeros_like(need)
            for r0, c0, nr, nc in segs:
                assert nc <= 12
                covered[r0 : r0 + nr, c0 : c0 + nc] = True
            assert covered[need].all()
        assert _cells(strips(need, 12, 5, step=1), 5) <= _cells(_equal_strips(need, 12, 5), 5)


def test_strip_cuts_spend_fewer_cells_on_round_nodes():
    """A round node: cuts placed by the dynamic programme compute fewer cells than equal strips."""
    yy, xx = np.mgrid[:200, :200]
    need = (yy - 100) ** 2 + (xx - 100) ** 2 < 90**2
    dp, equal = _cells(strips(need, 128, 13), 13), _cells(_equal_strips(need, 128, 13), 13)
    assert dp < 0.97 * equal  # 4 % here; ~10 % over the nodes of a whole phantom slide


def test_tiles_are_trimmed_to_the_cells_they_produce():
    need = np.zeros((10, 10), bool)
    need[2:4, 3:5] = True  # inside the first 6x6 block
    need[7, 9] = True  # one cell in the last block
    tiles = trim_tiles(need, tiles_over(need, (6, 6)), (6, 6))
    assert tiles == [(2, 3, 2, 2), (7, 9, 1, 1)]
    covered = np.zeros_like(need)
    for r0, c0, nr, nc in tiles:
        covered[r0 : r0 + nr, c0 : c0 + nc] = True
    assert covered[need].all()




class _Slide:
    """What planning reads of a slide: level-0 size and µm/px."""

    def __init__(self, w, h, mpp):
        self.width, self.height, self.mpp_x, self.mpp_y = w, h, mpp, mpp


@pytest.mark.parametrize("patch, stride, origin", [(96, 32, 0.0), (224, 32, 0.0), (64, 32, -16.0)])
def test_dense_plan_centres_each_map_pixel_on_its_patch(patch, stride, origin):
    """Map pixel c pools cells [c - a, c - a + k): its patch is centred on the pixel's centre, so the
    map's origin is 0 for odd k and half a cell before the slide for even k."""
    plan = plan_dense(_Slide(1000, 600, 0.5), 1.0, patch, stride, (3, 3), 512)
    k, a = patch // stride, (patch // stride) // 2
    assert plan.pool == k and plan.pool_lo == a and plan.origin_model == origin
    c = 5
    patch_centre = stride * (c - a + k / 2)  # model px, from the cells' lattice
    pixel_centre = plan.origin_model + stride * (c + 0.5)
    assert patch_centre == pixel_centre
    assert plan.shape == map_shape(_Slide(1000, 600, 0.5), 1.0, stride, origin)
    assert plan.stride_level0 == (2 * stride, 2 * stride) and plan.origin_level0 == (2 * origin, 2 * origin)


def test_grid_plan_and_megapixels():
    plan = plan_grid(_Slide(1000, 1000, 1.0), 1.0, 96, None, 512)
    assert plan.stride == 48 and plan.shape == (21, 21)
    assert plan.kept == (9, 9) and plan.tile == (48 * 8 + 96, 48 * 8 + 96)
    plan.tiles = [(0, 0), (9, 0)]
    assert plan.model_mpx == 2 * plan.tile[0] * plan.tile[1] / 1e6


def test_any_in_window_marks_every_cell_a_pixel_pools():
    roi = np.zeros((5, 5), bool)
    roi[2, 2] = True
    e = any_in_window(roi, 1, 1)  # k = 3
    assert e.shape == (7, 7) and e.sum() == 9 and e[2:5, 2:5].all()


def test_tile_origins_cover_the_image_with_context():
    xs = tile_origins(200, 64, 16)
    assert xs[0] == -8 and all(b - a == 48 for a, b in zip(xs, xs[1:])) and xs[-1] + 64 - 8 >= 200
    with pytest.raises(ValueError, match="overlap"):
        tile_origins(100, 32, 32)
