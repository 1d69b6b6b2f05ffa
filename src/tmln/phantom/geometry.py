"""Random layout of a phantom slide: lymph nodes, tumour deposits, perinodal fat, pen marks.

Everything is generated in µm (so one seed gives the same physical slide at any µm/px) and then
converted to level-0 pixels. Every polygon is snapped to a 1/8 px grid: 1/8 has an exact 3-decimal
spelling, so the GeoJSON files (which round to 3 decimals) hold exactly the geometry from which the
truth tables are computed.

Guarantees (checked by tests):
* nodes are valid polygons that never overlap; touching pairs share a boundary but are separate
  instances;
* every tumour component lies inside exactly one node (deposits are clipped to their node);
* the layout is a pure function of the spec (seed included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, asdict

import numpy as np

from tmln.phantom.shapes import GRID_PX, plain, snap, star_polygon
from tmln.phantom.non_node import artefacts, perinodal_tissue, section_tissue
from tmln.regions import polygon_parts


# deposit greatest-dimension ranges (mm) per target category, away from the 0.2 / 2 mm thresholds
DEPOSIT_MM = {"itc": (0.04, 0.16), "micro": (0.3, 1.7), "macro": (2.3, 7.0)}


@dataclass
class StainSpec:
    """Per-slide stain and scanner variation (multiplicative on dye amounts, additive on hue)."""

    h_scale: float = 1.0  # haematoxylin amount (nuclei darkness)
    e_scale: float = 1.0  # eosin amount (pinkness)
    h_hue: float = 0.0  # rotation of the haematoxylin OD vector (radians, small)
    e_hue: float = 0.0
    background: float = 242.0  # glass brightness (0-255)
    gamma: float = 1.0  # scanner tone curve
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # scanner colour balance per channel
    blur_um: float = 0.0  # scanner focus: Gaussian sigma in µm

    @classmethod
    def preset(cls, name: str, rng: np.random.Generator | None = None) -> "StainSpec":
        """``normal`` (random variation), ``pale``, ``dark`` or ``none`` (reference stain)."""
        if name == "none":
            return cls()
        rng = rng if rng is not None else np.random.default_rng(0)
        base = cls(
            h_scale=float(rng.uniform(0.8, 1.2)),
            e_scale=float(rng.uniform(0.75, 1.25)),
            h_hue=float(rng.uniform(-0.08, 0.08)),
            e_hue=float(rng.uniform(-0.08, 0.08)),
            background=float(rng.uniform(232, 248)),
            gamma=float(rng.uniform(0.9, 1.1)),
            cast=tuple(float(c) for c in rng.uniform(0.97, 1.03, 3)),
            blur_um=float(rng.uniform(0.0, 0.35)),
        )
        if name == "normal":
            return base
        if name == "pale":
            base.h_scale *= 0.45
            base.e_scale *= 0.45
            base.background = 246.0
            return base
        if name == "dark":
            base.h_scale *= 1.7
            base.e_scale *= 1.6
            base.background = 225.0
            return base
        raise ValueError(f"unknown stain preset {name!r}; expected normal, pale, dark or none")


@dataclass
class SlideSpec:
    """What to generate. Sizes in mm, mpp in µm/px. ``None`` fields are drawn from ``seed``."""

    seed: int = 0
    size_mm: tuple[float, float] = (8.0, 6.0)
    mpp: float = 0.5
    negative: bool | None = None  # True: no tumour at all; None: random (25 %)
    n_nodes: int | None = None
    touching_pair: bool | None = None  # None: random (60 %)
    stain: str = "normal"  # normal | pale | dark | none
    pen_marks: bool = False
    blank: bool = False  # glass only (no tissue): for "no tissue" tests
    # non-node tissue (``tmln.phantom.non_node``): septa, vessels, connective-tissue islands, a hilum,
    # fatty replacement inside nodes, a fragment of carcinoma or muscle; never changes nodes or truth
    perinodal: bool = False
    section: str = "node"  # node (nodes in fat) | carcinoma | muscle | fibrofatty | stomach (no node at all)
    # textures quilted from real H&E patches (a folder with tumor/ and normal/; ``tmln.phantom.real_texture``)
    # in place of the procedural ones; ``textures_mpp`` is the patches' µm/px
    textures: str | None = None
    textures_mpp: float = 0.97
    # nodes cut by the slide's edge (30-70 % of each on the slide, as where a section ends), drawn from a
    # stream of their own after the other nodes; 0 keeps every layout as it was
    edge_nodes: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size_mm"] = list(self.size_mm)
        return d


@dataclass
class PenStroke:
    """An ink line drawn on the glass: centreline in level-0 px, width in px, OD per RGB channel."""

    points: np.ndarray  # (n, 2) float, level-0 px
    width_px: float
    od: tuple[float, float, float]


@dataclass
class SlideLayout:
    """The complete truth geometry of one phantom slide (level-0 px, snapped to ``GRID_PX``)."""

    spec: SlideSpec
    width: int
    height: int
    mpp: float
    nodes: list  # shapely Polygons, node instances (never overlapping)
    tumour: list  # shapely Polygons, connected tumour components
    tumour_node: list[int]  # index into ``nodes`` of each tumour component
    follicles: list  # shapely Polygons (germinal-centre-like paler areas; rendering only)
    fat: object  # shapely geometry: perinodal fat (tissue outside nodes)
    capsule_um: list[float]  # capsule thickness per node
    stain: StainSpec
    pen: list[PenStroke] = field(default_factory=list)
    touching_pairs: list[tuple[int, int]] = field(default_factory=list)
    target_categories: list[str] = field(default_factory=list)  # per node, what was aimed for
    other: list[tuple[str, object]] = field(default_factory=list)  # non-node tissue: (kind, polygon) outside nodes
    node_fat: list = field(default_factory=list)  # fatty replacement inside nodes (rendering only; still node)
    artefacts: list[tuple[str, object]] = field(default_factory=list)  # tears, folds, bubbles (rendering only)
    shading: tuple | None = None  # uneven illumination (``non_node.artefacts``; rendering only)
    edge_cut: list[int] = field(default_factory=list)  # indices into ``nodes`` of the nodes the slide's edge cuts

    @property
    def tissue(self):
        """Nodes, fat and non-node tissue together (what a tissue detector should find)."""
        from shapely.ops import unary_union

        return unary_union([*self.nodes, self.fat, *(g for _, g in self.other)])


def feret_diameter(geom) -> float:
    """Maximum Feret diameter (greatest distance between two points) of a geometry, its units."""
    hull = geom.convex_hull
    if hull.is_empty:
        return 0.0
    if hull.geom_type == "Polygon":
        pts = np.asarray(hull.exterior.coords)
    else:
        pts = np.asarray(hull.coords)
    if len(pts) < 2:
        return 0.0
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d**2).sum(-1)).max())


# ---------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class _Frame:
    """The slide's extent in µm, its level-0 µm/px and the margins that keep tissue off the edges."""

    W_um: float
    H_um: float
    mpp: float
    margin: float
    inner: object  # shapely box: where nodes may lie

    @classmethod
    def of(cls, spec: SlideSpec) -> "_Frame":
        from shapely.geometry import box

        W_um, H_um = spec.size_mm[0] * 1000.0, spec.size_mm[1] * 1000.0
        margin = min(400.0, 0.08 * min(W_um, H_um))
        return cls(W_um, H_um, float(spec.mpp), margin, box(margin, margin, W_um - margin, H_um - margin))

    @property
    def size_px(self) -> tuple[int, int]:
        return int(round(self.W_um / self.mpp)), int(round(self.H_um / self.mpp))

    def to_px(self, geom_um):
        """µm geometry -> level-0 px, snapped to ``GRID_PX``."""
        from shapely import affinity

        return snap(affinity.scale(geom_um, 1.0 / self.mpp, 1.0 / self.mpp, origin=(0, 0)))


