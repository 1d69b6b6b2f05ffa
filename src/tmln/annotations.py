"""Region annotations: read and write QuPath GeoJSON, ASAP XML, NCRF JSON; what their classes mean;
which file belongs to a slide; how outlines become a raster.

This module is the one owner of annotation meaning (docs/annotations.md), used by ``tmln analyze``,
``tmln tumour-map``, ``tmln train tumour|nodes`` and ``tmln evaluate froc|maps|slides|nodes``:

- ``label_kind``: the class vocabulary per format (tumour, exclusion, node, unknown, unclassified);
- ``tumour_outlines``: **tumour = union(tumour polygons, holes honoured) - union(exclusion
  polygons)**, with notes for classes that are not used;
- ``node_outlines``: node polygons of a node outline file, with notes;
- ``find_annotation`` / ``annotation_index``: the one lookup of a slide's file in a folder;
- ``outline_mask``: the one rasteriser of outlines (pixel centres inside, holes respected).

All coordinates are level-0 pixels of the slide they belong to. Every reader returns a list of
``Annotation`` (a shapely Polygon/MultiPolygon plus its class label), validated: invalid polygons
are repaired when the repair is unambiguous (the repair is recorded in ``Annotation.note``),
otherwise an ``AnnotationError`` naming the file is raised. XML is parsed with defusedxml (no
entity expansion, no external entities).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tmln.atomic import write_text
from tmln.errors import AnnotationError
from tmln.regions import burn, polygon_parts

# Camelyon16 ASAP groups: `_0`, `_1`, `Tumor` are tumour, `_2` and `Exclusion` are excluded.
CAMELYON_TUMOUR_GROUPS = {"_0", "_1", "tumor", "tumour", "metastases"}
CAMELYON_EXCLUSION_GROUPS = {"_2", "exclusion"}

# QuPath default-ish colours (RGB) for classes we write
CLASS_COLOURS = {
    "Lymph node": (0, 160, 0),
    "Tumor": (200, 0, 0),
    "negative": (0, 160, 0),
    "itc": (255, 200, 0),
    "micro": (255, 120, 0),
    "macro": (200, 0, 0),
    "Exclusion": (128, 128, 128),
}


@dataclass
class Annotation:
    """One annotated region in level-0 pixels."""

    geometry: "object"  # shapely Polygon or MultiPolygon
    label: str | None = None  # class / group name as written in the file
    name: str | None = None
    note: str | None = None  # e.g. "repaired self-intersection"
    properties: dict = field(default_factory=dict)
    fmt: str = "geojson"  # the file format the class name comes from: "geojson", "asap" or "ncrf"


def read_annotations(path: str | Path, slide_size: tuple[int, int] | None = None) -> list[Annotation]:
    """Read an annotation file by content: GeoJSON (.geojson/.json), NCRF JSON (.json), ASAP (.xml).

    slide_size : (width, height) in level-0 px; when given, coordinates outside the slide
        (beyond a 1 px tolerance) raise ``AnnotationError``.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError("annotation file not found", path)
    suffix = path.suffix.lower()
    if suffix == ".xml":
        anns = read_asap_xml(path)
    elif suffix in (".geojson", ".json"):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnnotationError(f"not valid JSON ({exc})", path) from None
        if isinstance(obj, dict) and ("positive" in obj or "negative" in obj) and "type" not in obj:
            anns = _parse_ncrf(obj, path)
        else:
            anns = _parse_geojson(obj, path)
    else:
        raise AnnotationError("unknown annotation format (expected .geojson, .json or .xml)", path)
    if slide_size is not None:
        check_inside(anns, slide_size, path)
    return anns


# ---------------------------------------------------------------------------- GeoJSON (QuPath)
def _parse_geojson(obj, path: Path) -> list[Annotation]:
    if not isinstance(obj, (dict, list)):
        raise AnnotationError("not GeoJSON: top level must be an object or a list of features", path)
    if isinstance(obj, list):
        features = obj
    elif obj.get("type") == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise AnnotationError("not GeoJSON: FeatureCollection without a 'features' list", path)
    elif obj.get("type") == "Feature":
        features = [obj]
    elif obj.get("type") in ("Polygon", "MultiPolygon", "GeometryCollection"):
        features = [{"type": "Feature", "geometry": obj, "properties": {}}]
    else:
        raise AnnotationError(f"not GeoJSON: unexpected top-level type {obj.get('type')!r}", path)
    out: list[Annotation] = []
    for i, feat in enumerate(features):
        if not isinstance(feat, dict) or feat.get("type") != "Feature" or "geometry" not in feat:
            raise AnnotationError(f"not GeoJSON: feature {i} is not a Feature with a geometry", path)
        props = feat.get("properties") or {}
        label = _qupath_label(props)
        geoms = _geojson_polygons(feat["geometry"], path, i)
        for geom in geoms:
            geom, note = validate_polygon(geom, path, f"feature {i}")
            out.append(Annotation(geom, label=label, name=props.get("name"), note=note, properties=props))
    return out


