"""Node instances from a node mask: hole filling, touching-node splitting, minimum area and confidence.

N stage counts nodes, so two nodes that touch on the slide must become two instances. Splitting is
a marker-controlled watershed (scikit-image) inside the node mask, then a merge of the regions it
over-produced, decided per common border from two cues:

* shape: the Euclidean distance to the background (lightly smoothed) has a *waist* on the border
  between two touching round nodes: its largest value on the border (the saddle) is smaller than
  the smaller of the two regions' peaks. ``r = saddle / min(peaks)`` is ~1 for any cut through one
  convex node and < 1 for two nodes;
* the model, when it has a ``node_core`` channel (the node minus a thin band along borders shared
  with another node: the network sees the two capsules). Regions are grown from the peaks of the
  distance to the edge of the (smoothed, thresholded) cores, so borders run along the learned band,
  and ``gap`` = mean of ``1 - core probability`` along a border measures how much the band supports it.

A border is kept (two instances) when ``r < neck_ratio`` (a clear waist: the shape alone), or when
``gap >= core_gap_min`` and ``r < core_neck_ratio`` (the learned band and at least a slight waist),
or when ``gap >= core_gap_strong`` (the band alone); otherwise the two regions merge, widest necks
first. The waist requirement makes a noisy core channel (short training, unfamiliar stain) harmless:
holes in the cores inside one convex node never split it.

Last, two instance-level rules drop what a pathologist would not count as a node: instances smaller
than ``min_node_area_mm2`` (mm²), and, when the model's node probabilities are given, instances whose
mean node probability (over the pixels the model called node, not filled holes) is below
``min_node_probability`` (a probability, 0-1: islands of septa, vessels
or other tissue that the model finds only half node-like). Both are read from the model card; the
probability rule is off (0) unless the card sets it (pcam-nodes does; demo-nodes does not).

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

    min_node_area_mm2 : instances smaller than this (mm²) are dropped (fragments are merged first).
    min_node_probability : instances whose mean node probability (0-1, over the instance's pixels the
        model called node, not its filled holes) is below this are dropped; applies when
        ``instances_from_mask`` is given the probabilities
        (0: off, the default, so models whose card does not set it behave as before).
    fill_holes : fill holes inside nodes (tumour or sinus that the model missed inside a node).
    split_touching : split touching nodes into instances (False: one instance per connected region).
    min_distance_um : watershed markers (distance peaks) are at least this far apart.
    neck_ratio : keep a border on shape alone when saddle / min(peaks) is below this.
    smooth_um : Gaussian sigma applied to the distance maps and the core probability.
    core_threshold : core probability at or above which a pixel belongs to a learned core.
    core_gap_min : mean ``1 - core probability`` along a border for the learned cue to count ...
    core_neck_ratio : ... together with saddle / min(peaks) below this (a slight waist).
    core_gap_strong : mean ``1 - core probability`` along a border that keeps it whatever the shape.
    """

    min_node_area_mm2: float = 0.05
    min_node_probability: float = 0.0
    fill_holes: bool = True
    split_touching: bool = True
    min_distance_um: float = 150.0
    neck_ratio: float = 0.85
    smooth_um: float = 8.0
    core_threshold: float = 0.5
    core_gap_min: float = 0.45
    core_neck_ratio: float = 0.95
    core_gap_strong: float = 0.9

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


def _smooth(a: np.ndarray, sigma_px: float) -> np.ndarray:
    return ndi.gaussian_filter(a, sigma_px) if sigma_px > 0 else a