def make_layout(spec: SlideSpec) -> SlideLayout:
    """Draw the random layout for ``spec`` (deterministic in ``spec.seed``).

    The main stream ``rng`` is drawn in a fixed order (stain, nodes, capsules, follicles, deposits,
    fat, pen marks); non-node tissue and artefacts have streams of their own, so turning them on
    changes nothing else.
    """
    from shapely.geometry import Polygon

    rng = np.random.default_rng(np.random.SeedSequence([int(spec.seed), 0x7A11]))
    frame = _Frame.of(spec)
    width, height = frame.size_px
    stain = StainSpec.preset(spec.stain, rng)
    if spec.blank:
        layout = SlideLayout(spec, width, height, frame.mpp, [], [], [], [], Polygon(), [], stain)
        if spec.pen_marks:
            layout.pen = _pen_strokes(rng, frame.W_um, frame.H_um, frame.mpp, None)
        return layout
    rng_other = np.random.default_rng(np.random.SeedSequence([int(spec.seed), 0x5E97]))
    if spec.section != "node":
        return _section_layout(spec, frame, rng, rng_other, stain)

    nodes_um, touching_pairs = _place_nodes(rng, spec, frame)
    rng_edge = np.random.default_rng(np.random.SeedSequence([int(spec.seed), 0xED6E]))
    edge_um = _edge_nodes(rng_edge, spec.edge_nodes, frame, nodes_um)
    nodes_um += edge_um
    nodes, nodes_um, touching_pairs = _nodes_to_px(frame, nodes_um, touching_pairs)
    capsule_um = [float(rng.uniform(15, 45)) for _ in nodes]
    follicles = _follicles(rng, frame, nodes_um, capsule_um)
    targets, tumour, tumour_node = _tumour(rng, spec, frame, nodes, nodes_um, capsule_um, touching_pairs)
    tissue_um, fat = _perinodal_fat(rng, frame, nodes, nodes_um)
    if edge_um:  # the fat around a cut node runs off the slide with it
        tissue_um, fat = _fat_to_the_edge(rng_edge, frame, tissue_um, nodes, edge_um)
    layout = SlideLayout(
        spec=spec, width=width, height=height, mpp=frame.mpp, nodes=nodes, tumour=tumour, tumour_node=tumour_node,
        follicles=follicles, fat=fat, capsule_um=capsule_um, stain=stain, touching_pairs=touching_pairs,
        target_categories=targets,
        edge_cut=[k for k, p in enumerate(nodes) if min(p.bounds[:2]) <= GRID_PX or p.bounds[2] >= width - GRID_PX
                  or p.bounds[3] >= height - GRID_PX],
    )
    if spec.pen_marks:
        layout.pen = _pen_strokes(rng, frame.W_um, frame.H_um, frame.mpp, tissue_um)
    if spec.perinodal:
        other_um, node_fat_um = perinodal_tissue(rng_other, nodes_um, capsule_um, tissue_um, frame.inner)
        layout.other = [(k, frame.to_px(g)) for k, g in other_um]
        layout.node_fat = [frame.to_px(g) for _, g in node_fat_um]
        _add_artefacts(layout, spec, tissue_um, frame.W_um, frame.H_um)
    return layout


