"""Tissue that is not lymph node, for phantom slides: what a node finder must NOT count.

Real lymph-node slides hold more than nodes in fat: fibrous septa running through the perinodal fat,
vessels (a ring of wall around a lumen), islands of loose connective tissue 0.2-0.8 mm across, a
hilum of fibrous tissue at the node's edge, nodes partly replaced by fat, and fragments of other
tissue (carcinoma, muscle of the gastric wall). Some slides hold no node at all. These are what
counted as "nodes" when a model trained on plain phantoms met real slides (issue 15).

Everything here is in µm and drawn from its own random stream (``SlideSpec.seed`` + a tag), so
turning ``perinodal`` on never changes a phantom's nodes, deposits or truth tables. Names of the
tissue kinds are those of ``tmln.phantom.texture.OTHER_CLASSES`` (``stroma``, ``muscle``,
``carcinoma``); fat is the layout's ``fat``.
"""

from __future__ import annotations

import math

import numpy as np

from tmln.phantom.shapes import star_polygon

# what a section without nodes can be (``SlideSpec.section``; ``node`` = lymph nodes in fat)
SECTIONS = ("node", "carcinoma", "muscle", "fibrofatty", "stomach")
# gap kept between non-node tissue and any node (µm): wider than the widest capsule band (45 µm) so
# that the capsule drawn along a node outline never lands on non-node tissue, and the truth stays plain
NODE_GAP_UM = 80.0


def _strand(rng, x, y, length_um, width_um, bend=0.35, n=12):
    """A fibrous strand (septum) as a buffered random walk from (x, y), µm."""
    from shapely.geometry import LineString

    ang = rng.uniform(0, 2 * np.pi)
    step = length_um / n
    pts = [(x, y)]
    for _ in range(n):
        ang += rng.normal(0, bend)
        x, y = x + step * math.cos(ang), y + step * math.sin(ang)
        pts.append((x, y))
    return LineString(pts).buffer(width_um / 2.0, quad_segs=4)


def _vessel(rng, x, y, r_um):
    """A vessel cut across: a wall ring (stroma) around a lumen, µm."""
    outer = star_polygon(rng, x, y, r_um, r_um * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), 0.12, 4, 48)
    lumen = outer.buffer(-r_um * rng.uniform(0.25, 0.6))
    return outer.difference(lumen) if not lumen.is_empty else outer


def _random_point_in(rng, region, tries: int = 200):
    from shapely.geometry import Point

    minx, miny, maxx, maxy = region.bounds
    for _ in range(tries):
        p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if region.contains(p):
            return p
    return None


