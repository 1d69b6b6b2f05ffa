"""Definitions shared by the measurement core, the phantom truth and the docs (units in names).

Deposit categories by largest deposit (greatest dimension, mm): ITC <= 0.2, micro (0.2, 2], macro > 2.
N stage, AJCC 8th edition, gastric: N0 = 0 metastatic nodes, N1 = 1-2, N2 = 3-6, N3a = 7-15, N3b >= 16.
"""

from __future__ import annotations

ITC_MAX_MM = 0.2
MICRO_MAX_MM = 2.0

CATEGORIES = ("negative", "itc", "micro", "macro")
N_STAGES = ("N0", "N1", "N2", "N3a", "N3b")
MLN_RULES = ("ajcc", "any")

NODE_COLUMNS = [
    "patient_id", "slide_id", "node_id", "area_mm2", "tumour_area_mm2", "tumour_fraction",
    "largest_deposit_mm", "category", "metastatic", "centroid_x_um", "centroid_y_um",
]
PATIENT_COLUMNS = [
    "patient_id", "n_slides", "n_nodes", "n_metastatic_nodes", "n_stage", "tumour_area_mm2",
    "metastatic_node_area_mm2", "t_mln", "t_mln_mean_nodes",
]


def deposit_category(largest_deposit_mm: float) -> str:
    """Category of a node from its largest deposit's greatest dimension in mm (0 = no tumour)."""
    if largest_deposit_mm is None or largest_deposit_mm <= 0:
        return "negative"
    if largest_deposit_mm <= ITC_MAX_MM:
        return "itc"
    if largest_deposit_mm <= MICRO_MAX_MM:
        return "micro"
    return "macro"


def is_metastatic(category: str, rule: str = "ajcc") -> bool:
    """``ajcc``: micro or macro metastasis (ITC are N0); ``any``: any tumour (Wang et al. 2021)."""
    if rule == "ajcc":
        return category in ("micro", "macro")
    if rule == "any":
        return category != "negative"
    raise ValueError(f"unknown MLN rule {rule!r}; expected one of {MLN_RULES}")


def n_stage(n_metastatic_nodes: int) -> str:
    """AJCC 8th edition pN for gastric cancer from the count of metastatic regional nodes."""
    n = int(n_metastatic_nodes)
    if n < 0:
        raise ValueError("negative node count")
    if n == 0:
        return "N0"
    if n <= 2:
        return "N1"
    if n <= 6:
        return "N2"
    if n <= 15:
        return "N3a"
    return "N3b"