def _section_layout(spec: SlideSpec, frame: _Frame, rng, rng_other, stain: StainSpec) -> SlideLayout:
    """A section without any node (``spec.section``): its tissue, artefacts and pen marks."""
    width, height = frame.size_px
    fat_um, other_um = section_tissue(rng_other, spec.section, frame.W_um, frame.H_um, frame.margin)
    layout = SlideLayout(spec, width, height, frame.mpp, [], [], [], [], frame.to_px(fat_um), [], stain,
                         other=[(k, frame.to_px(g)) for k, g in other_um])
    _add_artefacts(layout, spec, fat_um, frame.W_um, frame.H_um)
    if spec.pen_marks:
        layout.pen = _pen_strokes(rng, frame.W_um, frame.H_um, frame.mpp, fat_um)
    return layout


def _place_nodes(rng, spec: SlideSpec, frame: _Frame) -> tuple[list, list[tuple[int, int]]]:
    """Node outlines (µm) that keep ``gap_um`` from each other inside ``frame.inner``, and the
    touching pairs (the first node and a partner cut by it, when one is wanted)."""
    W_um, H_um, margin = frame.W_um, frame.H_um, frame.margin
    area_mm2 = spec.size_mm[0] * spec.size_mm[1]
    n_nodes = spec.n_nodes if spec.n_nodes is not None else int(np.clip(round(rng.uniform(2, 5) * math.sqrt(area_mm2 / 48.0)), 1, 60))
    touching = spec.touching_pair if spec.touching_pair is not None else bool(rng.random() < 0.6)
    max_len_um = max(300.0, min(10000.0, 0.85 * min(W_um, H_um) - 2 * margin))
    min_len_um = min(1000.0, max_len_um)
    gap_um = 150.0

    nodes_um: list = []
    touching_pairs: list[tuple[int, int]] = []

    def free(poly, gap=gap_um):
        if not frame.inner.contains(poly):
            return False
        return all(poly.distance(o) > gap for o in nodes_um)

    def random_node(length):
        aspect = rng.uniform(0.55, 0.95) if nodes_um else rng.uniform(0.75, 0.95)
        rx, ry = length / 2.0, length / 2.0 * aspect
        return rx, ry, rng.uniform(0, np.pi)

    for i in range(n_nodes):
        for _ in range(300):
            length = math.exp(rng.uniform(math.log(min_len_um), math.log(max_len_um)))
            if i == 0:  # the first node is large-ish, so that macro deposits can occur
                length = max(length, min(max_len_um, 3000.0 + rng.uniform(0, 2000.0)))
                if touching:  # ... but leaves room for its touching partner
                    length = min(length, max(min_len_um, 0.62 * max_len_um))
            rx, ry, ang = random_node(length)
            cx = rng.uniform(margin + rx, max(margin + rx + 1, W_um - margin - rx))
            cy = rng.uniform(margin + rx * 0.8, max(margin + rx + 1, H_um - margin - rx * 0.8))
            poly = star_polygon(rng, cx, cy, rx, ry, ang, roughness=rng.uniform(0.03, 0.12))
            if free(poly):
                nodes_um.append(poly)
                break
        if touching and i == 0 and nodes_um:
            _add_touching_partner(rng, nodes_um, frame.inner, gap_um, touching_pairs, min_len_um)
    return nodes_um, touching_pairs