def perinodal_tissue(rng, nodes_um: list, capsule_um: list, tissue_um, inner) -> tuple[list, list]:
    """Non-node tissue around and inside the nodes of one slide (µm).

    Returns ``(other, node_fat)``: ``other`` is a list of (kind, polygon) outside every node (septa,
    vessels, connective-tissue islands, a hilum strand, maybe one fragment of carcinoma or muscle away
    from the nodes); ``node_fat`` a list of (node index, polygon) of fatty replacement inside nodes.
    """
    from shapely.ops import unary_union

    keep_off = unary_union([p.buffer(NODE_GAP_UM, quad_segs=8) for p in nodes_um]) if nodes_um else None
    fat = tissue_um if keep_off is None else tissue_um.difference(keep_off)
    fat = fat.intersection(inner)
    other: list = []
    if not fat.is_empty and fat.area > 0:
        area_mm2 = fat.area / 1e6
        # septa: thin fibrous strands through the fat, 15-60 µm wide, 0.4-3 mm long
        for _ in range(int(rng.integers(2, 5) + area_mm2 / 6)):
            p = _random_point_in(rng, fat)
            if p is None:
                break
            s = _strand(rng, p.x, p.y, rng.uniform(400, 3000), rng.uniform(15, 60)).intersection(fat)
            if not s.is_empty:
                other.append(("stroma", s))
        # islands of 0.15-0.8 mm: vessels and loose connective tissue (the "nodes" a phantom-trained
        # model found in real perinodal fat)
        taken = []
        for _ in range(int(rng.integers(3, 7) + area_mm2 / 4)):
            p = _random_point_in(rng, fat)
            if p is None:
                break
            r = rng.uniform(75, 400)
            isl = (_vessel(rng, p.x, p.y, r) if rng.random() < 0.45 else
                   star_polygon(rng, p.x, p.y, r, r * rng.uniform(0.4, 0.9), rng.uniform(0, np.pi), 0.25, 6, 64))
            isl = isl.intersection(fat)
            if isl.is_empty or any(isl.distance(t) < 40 for t in taken):
                continue
            taken.append(isl)
            other.append(("stroma", isl))
    # a hilum: a wedge of fibrous tissue leaving a node (outside it, beyond the capsule gap)
    for node in nodes_um:
        if rng.random() < 0.3 and not fat.is_empty:
            b = node.boundary.interpolate(rng.uniform(0, node.boundary.length))
            wedge = star_polygon(rng, b.x, b.y, rng.uniform(250, 700), rng.uniform(120, 300), rng.uniform(0, np.pi),
                                 0.15, 4, 48).intersection(fat)
            if not wedge.is_empty:
                other.append(("stroma", wedge))
    # a fragment of other tissue on the same slide (primary tumour, gastric-wall muscle)
    if rng.random() < 0.5:
        kind = str(rng.choice(["carcinoma", "muscle"]))
        for _ in range(100):
            p = _random_point_in(rng, inner)
            if p is None:
                break
            r = rng.uniform(400, 1200)
            frag = star_polygon(rng, p.x, p.y, r, r * rng.uniform(0.4, 0.9), rng.uniform(0, np.pi), 0.2, 6)
            if inner.contains(frag) and (keep_off is None or frag.distance(keep_off) > 300):
                other.append((kind, frag))
                break
    # fatty replacement: fat islands inside larger nodes, away from the capsule (still node)
    node_fat: list = []
    for k, node in enumerate(nodes_um):
        core = node.buffer(-capsule_um[k] - 150.0)
        if core.is_empty or core.area < 1.0e6 or rng.random() >= 0.4:
            continue
        w = math.sqrt(core.area)
        for _ in range(int(rng.integers(1, 4))):
            p = _random_point_in(rng, core)
            if p is None:
                break
            r = rng.uniform(0.1, 0.3) * w
            f = star_polygon(rng, p.x, p.y, r, r * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), 0.2, 5, 48)
            f = f.intersection(core)
            if not f.is_empty:
                node_fat.append((k, f))
    return other, node_fat


def _masses(rng, kind: str, body, count: tuple, radius_um: tuple, aspect: tuple, roughness: float,
            harmonics: int) -> list:
    """``count`` (a range) irregular masses of ``kind`` inside ``body``, µm."""
    out = []
    for _ in range(int(rng.integers(*count))):
        p = _random_point_in(rng, body)
        if p is not None:
            r = rng.uniform(*radius_um)
            out.append((kind, star_polygon(rng, p.x, p.y, r, r * rng.uniform(*aspect), rng.uniform(0, np.pi), roughness,
                                           harmonics).intersection(body)))
    return out