def border_stats(labels: np.ndarray, dist: np.ndarray, gap: np.ndarray) -> dict:
    """{(a, b): (n, saddle, gap_sum)} for 4-adjacent instances a < b: the number of neighbour pixel
    pairs on their common border, the largest ``min(dist)`` over those pairs, and the sum of their
    mean ``gap``."""
    lo_, hi_, sad_, gap_ = [], [], [], []
    for s1, s2 in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                   ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        a, b = labels[s1], labels[s2]
        m = (a != b) & (a > 0) & (b > 0)
        lo_.append(np.minimum(a[m], b[m]))
        hi_.append(np.maximum(a[m], b[m]))
        sad_.append(np.minimum(dist[s1][m], dist[s2][m]))
        gap_.append(0.5 * (gap[s1][m] + gap[s2][m]))
    lo, hi = np.concatenate(lo_).astype(np.int64), np.concatenate(hi_).astype(np.int64)
    if lo.size == 0:
        return {}
    base = int(labels.max()) + 1
    keys, inv = np.unique(lo * base + hi, return_inverse=True)
    n = np.bincount(inv)
    gsum = np.bincount(inv, weights=np.concatenate(gap_))
    saddle = np.full(len(keys), -np.inf)
    np.maximum.at(saddle, inv, np.concatenate(sad_))
    return {(int(k // base), int(k % base)): (int(c), float(sd), float(g))
            for k, c, sd, g in zip(keys, n, saddle, gsum)}


def keeps_border(r: float, gap: float, p: "InstanceParams") -> bool:
    """Whether a border with waist ratio ``r`` (saddle / min(peaks)) and mean learned gap ``gap``
    separates two nodes (see the module docstring)."""
    return r < p.neck_ratio or (gap >= p.core_gap_min and r < p.core_neck_ratio) or gap >= p.core_gap_strong


def merge_regions(labels: np.ndarray, dist: np.ndarray, gap: np.ndarray, p: "InstanceParams",
                  max_passes: int = 20) -> np.ndarray:
    """Merge adjacent regions whose common border ``keeps_border`` rejects, widest necks first
    (union-find, peaks updated as regions merge); passes repeat on the merged regions (whose borders
    are the union of their parts') until nothing merges. Then nodes do not nest: a region that does
    not reach the background joins the neighbour with which it shares the longest border."""
    labels = relabel_sequential(labels)
    for _ in range(max_passes):
        n = int(labels.max())
        if n < 2:
            break
        peak = np.asarray(ndi.maximum(dist, labels, np.arange(n + 1)), float)
        stats = border_stats(labels, dist, gap)
        parent = np.arange(n + 1)
        top = peak.copy()

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        order = sorted(stats.items(), key=lambda kv: -kv[1][1] / max(1e-9, min(peak[kv[0][0]], peak[kv[0][1]])))
        merged = False
        for (a, b), (count, saddle, gsum) in order:
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            if not keeps_border(saddle / max(1e-9, min(top[ra], top[rb])), gsum / count, p):
                parent[rb] = ra
                top[ra] = max(top[ra], top[rb])
                merged = True
        if not merged:
            break
        lut = np.array([find(i) for i in range(n + 1)])
        labels = relabel_sequential(lut[labels])
    return merge_enclosed(labels)


def merge_enclosed(labels: np.ndarray) -> np.ndarray:
    """Regions with no pixel next to the background or the image edge join the neighbour with which
    they share the longest border (repeated until none is left); labels 1..n."""
    labels = np.asarray(labels)
    for _ in range(int(labels.max())):
        n = int(labels.max())
        if n < 2:
            break
        edge = ndi.binary_dilation(np.pad(labels == 0, 1, constant_values=True))[1:-1, 1:-1]
        outer = np.bincount(labels[edge & (labels > 0)], minlength=n + 1)
        enclosed = [k for k in range(1, n + 1) if outer[k] == 0]
        if not enclosed:
            break
        pairs = _adjacent_pairs(labels)
        k = enclosed[0]
        border = {(b if a == k else a): c for (a, b), c in pairs.items() if k in (a, b)}
        if not border:
            break
        target = max(border, key=lambda t: (border[t], -t))
        labels = relabel_sequential(np.where(labels == k, target, labels))
    return labels


def seed_markers(seed_mask: np.ndarray, seed_dist: np.ndarray, mask: np.ndarray, mask_dist: np.ndarray,
                 min_distance_px: int) -> np.ndarray:
    """Watershed markers: peaks of ``seed_dist`` at least ``min_distance_px`` apart in each component
    of ``seed_mask`` (every component gets at least its maximum), plus one marker at the distance
    maximum of every component of ``mask`` that holds no seed."""
    from skimage.feature import peak_local_max

    comps, n = ndi.label(seed_mask)
    peaks = peak_local_max(seed_dist, min_distance=max(1, int(min_distance_px)), labels=comps,
                           exclude_border=False) if n else np.zeros((0, 2), int)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    nxt = len(peaks) + 1
    have = np.zeros(n + 1, bool)
    have[comps[markers > 0]] = True
    for k in np.nonzero(~have[1:])[0] + 1:
        markers[ndi.maximum_position(seed_dist, comps, k)] = nxt
        nxt += 1
    mc, nm = ndi.label(mask)
    have = np.zeros(nm + 1, bool)
    have[mc[markers > 0]] = True
    for k in np.nonzero(~have[1:])[0] + 1:
        markers[ndi.maximum_position(mask_dist, mc, k)] = nxt
        nxt += 1
    return markers


def split_touching(mask: np.ndarray, mpp: float, core: np.ndarray | None = None,
                   params: InstanceParams | None = None) -> np.ndarray:
    """Binary node mask at ``mpp`` µm/px -> instance labels (touching nodes split, see module docstring).

    core : optional node-core map from the model on the same grid: probabilities in [0, 1] (float) or
        a binary mask. Without it the shape alone decides. With ``params.split_touching = False`` the
        result is the labelled connected components.
    """
    from skimage.segmentation import watershed

    p = params or InstanceParams()
    mask = np.asarray(mask, bool)
    if not p.split_touching or not mask.any():
        return ndi.label(mask)[0].astype(np.int32)
    sigma = p.smooth_um / mpp
    mask_dist = _smooth(ndi.distance_transform_edt(mask), sigma) * mask
    if core is None:
        cores, gap = mask, np.zeros(mask.shape, np.float32)
    else:
        prob = _smooth(np.asarray(core, np.float32), sigma)
        cores = mask & (prob >= p.core_threshold)
        gap = np.where(mask, 1.0 - np.clip(prob, 0.0, 1.0), 0.0)
    core_dist = _smooth(ndi.distance_transform_edt(cores), sigma) * cores
    markers = seed_markers(cores, core_dist, mask, mask_dist, round(p.min_distance_um / mpp))
    # flood from the core peaks; pixels outside the cores (the learned band) join the nearest core
    surface = np.where(cores, -core_dist, ndi.distance_transform_edt(~cores))
    labels = watershed(surface, markers, mask=mask)
    return merge_regions(labels, mask_dist, gap, p).astype(np.int32)


def remove_unsure(labels: np.ndarray, prob: np.ndarray, min_mean: float, where: np.ndarray | None = None) -> np.ndarray:
    """Set instances whose mean of ``prob`` over their pixels (those in ``where`` only, when given) is
    below ``min_mean`` to background."""
    labels = np.asarray(labels)
    if min_mean <= 0 or labels.max() == 0:
        return labels.copy()
    n = int(labels.max())
    lab = labels if where is None else np.where(np.asarray(where, bool), labels, 0)
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    sums = np.bincount(lab.ravel(), weights=np.asarray(prob, np.float64).ravel(), minlength=n + 1)
    unsure = (counts > 0) & (sums < min_mean * np.maximum(counts, 1))
    unsure[0] = False
    out = labels.copy()
    out[unsure[labels]] = 0
    return out


def instances_from_mask(mask: np.ndarray, mpp: float, core: np.ndarray | None = None,
                        params: InstanceParams | None = None, prob: np.ndarray | None = None) -> np.ndarray:
    """The full post-processing: fill holes, split touching nodes, merge fragments, drop small
    instances, one 4-connected part per instance, drop unsure instances (``prob``: the node
    probabilities on the mask's grid, averaged over the pixels of ``mask``, not the filled holes;
    without them ``min_node_probability`` does not apply),
    labels 1..n. ``mask`` at ``mpp`` µm/px."""
    p = params or InstanceParams()
    mask = called = np.asarray(mask, bool)
    if p.fill_holes:
        mask = fill_holes(mask)
    labels = split_touching(mask, mpp, core=core, params=p)
    min_px = _px_area(p.min_node_area_mm2, mpp)
    if p.split_touching:
        labels = merge_fragments(labels, min_px)
    labels = keep_largest_part(labels)
    labels = remove_small(labels, min_px)
    if prob is not None:
        if np.shape(prob) != mask.shape:
            raise ValueError(f"prob has shape {np.shape(prob)}, the mask {mask.shape}")
        # over the pixels the model called node: filled holes (fat inside a node with fatty replacement) do not count
        labels = remove_unsure(labels, prob, p.min_node_probability, where=called)
    return relabel_sequential(labels)