def _qupath_label(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        return cls.get("name")
    if isinstance(cls, str):
        return cls
    return props.get("label") or props.get("class")


def _geojson_polygons(geom: dict, path: Path, i: int) -> list:
    from shapely.geometry import shape

    if not isinstance(geom, dict) or "type" not in geom:
        raise AnnotationError(f"not GeoJSON: feature {i} has no valid geometry", path)
    t = geom["type"]
    if t == "GeometryCollection":
        out = []
        for g in geom.get("geometries", []):
            out += _geojson_polygons(g, path, i)
        return out
    if t in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        return []  # points/lines carry no area (e.g. QuPath point annotations): ignored
    if t not in ("Polygon", "MultiPolygon"):
        raise AnnotationError(f"feature {i}: unsupported geometry type {t!r}", path)
    try:
        g = shape(geom)
    except Exception as exc:
        raise AnnotationError(f"feature {i}: malformed {t} coordinates ({exc})", path) from None
    return [g]


# ---------------------------------------------------------------------------- ASAP XML
def read_asap_xml(path: str | Path) -> list[Annotation]:
    """ASAP / Camelyon16 XML: ``<Annotation Name PartOfGroup Type><Coordinates><Coordinate Order X Y>``."""
    from defusedxml import ElementTree as ET
    from defusedxml.common import DefusedXmlException
    from shapely.geometry import Polygon

    path = Path(path)
    try:
        root = ET.parse(str(path)).getroot()
    except DefusedXmlException as exc:
        raise AnnotationError(f"XML rejected for safety ({type(exc).__name__}: entities/DTDs are not allowed)", path) from None
    except ET.ParseError as exc:
        raise AnnotationError(f"not well-formed XML ({exc})", path) from None
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(f"not ASAP XML: root element is <{root.tag}>, expected <ASAP_Annotations>", path)
    out = []
    for i, ann in enumerate(root.iter("Annotation")):
        atype = (ann.get("Type") or "Polygon").lower()
        if atype in ("dot", "pointset", "point"):
            continue
        coords = []
        for c in ann.iter("Coordinate"):
            try:
                coords.append((int(float(c.get("Order", len(coords)))), float(c.get("X").replace(",", ".")), float(c.get("Y").replace(",", "."))))
            except (TypeError, ValueError, AttributeError):
                raise AnnotationError(f"annotation {ann.get('Name') or i}: bad Coordinate (needs numeric X and Y)", path) from None
        coords.sort(key=lambda t: t[0])
        pts = [(x, y) for _, x, y in coords]
        if len(pts) < 3:
            raise AnnotationError(f"annotation {ann.get('Name') or i}: a polygon needs >= 3 coordinates, got {len(pts)}", path)
        geom, note = validate_polygon(Polygon(pts), path, f"annotation {ann.get('Name') or i}")
        out.append(Annotation(geom, label=ann.get("PartOfGroup"), name=ann.get("Name"), note=note, fmt="asap"))
    return out


def write_asap_xml(path: str | Path, annotations: Sequence[Annotation]) -> None:
    """Write polygons (exteriors only; ASAP has no holes) as ASAP XML."""
    from xml.sax.saxutils import quoteattr

    groups = sorted({a.label or "None" for a in annotations})
    lines = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "\t<Annotations>"]
    k = 0
    for a in annotations:
        for poly in polygon_parts(a.geometry):
            lines.append(f'\t\t<Annotation Name={quoteattr(a.name or f"Annotation {k}")} Type="Polygon" '
                         f'PartOfGroup={quoteattr(a.label or "None")} Color="#F4FA58">')
            lines.append("\t\t\t<Coordinates>")
            for j, (x, y) in enumerate(list(poly.exterior.coords)[:-1]):
                lines.append(f'\t\t\t\t<Coordinate Order="{j}" X="{x:.10g}" Y="{y:.10g}" />')
            lines.append("\t\t\t</Coordinates>")
            lines.append("\t\t</Annotation>")
            k += 1
    lines.append("\t</Annotations>")
    lines.append("\t<AnnotationGroups>")
    for g in groups:
        lines.append(f'\t\t<Group Name={quoteattr(g)} PartOfGroup="None" Color="#64FE2E"><Attributes /></Group>')
    lines.append("\t</AnnotationGroups>")
    lines.append("</ASAP_Annotations>")
    write_text(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- NCRF JSON
def _parse_ncrf(obj: dict, path: Path) -> list[Annotation]:
    from shapely.geometry import Polygon

    out = []
    for key, label in (("positive", "positive"), ("negative", "negative")):
        items = obj.get(key, [])
        if not isinstance(items, list):
            raise AnnotationError(f"NCRF JSON: '{key}' must be a list", path)
        for i, item in enumerate(items):
            verts = item.get("vertices") if isinstance(item, dict) else None
            if not isinstance(verts, list) or len(verts) < 3:
                raise AnnotationError(f"NCRF JSON: {key}[{i}] needs a 'vertices' list of >= 3 [x, y] points", path)
            try:
                pts = [(float(v[0]), float(v[1])) for v in verts]
            except (TypeError, ValueError, IndexError):
                raise AnnotationError(f"NCRF JSON: {key}[{i}] has a vertex that is not [x, y]", path) from None
            geom, note = validate_polygon(Polygon(pts), path, f"{key}[{i}]")
            out.append(Annotation(geom, label=label, name=item.get("name"), note=note, fmt="ncrf"))
    return out


# ---------------------------------------------------------------------------- validation
def validate_polygon(geom, path: Path | str, what: str):
    """Return (valid geometry, note). Repairs self-intersections with shapely's ``make_valid`` when the
    result is polygonal and keeps (within 1 %) the area of the input's outline; otherwise raises."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    coords_ok = all(math.isfinite(c) for p in polygon_parts(geom) for c in _flat_coords(p))
    if not coords_ok:
        raise AnnotationError(f"{what}: non-finite coordinates", path)
    if geom.is_empty:
        raise AnnotationError(f"{what}: empty polygon", path)
    if geom.is_valid:
        if geom.area <= 0:
            raise AnnotationError(f"{what}: polygon has zero area", path)
        return geom, None
    reason = shapely.is_valid_reason(geom)
    fixed = shapely.make_valid(geom)
    polys = [g for g in getattr(fixed, "geoms", [fixed]) if isinstance(g, (Polygon, MultiPolygon))]
    # make_valid may return a GeometryCollection with stray lines: keep the polygonal parts
    parts = []
    for g in polys:
        parts += list(polygon_parts(g))
    if not parts:
        raise AnnotationError(f"{what}: invalid polygon ({reason}) with no polygonal repair", path)
    repaired = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    # An unambiguous repair: a figure-eight/bow-tie keeps all its lobes; a duplicated or collinear
    # vertex changes nothing. Reject repairs that lose substantial area relative to the shell.
    shell_area = sum(Polygon(p.exterior).buffer(0).area for p in polygon_parts(geom))
    if repaired.area <= 0 or (shell_area > 0 and repaired.area < 0.5 * shell_area):
        raise AnnotationError(f"{what}: invalid polygon ({reason}); repair would be ambiguous", path)
    return repaired, f"repaired invalid polygon ({reason})"


def check_inside(annotations: Iterable[Annotation], slide_size: tuple[int, int], path: Path | str, tol: float = 1.0):
    """Raise if any annotation lies (partly) outside [0, w] x [0, h] level-0 px."""
    w, h = slide_size
    for a in annotations:
        x0, y0, x1, y1 = a.geometry.bounds
        if x0 < -tol or y0 < -tol or x1 > w + tol or y1 > h + tol:
            raise AnnotationError(
                f"annotation {a.name or a.label or ''} has coordinates outside the slide "
                f"(bounds {x0:.0f},{y0:.0f}-{x1:.0f},{y1:.0f}; slide is {w}x{h} px)".replace("  ", " "),
                path,
            )


def _flat_coords(poly):
    for ring in [poly.exterior, *poly.interiors]:
        for x, y in ring.coords:
            yield x
            yield y


# ---------------------------------------------------------------------------- class meaning
TUMOUR, EXCLUSION, NODE, UNKNOWN, UNCLASSIFIED = "tumour", "exclusion", "node", "unknown", "unclassified"

# Class names per format, compared case-insensitively. QuPath: a derived class ``Tumor: Positive``
# means its base class (``Tumor``); a class ending in ``*`` (``Ignore*``, ``Region*``, any
# ``Name*``) is one QuPath itself ignores, so tmln treats it as an exclusion.
TUMOUR_CLASSES = {
    "geojson": {"tumor", "tumour", "metastasis", "metastases", "positive", "_0", "_1"},
    "asap": CAMELYON_TUMOUR_GROUPS | {"metastasis"},
    "ncrf": {"positive"},
}
EXCLUSION_CLASSES = {
    "geojson": {"ignore", "ignored", "exclusion", "exclude", "excluded", "other", "region", "normal", "negative",
                "non-tumour", "non-tumor", "nontumour", "nontumor", "stroma", "necrosis", "immune cells",
                "background", "_2"},
    "asap": CAMELYON_EXCLUSION_GROUPS | {"exclude", "ignore", "normal", "negative"},
    "ncrf": {"negative"},
}
NODE_CLASSES = {"lymph node", "lymph_node", "lymph-node", "lymphnode", "lymph nodes", "node", "nodes", "ln"}
# Node status labels: in a node outline file these outline nodes, in a tumour file they do not.
NODE_STATUS_CLASSES = {"positive", "negative", "normal"}
UNCLASSIFIED_NAMES = {"", "none", "null", "unclassified"}


def _base_class(label: str) -> str:
    return label.strip().split(":")[0].strip().lower()


def label_kind(label: str | None, fmt: str = "geojson") -> str:
    """What a class means in a file of format ``fmt`` ("geojson", "asap", "ncrf"): ``TUMOUR``,
    ``EXCLUSION`` (non-tumour carved out of tumour), ``NODE``, ``UNCLASSIFIED`` or ``UNKNOWN``."""
    if label is None or label.strip().lower() in UNCLASSIFIED_NAMES:
        return UNCLASSIFIED
    fmt = fmt if fmt in TUMOUR_CLASSES else "geojson"
    raw = label.strip()
    if raw.endswith("*"):
        return EXCLUSION
    base = _base_class(raw)
    if raw.lower() in TUMOUR_CLASSES[fmt] or base in TUMOUR_CLASSES[fmt]:
        return TUMOUR
    if raw.lower() in EXCLUSION_CLASSES[fmt] or base in EXCLUSION_CLASSES[fmt]:
        return EXCLUSION
    if base in NODE_CLASSES:
        return NODE
    return UNKNOWN


def is_tumour_label(label: str | None, fmt: str = "geojson") -> bool:
    """Tumour classes across formats: Camelyon16 groups `_0`/`_1`/`Tumor`, QuPath `Tumor`/`Tumour`/
    `Metastasis`, NCRF `positive` (case-insensitive)."""
    return label_kind(label, fmt) == TUMOUR


def is_exclusion_label(label: str | None, fmt: str = "geojson") -> bool:
    """Non-tumour classes carved out of tumour: Camelyon16 `_2`/`Exclusion`, QuPath `Ignore*`,
    `Exclusion`, `Other`, `Region*`, ..., NCRF `negative`."""
    return label_kind(label, fmt) == EXCLUSION


@dataclass
class TumourOutlines:
    """The tumour of one annotation file, level-0 px.

    tumour : union(tumour polygons, holes honoured) - union(exclusion polygons) (possibly empty).
    exclusion : union of the exclusion polygons (possibly empty).
    ignore : union of the ``Ignore``/``Ignore*`` polygons (training samples them as neither class).
    notes : classes not used as tumour, node classes in a tumour file, repairs.
    """

    tumour: object
    exclusion: object
    ignore: object
    notes: list[str] = field(default_factory=list)

    @property
    def polygons(self) -> list:
        """The tumour as a list of Polygons (holes kept)."""
        return polygon_parts(self.tumour)


def _union(geoms: list):
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    return unary_union(geoms) if geoms else Polygon()


def _count_note(counts: dict, what: str) -> list[str]:
    return [f"{n} polygon(s) of class {label!r} {what}" for label, n in sorted(counts.items())]


def tumour_outlines(annotations: Sequence[Annotation], *, also_node_file: bool = False) -> TumourOutlines:
    """Tumour of a tumour outline file: **union(tumour polygons, holes honoured) - union(exclusion
    polygons)** (class meaning: ``label_kind``).

    Unclassified polygons are tumour when the file has no tumour-class and no node-class polygon
    (a file of plain outlines); otherwise they are left out and listed in the notes. Unknown classes
    are never tumour: listed in the notes. Node classes are listed in the notes too.
    also_node_file : the file is also the slide's node outline file (one export holding both): its
        unclassified polygons and node status labels (``positive``/``negative``/``normal``) are
        nodes, neither tumour nor exclusion.
    """
    kinds = [NODE if also_node_file and a.label and _base_class(a.label) in NODE_STATUS_CLASSES
             else label_kind(a.label, a.fmt) for a in annotations]
    plain = not also_node_file and TUMOUR not in kinds and NODE not in kinds
    pos, neg, ign, notes = [], [], [], []
    unknown, nodes, unclassified = {}, {}, 0
    for a, k in zip(annotations, kinds):
        if k == TUMOUR or (k == UNCLASSIFIED and plain):
            pos.append(a.geometry)
            if a.note:
                notes.append(f"tumour {a.name or a.label or len(pos)}: {a.note}")
        elif k == EXCLUSION:
            neg.append(a.geometry)
            if _base_class(a.label).rstrip("*") in ("ignore", "ignored"):
                ign.append(a.geometry)
        elif k == NODE:
            nodes[a.label] = nodes.get(a.label, 0) + 1
        elif k == UNKNOWN:
            unknown[a.label] = unknown.get(a.label, 0) + 1
        else:
            unclassified += 1
    notes += _count_note(unknown, "in the tumour outlines: a class tmln does not know, not counted as tumour "
                                  "(docs/annotations.md)")
    if not also_node_file:  # one export holding nodes and tumour: its nodes are expected
        notes += _count_note(nodes, "in the tumour outlines: node outlines, not tumour")
    if unclassified and not also_node_file:
        notes.append(f"{unclassified} unclassified polygon(s) in the tumour outlines not counted as tumour "
                     "(the file has classified tumour or node outlines)")
    exclusion = _union(neg)
    tumour = _union(pos)
    if not tumour.is_empty and not exclusion.is_empty:
        tumour = tumour.difference(exclusion)
    return TumourOutlines(tumour, exclusion, _union(ign), notes)


def node_outlines(annotations: Sequence[Annotation]) -> tuple[list, list[str]]:
    """Node polygons of a node outline file and notes. Every polygon is a node (one per connected
    part) except tumour and exclusion classes; node status labels (``positive``/``negative``/``normal``)
    stay nodes. Tumour classes in the file are said in the notes, so are unknown classes taken as nodes."""
    polys, notes, skipped, unknown = [], [], {}, {}
    for a in annotations:
        label = (a.label or "").strip()
        kind = label_kind(a.label, a.fmt)
        if kind in (TUMOUR, EXCLUSION) and _base_class(label) not in NODE_STATUS_CLASSES:
            skipped.setdefault(kind, {})
            skipped[kind][label] = skipped[kind].get(label, 0) + 1
            continue
        if kind == UNKNOWN and _base_class(label) not in NODE_STATUS_CLASSES:
            unknown[label] = unknown.get(label, 0) + 1
        polys += polygon_parts(a.geometry)
        if a.note:
            notes.append(f"node {a.name or label or len(polys)}: {a.note}")
    notes += _count_note(skipped.get(TUMOUR, {}), "in the node outlines: tumour outlines, not nodes")
    notes += _count_note(skipped.get(EXCLUSION, {}), "in the node outlines: exclusions, not nodes (ignored)")
    notes += _count_note(unknown, "in the node outlines: not a node class tmln knows, taken as node(s)")
    return polys, notes


def outline_mask(geometry, shape: tuple[int, int], scale, origin=(0.0, 0.0)):
    """Bool raster (rows, cols) of ``geometry`` (level-0 px; Polygon, MultiPolygon or None): a pixel
    is set when its centre is inside (holes respected). ``scale``: level-0 px per pixel, a float
    or (x, y); ``origin``: level-0 px of the raster's top-left corner."""
    import numpy as np

    out = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    if geometry is not None and not geometry.is_empty:
        for poly in polygon_parts(geometry):
            burn(out, poly, scale, origin)
    return out


# ---------------------------------------------------------------------------- which file
GENERIC_SUFFIXES = (".geojson", ".json", ".xml")
KIND_INFIXES = {"nodes": (".nodes", ".node"), "tumour": (".tumour", ".tumor")}


class AmbiguousAnnotation(AnnotationError):
    """Several generic annotation files for one slide."""


def candidate_names(slide_id: str, kind: str) -> list[str]:
    """File names looked for, kind-specific first: ``S1.tumour.geojson`` ... ``S1.geojson``, ``S1.json``, ``S1.xml``."""
    return [f"{slide_id}{infix}{suf}" for infix in (*KIND_INFIXES[kind], "") for suf in GENERIC_SUFFIXES]


def find_annotation(folder: str | Path, slide_id: str, kind: str) -> Path | None:
    """The annotation file of ``slide_id`` (kind ``"nodes"`` or ``"tumour"``) in ``folder``, or None.

    Node folder: ``<id>.nodes.geojson|.json|.xml`` (also ``.node.*``), then the generic
    ``<id>.geojson|.json|.xml``; tumour folder the same with ``.tumour`` (``.tumor``). A kind-specific
    file wins; two generic files are ambiguous (``AmbiguousAnnotation``, naming the folder). File
    names match exactly, or case-insensitively when nothing matches exactly.
    """
    folder = Path(folder)
    files: dict[str, Path] | None = None

    def present(names: list[str]) -> list[Path]:
        nonlocal files
        found = [folder / n for n in names if (folder / n).is_file()]
        if found:
            return found
        if files is None:
            files = {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}
        return [files[n.lower()] for n in names if n.lower() in files]

    specific = present([f"{slide_id}{i}{s}" for i in KIND_INFIXES[kind] for s in GENERIC_SUFFIXES])
    if specific:
        return specific[0]
    generic = present([f"{slide_id}{s}" for s in GENERIC_SUFFIXES])
    if len(generic) > 1:
        raise AmbiguousAnnotation(f"several {kind} annotation files for slide {slide_id!r}: "
                                  f"{', '.join(p.name for p in generic)}; keep one", folder)
    return generic[0] if generic else None


def annotation_index(folder: str | Path, kind: str) -> dict[str, Path]:
    """Every slide id with a ``kind`` annotation file in ``folder`` -> its file (``find_annotation``'s
    rules; a slide with ambiguous files raises ``AmbiguousAnnotation``). Files of the other kind
    (``S1.nodes.geojson`` for tumour) are not slides of this kind."""
    folder = Path(folder)
    other = [i for k, infixes in KIND_INFIXES.items() if k != kind for i in infixes]
    ids = set()
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in GENERIC_SUFFIXES or not p.is_file():
            continue
        stem = p.name[: -len(p.suffix)]
        if any(stem.lower().endswith(i) for i in other):
            continue
        for i in KIND_INFIXES[kind]:
            if stem.lower().endswith(i):
                stem = stem[: -len(i)]
                break
        ids.add(stem)
    out = {}
    for sid in sorted(ids):
        path = find_annotation(folder, sid, kind)
        if path is not None:
            out[sid] = path
    return out


# ---------------------------------------------------------------------------- GeoJSON writing
def feature(geometry, classification: str | None = None, object_type: str = "annotation",
            name: str | None = None, measurements: dict | None = None, colour=None, id: str | None = None) -> dict:
    """A QuPath-importable GeoJSON Feature (level-0 px)."""
    from shapely.geometry import mapping

    props: dict = {"objectType": object_type}
    if name is not None:
        props["name"] = name
    if classification is not None:
        rgb = colour or CLASS_COLOURS.get(classification, (120, 120, 120))
        props["classification"] = {"name": classification, "color": [int(c) for c in rgb]}
    if measurements:
        props["measurements"] = {k: (None if v is None else float(v)) for k, v in measurements.items()}
    feat = {"type": "Feature", "geometry": _round_mapping(mapping(geometry)), "properties": props}
    if id is not None:
        feat["id"] = id
    return feat


def _round_mapping(m):
    def rnd(c):
        if isinstance(c, (list, tuple)):
            if c and isinstance(c[0], (int, float)):
                return [round(float(v), 3) for v in c]
            return [rnd(v) for v in c]
        return c

    return {"type": m["type"], "coordinates": rnd(m["coordinates"])}


def feature_collection(features: list[dict]) -> dict:
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, features: list[dict]) -> None:
    """Write a FeatureCollection atomically (deterministic key order)."""

    write_text(path, json.dumps(feature_collection(features), sort_keys=True, separators=(",", ":")) + "\n")
