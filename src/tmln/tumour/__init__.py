"""Tumour detection with a patch classifier: dense probability maps over slides -> tumour regions.

``tumour_map`` (``engine``) computes the map; ``regions_from_model`` / ``regions_from_map``
(``regions``) threshold it into polygons in level-0 px for the measurement core.
"""

from tmln.tumour.engine import tumour_map
from tmln.tumour.probability_map import ProbabilityMap
from tmln.tumour.regions import regions_from_map, regions_from_model, tumour_mask

__all__ = ["ProbabilityMap", "tumour_map", "regions_from_map", "regions_from_model", "tumour_mask"]
