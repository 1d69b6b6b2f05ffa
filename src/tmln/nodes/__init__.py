"""Lymph-node segmentation in use: tiled U-Net inference, touching-node splitting, node polygons.

Public API (what the measurement core and the CLI call)::

    regions_from_model(slide, model, out_dir=None, device="auto") -> list[Polygon]   # level-0 px
    node_map(slide, model, out_dir=None, device="auto") -> NodeMap                   # .labels int32, .mpp µm/px
    NodeSegmenter(model, device)      # load once, run on many slides
"""

from tmln.nodes.infer import NodeSegmenter, get_segmenter, node_map, regions_from_model
from tmln.nodes.instances import InstanceParams, instances_from_mask, split_touching
from tmln.nodes.regions import NodeMap, labels_to_polygons, polygons_to_labels, read_node_labels, write_node_outputs

__all__ = [
    "regions_from_model", "node_map", "NodeSegmenter", "NodeMap", "get_segmenter",
    "InstanceParams", "instances_from_mask", "split_touching",
    "labels_to_polygons", "polygons_to_labels", "read_node_labels", "write_node_outputs",
]
