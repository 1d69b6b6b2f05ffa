"""Definitions shared by the measurement core, the phantom truth and the docs (units in names).

Deposit categories by largest deposit (greatest dimension, mm): ITC <= 0.2, micro (0.2, 2], macro > 2.

Staging systems (pathological N from node counts; sources in docs/measurements.md#staging-systems):

- ``gastric`` (default): AJCC Cancer Staging Manual 8th ed. (2017), stomach, pN from the count of
  metastatic regional nodes: N0 = 0, N1 = 1-2, N2 = 3-6, N3a = 7-15, N3b >= 16.
- ``breast``: AJCC 8th ed., breast, pN (axillary nodes only; the count is of nodes with a micro- or
  macro-metastasis, ITC nodes are not counted): N0 = no node with tumour; N0(i+) = ITC only;
  N1mi = micrometastases only (none > 2 mm); with at least one macrometastasis N1a = 1-3,
  N2a = 4-9, N3a >= 10 positive nodes.
- ``camelyon17``: the patient pN rules of the CAMELYON17 challenge (Bandi et al., IEEE TMI 2019):
  pN0 = no tumour; pN0(i+) = ITC only; pN1mi = micrometastases, no macrometastasis; pN1 = 1-3
  nodes with metastasis (micro or macro), at least one macro; pN2 = 4 or more (the challenge
  defined 4-9; its patients had 5 nodes).
- ``colorectal``: AJCC 8th ed., colon and rectum, pN from the count of metastatic regional nodes:
  N0 = 0, N1a = 1, N1b = 2-3, N2a = 4-6, N2b >= 7 (N1c, tumour deposits without node metastasis,
  is not derived from nodes and is never assigned).

Counting rule for ``gastric`` and ``colorectal``: the nodes whose ``metastatic`` flag is true (the
run's ``--mln-rule``). ``breast`` and ``camelyon17`` use the node categories themselves (the
systems define what ITC and micrometastases mean), whatever ``--mln-rule`` says.
"""

from __future__ import annotations

ITC_MAX_MM = 0.2
MICRO_MAX_MM = 2.0
GASTRIC_MIN_NODES_EXAMINED = 16  # AJCC 8th ed. stomach: at least 16 regional nodes should be assessed

CATEGORIES = ("negative", "itc", "micro", "macro")
N_STAGES = ("N0", "N1", "N2", "N3a", "N3b")  # gastric (the default system)
STAGES: dict[str, tuple[str, ...]] = {
    "gastric": N_STAGES,
    "breast": ("N0", "N0(i+)", "N1mi", "N1a", "N2a", "N3a"),
    "camelyon17": ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2"),
    "colorectal": ("N0", "N1a", "N1b", "N2a", "N2b"),
}
STAGING_SYSTEMS = tuple(STAGES)
MLN_RULES = ("ajcc", "any")

NODE_COLUMNS = [
    "patient_id", "slide_id", "node_id", "area_mm2", "tumour_area_mm2", "tumour_fraction",
    "largest_deposit_mm", "category", "metastatic", "centroid_x_um", "centroid_y_um",
]
PATIENT_COLUMNS = [
    "patient_id", "n_slides", "n_nodes", "n_metastatic_nodes", "n_stage", "tumour_area_mm2",
    "metastatic_node_area_mm2", "t_mln", "t_mln_mean_nodes",
    # node-based markers beside T/MLN (docs/measurements.md#per-patient-patientscsv)
    "n_negative_nodes", "lymph_node_ratio", "lodds", "nodes_examined_lt16",
    "n_itc_nodes", "n_micro_nodes", "n_macro_nodes",
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


def _count(n) -> int:
    n = int(n)
    if n < 0:
        raise ValueError("negative node count")
    return n


def n_stage(n_metastatic_nodes: int) -> str:
    """AJCC 8th edition pN for gastric cancer from the count of metastatic regional nodes."""
    n = _count(n_metastatic_nodes)
    if n == 0:
        return "N0"
    if n <= 2:
        return "N1"
    if n <= 6:
        return "N2"
    if n <= 15:
        return "N3a"
    return "N3b"


def colorectal_n_stage(n_metastatic_nodes: int) -> str:
    """AJCC 8th edition pN for colorectal cancer from the count of metastatic regional nodes (no N1c)."""
    n = _count(n_metastatic_nodes)
    if n == 0:
        return "N0"
    if n == 1:
        return "N1a"
    if n <= 3:
        return "N1b"
    if n <= 6:
        return "N2a"
    return "N2b"


def breast_n_stage(n_macro_nodes: int, n_micro_nodes: int, n_itc_nodes: int = 0) -> str:
    """AJCC 8th edition breast pN from counts of nodes by their largest deposit (axillary nodes only)."""
    macro, micro, itc = _count(n_macro_nodes), _count(n_micro_nodes), _count(n_itc_nodes)
    positive = macro + micro
    if positive == 0:
        return "N0(i+)" if itc else "N0"
    if macro == 0:
        return "N1mi"
    if positive <= 3:
        return "N1a"
    if positive <= 9:
        return "N2a"
    return "N3a"


def camelyon17_n_stage(n_macro_nodes: int, n_micro_nodes: int, n_itc_nodes: int = 0) -> str:
    """CAMELYON17 patient pN (Bandi et al. 2019) from counts of nodes by their largest deposit."""
    macro, micro, itc = _count(n_macro_nodes), _count(n_micro_nodes), _count(n_itc_nodes)
    positive = macro + micro
    if positive == 0:
        return "pN0(i+)" if itc else "pN0"
    if macro == 0:
        return "pN1mi"
    return "pN1" if positive <= 3 else "pN2"


def stage(system: str, *, n_metastatic_nodes: int | None = None, n_macro_nodes: int | None = None,
          n_micro_nodes: int | None = None, n_itc_nodes: int | None = None) -> str:
    """The pN of ``system`` (one of ``STAGING_SYSTEMS``) from the counts that system uses."""
    if system == "gastric":
        return n_stage(n_metastatic_nodes)
    if system == "colorectal":
        return colorectal_n_stage(n_metastatic_nodes)
    if system in ("breast", "camelyon17"):
        if n_macro_nodes is None or n_micro_nodes is None:
            raise ValueError(f"{system} staging needs the counts of nodes with macro- and micrometastases")
        fn = breast_n_stage if system == "breast" else camelyon17_n_stage
        return fn(n_macro_nodes, n_micro_nodes, n_itc_nodes or 0)
    raise ValueError(f"unknown staging system {system!r}; expected one of {', '.join(STAGING_SYSTEMS)}")


def check_system(system: str) -> str:
    if system not in STAGES:
        raise ValueError(f"unknown staging system {system!r}; expected one of {', '.join(STAGING_SYSTEMS)}")
    return system


def stage_order(values) -> tuple[str, ...] | None:
    """The stage order of the first system whose stages include every value (None if none does)."""
    present = {str(v) for v in values}
    for system in STAGING_SYSTEMS:
        if present <= set(STAGES[system]):
            return STAGES[system]
    return None