def section_tissue(rng, kind: str, W_um: float, H_um: float, margin: float) -> tuple[object, list]:
    """A section with no lymph node (µm): ``(fat, other)`` as in ``perinodal_tissue``.

    ``carcinoma``: one or two carcinoma masses with fibrous strands; ``muscle``: muscle bundles in
    fibrous tissue; ``fibrofatty``: fat with septa, vessels and connective-tissue islands (the hardest
    negative); ``stomach``: a wall of layered bands (carcinoma standing in for mucosa, submucosal
    stroma, muscularis, subserosal fat with vessels).
    """
    from shapely.geometry import Polygon, box
    from shapely.ops import unary_union

    if kind not in SECTIONS or kind == "node":
        raise ValueError(f"unknown non-node section {kind!r}; expected one of {SECTIONS[1:]}")
    inner = box(margin, margin, W_um - margin, H_um - margin)
    cx, cy = W_um / 2, H_um / 2
    other: list = []
    if kind == "stomach":
        # four wavy bands across the slide, top to bottom
        xs = np.linspace(margin, W_um - margin, 64)
        edges = [margin + f * (H_um - 2 * margin) for f in (0.05, 0.3, 0.45, 0.75, 0.97)]
        phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(50, 250)
        wave = lambda y0: [(x, y0 + amp * math.sin(x / 900.0 + phase)) for x in xs]  # noqa: E731
        bands = []
        for a, b in zip(edges[:-1], edges[1:]):
            top, bot = wave(a), wave(b)
            bands.append(Polygon(top + bot[::-1]).buffer(0).intersection(inner))
        other += [("carcinoma", bands[0]), ("stroma", bands[1]), ("muscle", bands[2])]
        fat = bands[3]
        for _ in range(int(rng.integers(3, 8))):
            p = _random_point_in(rng, fat)
            if p is not None:
                other.append(("stroma", _vessel(rng, p.x, p.y, rng.uniform(60, 250)).intersection(fat)))
        return fat, other
    body = star_polygon(rng, cx, cy, rng.uniform(0.3, 0.42) * W_um, rng.uniform(0.3, 0.42) * H_um,
                        rng.uniform(0, np.pi), 0.18, 6).intersection(inner)
    fat = body
    side = min(W_um, H_um)
    if kind == "carcinoma":
        other += _masses(rng, "carcinoma", body, (1, 3), (0.15 * side, 0.3 * side), (0.6, 1.0), 0.25, 7)
    elif kind == "muscle":
        other += _masses(rng, "muscle", body, (2, 5), (0.15 * side, 0.35 * side), (0.25, 0.5), 0.15, 5)
    strands, _ = perinodal_tissue(rng, [], [], body, inner)
    other += [(k, g) for k, g in strands if k == "stroma"]
    other = [(k, g) for k, g in other if not g.is_empty]
    # fat is what no other tissue covers (drawn first, covered by the rest)
    return unary_union([fat]), other


# slide preparation artefacts (``SlideLayout.artefacts``): tears (glass through tissue), folds (tissue
# doubled: darker), air bubbles (a thin dark rim) and uneven illumination (``SlideLayout.shading``)
ARTEFACTS = ("tear", "fold", "bubble")


def artefacts(rng, tissue_um, W_um: float, H_um: float) -> tuple[list, tuple]:
    """Artefacts of one slide (µm): ``([(kind, geometry)], shading)``; ``shading`` = (amplitude in
    optical density, wavelength x µm, wavelength y µm, phase) of a smooth grey illumination field."""
    from shapely.geometry import Point

    out: list = []
    if tissue_um is not None and not tissue_um.is_empty:
        for _ in range(int(rng.integers(0, 3))):  # tears: thin cracks, 5-25 µm wide
            p = _random_point_in(rng, tissue_um)
            if p is not None:
                out.append(("tear", _strand(rng, p.x, p.y, rng.uniform(500, 3000), rng.uniform(5, 25), bend=0.15)
                            .intersection(tissue_um)))
        if rng.random() < 0.4:  # a fold: a band 100-400 µm wide
            p = _random_point_in(rng, tissue_um)
            if p is not None:
                out.append(("fold", _strand(rng, p.x, p.y, rng.uniform(1000, 4000), rng.uniform(100, 400), bend=0.1)
                            .intersection(tissue_um)))
    for _ in range(int(rng.integers(0, 3))):  # air bubbles anywhere under the coverslip
        r = rng.uniform(150, 750)
        out.append(("bubble", Point(rng.uniform(0, W_um), rng.uniform(0, H_um)).buffer(r, quad_segs=16).exterior
                    .buffer(rng.uniform(5, 12))))
    out = [(k, g) for k, g in out if not g.is_empty]
    shading = (float(rng.uniform(0.0, 0.05)), float(rng.uniform(0.8, 2.0) * W_um), float(rng.uniform(0.8, 2.0) * H_um),
               float(rng.uniform(0, 2 * np.pi)))
    return out, shading
