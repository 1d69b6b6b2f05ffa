"""Assemble BENCHMARKS.md from the per-area results in benchmarks/results/*.md.

Each results file is written by its benchmark script and starts with the command that reproduces it.
Usage: .venv/bin/python benchmarks/assemble.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _draw_sections() -> list[tuple[str, str]]:
    """One section per draw of pcam-nodes' held-out phantoms, in the order drawn (``DRAWS`` of
    ``pcam_nodes_second_draw.py``, which names each draw and its results file)."""
    spec = importlib.util.spec_from_file_location("pcam_nodes_second_draw", HERE / "pcam_nodes_second_draw.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [(f"Real tissue: pcam-nodes on {mod.a_draw(seed)} of held-out phantoms (issue 15)",
             f"pcam_nodes_{mod.draw_name(seed)}_draw.md") for seed in sorted(mod.DRAWS)]


DRAW_SECTIONS = _draw_sections()
ORDER = [
    ("Real tissue: the bundled node model pcam-nodes on held-out phantoms and a real non-node slide (issue 15)",
     "pcam_nodes.md"),
    *DRAW_SECTIONS,
    ("Real tissue: pcam-nodes pooled over every set of unseen phantoms, with 95 % intervals (issue 15)",
     "pcam_nodes_pooled.md"),
    ("Real tissue: how pcam-nodes' stage 3 was found, and the variants tried before and after it (issue 15)",
     "pcam_nodes_experiments.md"),
    ("Node U-Net training steps: float32 vs bf16 autocast on a CPU with AMX (issue 15)", "node_training_precision.md"),
    ("Phantom realism: real-textured vs procedural phantoms against real PCam patches (issue 15)", "phantom_realism.md"),
    ("Tumour map engine on AVX2-only cores: float32 (direct and Winograd) and int8 vs the original (issue 20)", "tumour_engine_avx2.md"),
    ("Inference backends, CPU capped to AVX2 (issue 20)", "tumour_backends_avx2.md"),
    ("Inference backends, the full CPU: AVX-512 with VNNI and BF16 (issue 20)", "tumour_backends.md"),
    ("tmln analyze end to end on AVX2-only cores (issue 20)", "analyze_avx2.md"),
    ("Real tissue: the bundled tumour model pcam-tumour (issue 14)", "pcam_tumour.md"),
    ("Real tissue: pcam-tumour with a stronger weight decay, longer training, weight averaging, D4-tied weights and a 64 px input, not shipped (issue 14)", "pcam_tumour_weight_decay.md"),
    ("Tumour map engine with pcam-tumour (issue 14)", "tumour_engine_pcam.md"),
    ("Whole-slide tumour maps: peak memory (issue 14)", "tumour_map_memory.md"),
    ("Appearance distance to a model's training data (issues 14, 15)", "appearance.md"),
    ("Tumour map engine (issue 4)", "tumour_engine.md"),
    ("Slide reading: direct tile decoding vs OpenSlide (issue 4)", "slide_read.md"),
    ("Tumour-map threshold calibration (issue 4)", "tumour_calibration.md"),
    ("Tumour classifier on real Camelyon16 patches (issue 4)", "tumour_training.md"),
    ("Lymph-node U-Net on phantoms (issue 5)", "nodes.md"),
    ("Bundled demo models, end to end (issue 8)", "demo_models.md"),
    ("Demo run time (issue 8)", "demo.md"),
    ("Survival statistics calibration (issue 6)", "survival.md"),
    ("Evaluation metrics (issue 7)", "evaluate.md"),
    ("Measurement core (issue 3)", "measure.md"),
    ("Phantom generator memory (issue 2)", "phantom.md"),
    ("Phantom calibration against real patches (issue 2)", "phantom_calibration.md"),
    ("Browser viewer tiles (issue 17)", "viewer.md"),
]


def main() -> None:
    summary = (HERE / "summary.md").read_text(encoding="utf-8")
    parts = [summary.rstrip() + "\n"]
    seen = set()
    for title, name in ORDER:
        p = HERE / "results" / name
        if p.is_file():
            seen.add(name)
            body = p.read_text(encoding="utf-8").strip()
            body = "\n".join(("###" + line[1:]) if line.startswith("# ") else line for line in body.splitlines())
            parts.append(f"\n## {title}\n\n_Source: `benchmarks/results/{name}`_\n\n{body}\n")
    for p in sorted((HERE / "results").glob("*.md")):
        if p.name not in seen:
            parts.append(f"\n## {p.stem}\n\n{p.read_text(encoding='utf-8').strip()}\n")
    (HERE.parent / "BENCHMARKS.md").write_text("".join(parts), encoding="utf-8")
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