def _edge_nodes(rng, n: int, frame: _Frame, nodes_um: list, gap_um: float = 150.0) -> list:
    """Up to ``n`` nodes (µm) that the slide's edge cuts: each 0.8-3 mm long, centred near a random
    side so that 30-70 % of it lies on the slide, clipped there, ``gap_um`` from every other node."""
    from shapely.geometry import box

    slide = box(0.0, 0.0, frame.W_um, frame.H_um)
    out: list = []
    for _ in range(int(n)):
        for _ in range(300):
            length = min(rng.uniform(800.0, 3000.0), 0.8 * min(frame.W_um, frame.H_um))
            rx, ry = length / 2.0, length / 2.0 * rng.uniform(0.6, 0.95)
            side, t, depth = int(rng.integers(0, 4)), rng.uniform(0.15, 0.85), rng.uniform(-0.4, 0.4) * rx
            cx, cy = {0: (depth, t * frame.H_um), 1: (frame.W_um - depth, t * frame.H_um),
                      2: (t * frame.W_um, depth), 3: (t * frame.W_um, frame.H_um - depth)}[side]
            whole = star_polygon(rng, cx, cy, rx, ry, rng.uniform(0, np.pi), roughness=rng.uniform(0.03, 0.12))
            cut = whole.intersection(slide)
            if cut.geom_type == "Polygon" and 0.3 <= cut.area / whole.area <= 0.7 and \
                    all(cut.distance(o) > gap_um for o in nodes_um + out):
                out.append(cut)
                break
    return out


def _fat_to_the_edge(rng, frame: _Frame, tissue_um, nodes: list, edge_um: list):
    """(tissue in µm, fat in px) with fat around each cut node up to the slide's edge."""
    import shapely
    from shapely.geometry import box
    from shapely.ops import unary_union

    slide = box(0.0, 0.0, frame.W_um, frame.H_um)
    around = [p.buffer(rng.uniform(200.0, 600.0), quad_segs=8).intersection(slide) for p in edge_um]
    tissue_um = unary_union([tissue_um, *around]).simplify(5.0)
    fat = plain(shapely.difference(frame.to_px(tissue_um), unary_union(nodes), grid_size=GRID_PX))
    return tissue_um, fat


