"""Node instances from a node mask: hole filling, touching-node splitting, minimum area.

N stage counts nodes, so two nodes that touch on the slide must become two instances. Splitting is
a marker-controlled watershed (scikit-image) inside the node mask:

* by shape: markers are ``peak_local_max`` of the (lightly smoothed) Euclidean distance to the
  background, at least ``min_distance_um`` apart; two resulting regions are merged again when the
  neck between them is wide: the largest distance on their common border is at least
  ``neck_ratio`` times the smaller of their two peak distances (an elongated or bean-shaped node
  has a flat distance ridge, two touching round nodes a waist);
* by the model, when it has a ``node_core`` channel (the node minus a thin band along borders
  shared with another node: the network sees the two capsules): one marker per core.

A boundary found by either cue is kept (the two partitions are intersected).

All lengths are in µm and converted with the mask's µm/px, so the parameters do not depend on the
resolution the model runs at. Labels are int32, 0 = background, 1..n in (top, left) order of their
first pixel; every instance is one 4-connected component.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass
class InstanceParams:
    """Post-processing parameters (stored in the model card's ``params``).

    min_node_area_mm2 : instances smaller than this are dropped (fragments are merged first).
    fill_holes : fill holes inside nodes (tumour or sinus that the model missed inside a node).
    split_touching : split touching nodes into instances (False: one instance per connected region).
    min_distance_um : distance-transform markers are at least this far apart.
    neck_ratio : merge two distance-based regions when border distance >= ratio * min(peaks).
    smooth_um : Gaussian sigma applied to the distance map before finding peaks.
    min_core_area_mm2 : learned core markers smaller than this are ignored.
    """

    min_node_area_mm2: float = 0.05
    fill_holes: bool = True
    split_touching: bool = True
    min_distance_um: float = 150.0
    neck_ratio: float = 0.8
    smooth_um: float = 8.0
    min_core_area_mm2: float = 0.02

    @classmethod
    def from_dict(cls, d: dict | None) -> "InstanceParams":
        d = d or {}
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


def _px_area(mm2: float, mpp: float) -> float:
    return float(mm2) * 1e6 / (mpp * mpp)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every hole (background not connected to the border) in a binary mask."""
    return ndi.binary_fill_holes(np.asarray(mask, bool))


def remove_small(labels: np.ndarray, min_area_px: float) -> np.ndarray:
    """Set instances smaller than ``min_area_px`` to background (labels keep their values)."""
    labels = np.asarray(labels)
    if min_area_px <= 0 or labels.max() == 0:
        return labels.copy()
    counts = np.bincount(labels.ravel())
    small = counts < min_area_px
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return out


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Labels 1..n in order of each instance's first pixel (row-major), int32."""
    labels = np.asarray(labels)
    flat = labels.ravel()
    values, first = np.unique(flat, return_index=True)
    keep = values != 0
    values, first = values[keep], first[keep]
    order = values[np.argsort(first)]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[labels]


def keep_largest_part(labels: np.ndarray) -> np.ndarray:
    """Each instance keeps only its largest 4-connected part (so it is one polygon)."""
    out = np.asarray(labels).copy()
    for k, sl in enumerate(ndi.find_objects(out), start=1):
        if sl is None:
            continue
        sub = out[sl] == k
        parts, n = ndi.label(sub)
        if n <= 1:
            continue
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        drop = sub & (parts != int(np.argmax(sizes)))
        view = out[sl]
        view[drop] = 0
    return out


def merge_fragments(labels: np.ndarray, min_area_px: float) -> np.ndarray:
    """Merge instances smaller than ``min_area_px`` into the touching instance with which they share
    the longest border; isolated small instances are left for ``remove_small``."""
    out = np.asarray(labels).copy()
    if min_area_px <= 0 or out.max() == 0:
        return out
    for _ in range(8):  # a fragment may touch only other fragments at first
        counts = np.bincount(out.ravel())
        small = [k for k in np.nonzero((counts > 0) & (counts < min_area_px))[0] if k != 0]
        if not small:
            break
        pairs = _adjacent_pairs(out)
        changed = False
        for k in small:
            border = {}
            for (a, b), n in pairs.items():
                if a == k and b != k:
                    border[b] = border.get(b, 0) + n
                elif b == k and a != k:
                    border[a] = border.get(a, 0) + n
            if not border:
                continue
            target = max(border, key=lambda t: (border[t], -t))
            out[out == k] = target
            pairs = _adjacent_pairs(out)
            changed = True
        if not changed:
            break
    return out


def _adjacent_pairs(labels: np.ndarray) -> dict:
    """{(a, b): number of 4-neighbour pixel pairs} for touching labels a < b (both > 0)."""
    res: dict = {}
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        m = (a != b) & (a > 0) & (b > 0)
        if not m.any():
            continue
        lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
        keys, n = np.unique(np.stack([lo, hi], 1), axis=0, return_counts=True)
        for (x, y), c in zip(keys.tolist(), n.tolist()):
            res[(x, y)] = res.get((x, y), 0) + c
    return res


def distance_markers(mask: np.ndarray, mpp: float, min_distance_um: float = 150.0, smooth_um: float = 8.0):
    """Markers (labels) at the peaks of the smoothed distance transform; returns (markers, distance).

    Every connected component gets at least one marker (its distance maximum)."""
    from skimage.feature import peak_local_max

    mask = np.asarray(mask, bool)
    dist = ndi.distance_transform_edt(mask)
    if smooth_um > 0:
        dist_s = ndi.gaussian_filter(dist, sigma=smooth_um / mpp) * mask
    else:
        dist_s = dist
    comps, n = ndi.label(mask)
    md = max(1, int(round(min_distance_um / mpp)))
    peaks = peak_local_max(dist_s, min_distance=md, labels=comps, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    for i, (r, c) in enumerate(peaks, start=1):
        markers[r, c] = i
    # components without a peak (tiny or flat): one marker at their distance maximum
    have = np.zeros(n + 1, bool)
    have[comps[markers > 0]] = True
    nxt = len(peaks) + 1
    for k in np.nonzero(~have[1:])[0] + 1:
        idx = ndi.maximum_position(dist_s, comps, k)
        markers[idx] = nxt
        nxt += 1
    return markers, dist_s


def merge_wide_necks(labels: np.ndarray, dist: np.ndarray, neck_ratio: float) -> np.ndarray:
    """Merge touching regions whose common border is not a waist (see module docstring)."""
    labels = np.asarray(labels)
    if labels.max() < 2 or neck_ratio <= 0:
        return labels.copy()
    peak = ndi.maximum(dist, labels, np.arange(labels.max() + 1))
    peak = np.asarray(peak, float)
    saddle: dict = {}
    for a, b, da, db in (
        (labels[:, :-1], labels[:, 1:], dist[:, :-1], dist[:, 1:]),
        (labels[:-1, :], labels[1:, :], dist[:-1, :], dist[1:, :]),
    ):
        m = (a != b) & (a > 0) & (b > 0)
        if not m.any():
            continue
        lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
        v = np.minimum(da[m], db[m])
        for x, y, s in zip(lo.tolist(), hi.tolist(), v.tolist()):
            if s > saddle.get((x, y), -1.0):
                saddle[(x, y)] = s
    parent = list(range(int(labels.max()) + 1))
    top = peak.copy()

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # widest necks first (relative to the smaller region), union-find with updated peaks
    order = sorted(saddle.items(), key=lambda kv: -kv[1] / max(1e-9, min(peak[kv[0][0]], peak[kv[0][1]])))
    for (x, y), s in order:
        rx, ry = find(x), find(y)
        if rx == ry:
            continue
        if s >= neck_ratio * min(top[rx], top[ry]):
            parent[ry] = rx
            top[rx] = max(top[rx], top[ry])
    lut = np.array([find(i) for i in range(len(parent))], np.int32)
    return lut[labels]


def split_touching(mask: np.ndarray, mpp: float, core: np.ndarray | None = None,
                   params: InstanceParams | None = None) -> np.ndarray:
    """Binary node mask at ``mpp`` µm/px -> instance labels (touching nodes split by watershed).

    core : optional binary map of node cores (learned markers); without it the markers come from
        the distance transform. With ``params.split_touching = False`` the result is the labelled
        connected components.
    """
    from skimage.segmentation import watershed

    p = params or InstanceParams()
    mask = np.asarray(mask, bool)
    if not p.split_touching or not mask.any():
        return ndi.label(mask)[0].astype(np.int32)
    markers, dist_s = distance_markers(mask, mpp, p.min_distance_um, p.smooth_um)
    labels = watershed(-dist_s, markers, mask=mask)
    labels = merge_wide_necks(labels, dist_s, p.neck_ratio)
    if core is not None:
        core_mask = np.asarray(core, bool) & mask
        cmarkers, _ = ndi.label(core_mask)
        cmarkers = remove_small(cmarkers, _px_area(p.min_core_area_mm2, mpp))
        # regions of the mask without any core marker keep their own component label
        comps, nc = ndi.label(mask)
        have = np.zeros(nc + 1, bool)
        have[comps[cmarkers > 0]] = True
        extra = np.where(~have[comps] & mask, comps + int(cmarkers.max()), 0)
        cmarkers = np.where(cmarkers > 0, cmarkers, extra).astype(np.int32)
        by_core = watershed(-dist_s, cmarkers, mask=mask)
        # a node boundary from either cue is kept: intersect the two partitions
        pair = labels.astype(np.int64) * (int(by_core.max()) + 1) + by_core
        _, inv = np.unique(pair.ravel(), return_inverse=True)
        labels = np.where(mask, inv.reshape(mask.shape), 0)
    return labels.astype(np.int32)


def instances_from_mask(mask: np.ndarray, mpp: float, core: np.ndarray | None = None,
                        params: InstanceParams | None = None) -> np.ndarray:
    """The full post-processing: fill holes, split touching nodes, merge fragments, drop small
    instances, one 4-connected part per instance, labels 1..n. ``mask`` at ``mpp`` µm/px."""
    p = params or InstanceParams()
    mask = np.asarray(mask, bool)
    if p.fill_holes:
        mask = fill_holes(mask)
    labels = split_touching(mask, mpp, core=core, params=p)
    min_px = _px_area(p.min_node_area_mm2, mpp)
    if p.split_touching:
        labels = merge_fragments(labels, min_px)
    labels = keep_largest_part(labels)
    labels = remove_small(labels, min_px)
    return relabel_sequential(labels)

