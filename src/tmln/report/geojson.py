"""QuPath-importable GeoJSON of one slide's measurements (level-0 px FeatureCollections).

``nodes.geojson``: one feature per node, ``objectType`` "annotation" (default) or "detection",
classification ``Lymph node: <category>`` (QuPath derived class) coloured by category, and
``measurements`` (node_id, area_mm2, tumour_area_mm2, tumour_fraction, largest_deposit_mm,
metastatic 0/1, n_deposits). ``tumour.geojson``: one "Tumor" feature per deposit (measurements
node_id, area_mm2, greatest_dimension_mm) and one "Tumor" feature named "extranodal tumour" for
tumour outside every node. Re-reading these files as annotations reproduces the measurements.
The features are returned; ``tmln.cohort.job`` writes them into the run directory (``tmln.rundir``).
"""

from __future__ import annotations

import uuid

from tmln.annotations import CLASS_COLOURS, feature

NODE_CLASS_PREFIX = "Lymph node"
_ID_NAMESPACE = uuid.UUID("6f1c1b0e-4a57-4c1e-9d0a-746d6c6e0001")


def object_id(*parts) -> str:
    """A deterministic UUID (QuPath object ids are UUIDs) from the slide id and the object's role."""
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(str(p) for p in parts)))


def node_class(category: str) -> str:
    return f"{NODE_CLASS_PREFIX}: {category}"


def node_features(measurement, object_type: str = "annotation") -> list[dict]:
    counts: dict[int, int] = {}
    for d in measurement.deposits:
        counts[d.node_id] = counts.get(d.node_id, 0) + 1
    feats = []
    for row, geom in zip(measurement.rows, measurement.nodes):
        nid = int(row["node_id"])
        feats.append(feature(
            geom,
            classification=node_class(row["category"]),
            colour=CLASS_COLOURS[row["category"]],
            object_type=object_type,
            name=f"node {nid} ({row['category']})",
            id=object_id(row["slide_id"], "node", nid),
            measurements={
                "node_id": nid,
                "area_mm2": row["area_mm2"],
                "tumour_area_mm2": row["tumour_area_mm2"],
                "tumour_fraction": row["tumour_fraction"],
                "largest_deposit_mm": row["largest_deposit_mm"],
                "metastatic": 1 if row["metastatic"] else 0,
                "n_deposits": counts.get(nid, 0),
            },
        ))
    return feats


def tumour_features(measurement, object_type: str = "annotation") -> list[dict]:
    feats = []
    per_node: dict[int, int] = {}
    for d in measurement.deposits:
        k = per_node[d.node_id] = per_node.get(d.node_id, 0) + 1
        feats.append(feature(d.geometry, classification="Tumor", object_type=object_type,
                             name=f"deposit {k} of node {d.node_id}",
                             measurements={"node_id": d.node_id, "area_mm2": d.area_mm2,
                                           "greatest_dimension_mm": d.greatest_dimension_mm}))
    ex = measurement.extranodal
    if ex is not None and not ex.is_empty:
        feats.append(feature(ex, classification="Tumor", object_type=object_type, name="extranodal tumour",
                             measurements={"area_mm2": measurement.summary["extranodal_tumour_area_mm2"]}))
    return feats