def _nodes_to_px(frame: _Frame, nodes_um: list, touching_pairs: list) -> tuple[list, list, list]:
    """(nodes in px, nodes in µm, touching pairs), touching partners kept disjoint on the px grid and
    every list in a stable order: by centroid (y, x)."""
    import shapely

    nodes = [frame.to_px(p) for p in nodes_um]
    # the partner was cut by its neighbour in µm; cutting again on the px grid keeps them disjoint
    for a, b in touching_pairs:
        cut = shapely.difference(nodes[b], nodes[a], grid_size=GRID_PX)
        nodes[b] = plain(max(polygon_parts(cut), key=lambda g: g.area))

    order = sorted(range(len(nodes)), key=lambda k: (nodes[k].centroid.y, nodes[k].centroid.x))
    remap = {old: new for new, old in enumerate(order)}
    nodes = [nodes[k] for k in order]
    nodes_um = [nodes_um[k] for k in order]
    touching_pairs = [tuple(sorted((remap[a], remap[b]))) for a, b in touching_pairs]
    return nodes, nodes_um, touching_pairs


def _follicles(rng, frame: _Frame, nodes_um: list, capsule_um: list[float]) -> list:
    """Germinal-centre-like areas inside each node's core (px; rendering only)."""
    follicles = []
    for k, p in enumerate(nodes_um):
        core = p.buffer(-capsule_um[k] - 60)
        if core.is_empty:
            continue
        minx, miny, maxx, maxy = core.bounds
        for _ in range(int(rng.integers(0, 2 + int(math.sqrt(core.area) / 800)))):
            r = rng.uniform(70, 260)
            cx, cy = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            f = star_polygon(rng, cx, cy, r, r * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi), 0.1, 4, 48)
            f = f.intersection(core)
            if not f.is_empty and f.area > 0:
                follicles += polygon_parts(frame.to_px(f))
    return follicles


def _tumour(rng, spec: SlideSpec, frame: _Frame, nodes: list, nodes_um: list, capsule_um: list[float],
            touching_pairs: list) -> tuple[list[str], list, list[int]]:
    """(target category per node, tumour components in px, the node of each component).

    A random half of the nodes (at least one) of a positive slide gets deposits of a category the
    node's width allows; they are clipped to the node, off the capsule shared with a touching node.
    """
    import shapely
    from shapely.ops import unary_union

    shared = shared_capsules(nodes, touching_pairs, [c / frame.mpp for c in capsule_um])
    negative = spec.negative if spec.negative is not None else bool(rng.random() < 0.25)
    targets = ["negative"] * len(nodes)
    tumour, tumour_node = [], []
    if negative or not nodes:
        return targets, tumour, tumour_node
    n_pos = max(1, int(rng.binomial(len(nodes), 0.5)))
    pos = sorted(rng.choice(len(nodes), size=min(n_pos, len(nodes)), replace=False).tolist())
    for k in pos:
        poly = nodes_um[k]
        minor = _min_width(poly)
        if minor > 2700:
            cat = str(rng.choice(["itc", "micro", "macro"], p=[0.2, 0.3, 0.5]))
        else:
            cat = str(rng.choice(["itc", "micro"], p=[0.4, 0.6]))
        targets[k] = cat
        deps = _deposits_for(rng, poly, cat, capsule_um[k])
        if not deps:
            targets[k] = "negative"
            continue
        merged = unary_union([frame.to_px(d) for d in deps])
        # clip to the node shrunk by 1 px: the snap-rounded result then lies strictly inside it;
        # along a border shared with a touching node both capsules stay visible (see shared_capsules)
        room = nodes[k].buffer(-1.0)
        if k in shared:
            room = shapely.difference(room, shared[k], grid_size=GRID_PX)
        inside = plain(shapely.intersection(merged, room, grid_size=GRID_PX))
        for comp in polygon_parts(inside):
            if comp.area * frame.mpp * frame.mpp > 1.0:  # drop sub-µm² slivers
                tumour.append(comp)
                tumour_node.append(k)
    return targets, tumour, tumour_node


