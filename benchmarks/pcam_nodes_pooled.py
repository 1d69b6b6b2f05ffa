"""pcam-nodes pooled over every set of unseen phantoms its card records: the test set and each draw.

One draw holds 25-35 nodes per kind, so one node moves a figure by 3-4 % and draws disagree
(benchmarks/results/pcam_nodes_*_draw.md). This sums the counts the card already holds — ``metrics.held_out``
(the test set of ``scripts/train_real_nodes.py``) and every ``metrics.<name>_draw``
(``benchmarks/pcam_nodes_second_draw.py --record-in-card``) — per kind of slide, and gives instance precision
and recall with Wilson 95 % intervals (``tmln.evaluate.auc.proportion_ci``), the false nodes on node-free
sections, and the lowest Dice of any one set (pixel Dice cannot be pooled from the card's counts). Nothing is
run on slides: the figures are those of the result files, added up.

    .venv/bin/python benchmarks/pcam_nodes_pooled.py [pcam-nodes] --out benchmarks/results/pcam_nodes_pooled.md
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from tmln.evaluate.auc import proportion_ci
from tmln.models.card import read_card, resolve_model_dir

KINDS = ("real", "procedural", "procedural-perinodal")
BAR = 0.95  # issue 15: Dice, instance precision and recall >= 0.95 on phantoms of unseen seeds


def draw_names() -> list[str]:
    """The draws made so far, in the order drawn (``DRAWS`` of ``pcam_nodes_second_draw.py`` beside this file)."""
    spec = importlib.util.spec_from_file_location("pcam_nodes_second_draw",
                                                  Path(__file__).with_name("pcam_nodes_second_draw.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return list(mod.DRAWS.values())


def unseen_sets(metrics: dict) -> dict[str, dict]:
    """{set name: {kind: counts}}: the test set (``held_out``) and every ``<name>_draw`` in a card's metrics
    (draws in the order drawn; draws ``DRAWS`` does not name last)."""
    sets = {"test": metrics["held_out"]} if "held_out" in metrics else {}
    order = draw_names()
    names = [k[: -len("_draw")] for k, v in metrics.items() if k.endswith("_draw") and isinstance(v, dict)]
    for name in sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n)):
        sets[name] = metrics[f"{name}_draw"]
    return sets


def pool(sets: dict[str, dict]) -> dict:
    """Per kind: summed tp / n_pred / n_truth / slides over ``sets``, precision and recall with Wilson 95 %
    intervals, Dice as the mean of the sets' Dice weighted by their nodes (a set's Dice is pooled over its node
    areas; the card keeps no areas, so the sets cannot be pooled pixel by pixel) and the lowest Dice of one set;
    ``sections``: slides and false nodes."""
    out = {}
    for kind in KINDS:
        rows = [s[kind] for s in sets.values() if kind in s]
        if not rows:
            continue
        tp, n_pred, n_truth = (sum(int(r[k]) for r in rows) for k in ("tp", "n_pred", "n_truth"))
        out[kind] = {"sets": len(rows), "slides": sum(int(r["slides"]) for r in rows), "nodes": n_truth,
                     "false": n_pred - tp, "missed": n_truth - tp,
                     "precision": tp / n_pred if n_pred else None, "precision_ci": proportion_ci(tp, n_pred),
                     "recall": tp / n_truth if n_truth else None, "recall_ci": proportion_ci(tp, n_truth),
                     "dice": _weighted_dice(rows),
                     "min_dice": min(r["dice"] for r in rows if r.get("dice") is not None)}
    secs = [s["sections"] for s in sets.values() if "sections" in s]
    out["sections"] = {"sets": len(secs), "slides": sum(int(r["slides"]) for r in secs),
                       "false": sum(int(r["n_pred"]) for r in secs)}
    return out


def _weighted_dice(rows: list[dict]) -> float:
    """The sets' Dice, weighted by their true nodes (sets with a Dice only)."""
    rows = [r for r in rows if r.get("dice") is not None and int(r["n_truth"]) > 0]
    return sum(r["dice"] * int(r["n_truth"]) for r in rows) / sum(int(r["n_truth"]) for r in rows)


def markdown(model: str, sets: dict, pooled: dict, command: str) -> str:
    lines = [f"# {model} pooled over every set of unseen phantoms in its card", "",
             f"Command: `{command}` (reads the card; runs nothing on slides).", "",
             f"Sets: {', '.join(sets)} (the script's test set, PCam `valid/` textures, and the draws of "
             "`benchmarks/pcam_nodes_second_draw.py`, PCam `train/` textures). Instances match at IoU >= 0.5; "
             f"counts are summed, intervals are Wilson 95 %. Bar (issue 15): >= {BAR}.", "",
             "| kind | sets | slides | nodes | false | missed | precision (95 % CI) | recall (95 % CI) | Dice (sets weighted by nodes) | lowest Dice of a set |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        if kind not in pooled:
            continue
        r = pooled[kind]

        def fig(v, ci):
            mark = "" if v is None or v >= BAR else " **below**"
            return "–" if v is None else f"{v:.3f} ({ci[0]:.3f}-{ci[1]:.3f}){mark}"

        lines.append(f"| {kind} | {r['sets']} | {r['slides']} | {r['nodes']} | {r['false']} | {r['missed']} | "
                     f"{fig(r['precision'], r['precision_ci'])} | {fig(r['recall'], r['recall_ci'])} | {r['dice']:.3f}{'' if r['dice'] >= BAR else ' **below**'} "
                     f"| {r['min_dice']:.3f} |")
    s = pooled["sections"]
    lines += ["", f"Node-free sections: {s['false']} false node(s) on {s['slides']} slides ({s['sets']} sets).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="pcam-nodes", help="a bundled model name or a model directory")
    ap.add_argument("--out", type=Path, default=None, help="results markdown (default: print)")
    a = ap.parse_args(argv)
    card = read_card(resolve_model_dir(a.model))
    sets = unseen_sets(card.metrics)
    if not sets:
        raise SystemExit(f"{a.model}: its card records no test set or draw (metrics.held_out, metrics.<name>_draw)")
    cmd = ".venv/bin/python benchmarks/pcam_nodes_pooled.py" + ("" if a.model == "pcam-nodes" else f" {a.model}")
    text = markdown(Path(a.model).name, sets, pool(sets), cmd)
    from common import emit  # benchmarks/common.py (the script's folder is on sys.path when run)

    emit(text, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