def _perinodal_fat(rng, frame: _Frame, nodes: list, nodes_um: list):
    """(all tissue in µm, fat in px): nodes grown by a random margin, plus a blob, clipped to the
    slide; the fat is that tissue less the nodes."""
    import shapely
    from shapely.geometry import box
    from shapely.ops import unary_union

    W_um, H_um, margin = frame.W_um, frame.H_um, frame.margin
    fat_um = []
    for p in nodes_um:
        fat_um.append(p.buffer(rng.uniform(250, 1400), quad_segs=8))
    if nodes_um:
        c = unary_union(nodes_um).centroid
        fat_um.append(star_polygon(rng, c.x, c.y, rng.uniform(0.3, 0.5) * W_um, rng.uniform(0.3, 0.5) * H_um,
                                    rng.uniform(0, np.pi), 0.15, 5))
    tissue_um = unary_union(fat_um).intersection(box(margin / 2, margin / 2, W_um - margin / 2, H_um - margin / 2))
    tissue_um = tissue_um.simplify(5.0)
    fat = frame.to_px(tissue_um)
    fat = plain(shapely.difference(fat, unary_union(nodes), grid_size=GRID_PX)) if nodes else fat
    return tissue_um, fat


def _add_artefacts(layout: SlideLayout, spec: SlideSpec, tissue_um, W_um: float, H_um: float) -> None:
    """Tears, folds, bubbles and uneven illumination (their own random stream; rendering only)."""
    from shapely import affinity

    rng = np.random.default_rng(np.random.SeedSequence([int(spec.seed), 0xA87E]))
    arts, (amp, lx, ly, phase) = artefacts(rng, tissue_um, W_um, H_um)
    s = 1.0 / layout.mpp
    layout.artefacts = [(k, snap(affinity.scale(g, s, s, origin=(0, 0)))) for k, g in arts]
    layout.shading = (amp, lx * s, ly * s, phase)


def shared_capsules(nodes: list, touching_pairs: list, capsule_px: list) -> dict:
    """{node index: area (level-0 px) that its tumour must leave free}: the capsule band along each
    border shared with a touching node.

    The renderer draws every node's capsule as a band of half-width ``capsule_px`` on each side of its
    outline, so along a shared border the visible capsule is ``max`` of the two capsules on both sides.
    Tumour is painted over capsule; without this rule a deposit reaching the shared border would erase
    the only visible boundary between two touching nodes, which real nodes (each in its own capsule)
    never show, and no segmentation could split them.
    """
    from shapely.ops import unary_union

    out: dict = {}
    for a, b in touching_pairs:
        cap = max(capsule_px[a], capsule_px[b])
        for k, other in ((a, b), (b, a)):
            band = nodes[other].buffer(cap + 1.0, quad_segs=4)
            out[k] = band if k not in out else unary_union([out[k], band])
    return out


def _min_width(poly) -> float:
    """Smallest width of the minimum rotated rectangle (µm)."""
    rect = poly.minimum_rotated_rectangle
    pts = np.asarray(rect.exterior.coords)[:4]
    e = np.linalg.norm(np.diff(np.vstack([pts, pts[:1]]), axis=0), axis=1)
    return float(e.min())


def _add_touching_partner(rng, nodes_um, inner, gap_um, touching_pairs, min_len_um):
    """Add a node that shares a boundary with ``nodes_um[0]`` (cut by it, so no overlap)."""
    import shapely
    from shapely.geometry import Point

    a = nodes_um[0]
    ca = a.centroid
    size_a = math.sqrt(a.area / math.pi) * 2
    for _ in range(400):
        lo = min(max(min_len_um, 0.4 * size_a), 0.8 * size_a)
        length = rng.uniform(lo, max(lo, 0.9 * size_a) + 1)
        aspect = rng.uniform(0.6, 0.95)
        rx, ry = length / 2, length / 2 * aspect
        theta = rng.uniform(0, 2 * np.pi)
        # distance from A's centroid to its boundary along theta
        ray_end = Point(ca.x + 1e6 * math.cos(theta), ca.y + 1e6 * math.sin(theta))
        hit = a.exterior.intersection(shapely.geometry.LineString([ca, ray_end]))
        if hit.is_empty:
            continue
        ra = max(Point(ca).distance(g) for g in getattr(hit, "geoms", [hit]))
        d = ra + 0.75 * ry
        cx, cy = ca.x + d * math.cos(theta), ca.y + d * math.sin(theta)
        b = star_polygon(rng, cx, cy, rx, ry, theta + np.pi / 2, roughness=rng.uniform(0.03, 0.08))
        b = b.difference(a)
        parts = polygon_parts(b)
        if not parts:
            continue
        b = max(parts, key=lambda g: g.area)
        if b.area < 0.5 * math.pi * rx * ry:
            continue
        shared = a.exterior.intersection(b.buffer(1.0)).length
        if shared < 300:
            continue
        if inner.contains(b) and all(b.distance(o) > gap_um for o in nodes_um[1:]):
            nodes_um.append(b)
            touching_pairs.append((0, len(nodes_um) - 1))
            return


def _deposits_for(rng, node_um, cat: str, capsule_um: float) -> list:
    """Deposit blobs (µm) for a node of target category ``cat``; not yet clipped."""
    from shapely.geometry import Point

    core = node_um.buffer(-capsule_um)
    if core.is_empty:
        return []
    lo, hi = DEPOSIT_MM[cat]
    deps = []
    if cat == "macro" and rng.random() < 0.4:
        # effacing deposit: most of the node replaced by tumour
        c = node_um.centroid
        eff = core.buffer(-rng.uniform(0.02, 0.15) * math.sqrt(core.area))
        blob = star_polygon(rng, c.x, c.y, 0.6 * math.sqrt(core.area), 0.5 * math.sqrt(core.area), rng.uniform(0, np.pi), 0.2, 6)
        dep = eff.union(blob.intersection(core))
        if not dep.is_empty:
            deps.append(dep)
    else:
        top = min(hi, 0.85 * _min_width(node_um) / 1000.0) if cat == "macro" else hi
        size_um = 1000.0 * rng.uniform(lo, max(lo, top))
        if cat == "macro":
            size_um = max(size_um, 2300.0)
        shrink = core.buffer(-0.35 * size_um) if cat != "macro" else core.buffer(-0.25 * size_um)
        region = shrink if not shrink.is_empty else core
        minx, miny, maxx, maxy = region.bounds
        for _ in range(100):
            p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
            if region.contains(p):
                break
        else:
            p = region.representative_point()
        rx = size_um / 2 / 1.12  # the wobble enlarges the blob; aim for the drawn Feret size
        deps.append(star_polygon(rng, p.x, p.y, rx, rx * rng.uniform(0.55, 0.95), rng.uniform(0, np.pi), 0.12, 7, 72))
    # satellites
    if cat in ("micro", "macro") and rng.random() < 0.35:
        minx, miny, maxx, maxy = core.bounds
        for _ in range(int(rng.integers(1, 4))):
            p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
            if core.contains(p):
                r = rng.uniform(20, 70)
                deps.append(star_polygon(rng, p.x, p.y, r, r * 0.8, rng.uniform(0, np.pi), 0.1, 4, 32))
    return deps


def _pen_strokes(rng, W_um, H_um, mpp, tissue_um) -> list[PenStroke]:
    inks = {"blue": (0.95, 0.55, 0.08), "green": (0.9, 0.12, 0.75), "black": (1.0, 1.0, 0.95),
            "red": (0.08, 1.2, 1.0)}
    strokes = []
    for _ in range(int(rng.integers(1, 4))):
        name = str(rng.choice(list(inks)))
        n = 40
        x, y = rng.uniform(0.1, 0.9) * W_um, rng.uniform(0.1, 0.9) * H_um
        ang = rng.uniform(0, 2 * np.pi)
        step = rng.uniform(0.02, 0.05) * min(W_um, H_um)
        pts = []
        for _ in range(n):
            pts.append((x, y))
            ang += rng.normal(0, 0.25)
            x = float(np.clip(x + step * math.cos(ang), 0, W_um))
            y = float(np.clip(y + step * math.sin(ang), 0, H_um))
        strokes.append(PenStroke(np.asarray(pts) / mpp, rng.uniform(150, 450) / mpp, inks[name]))
    return strokes
