"""pcam-nodes on a second, independent draw of held-out phantoms: how much the test figures move.

The test set of ``scripts/train_real_nodes.py`` is small (35 + 23 nodes: one node is 3-4 %). This draws
36 more slides exactly as that script draws its validation slides (``make_validation``: 8 real-textured
perinodal phantoms, 6 procedural, 6 procedural perinodal, 16 node-free sections), from seeds 3300+
that no training, rule choice or earlier test used, textured from PCam ``train/`` (the patch pool of the
training textures; the script's test set uses ``valid/``), and scores each model as the script's
``evaluate`` does (instances matched at IoU >= 0.5; Dice pooled over node areas).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/pcam_nodes_second_draw.py --work build/second-draw \\
        --out benchmarks/results/pcam_nodes_second_draw.md [pcam-nodes] [MODEL_DIR ...]

``--seed 3500 --work build/third-draw`` makes a third draw (results/pcam_nodes_third_draw.md; 3600-4500: the
fourth to thirteenth, ``--work build/<name>-draw``); a draw's name in
cards and results comes from ``DRAWS``. ``--record-in-card`` also writes each model's figures into its card (``metrics.<name>_draw``, and a line in
``metrics.tested_on``): a model directory, or a bundled name for the card shipped in the package.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TMLN_SHARED", REPO.parent / "shared"))
SEED = 3300
KINDS = ("real", "procedural", "procedural-perinodal", "sections")


def _script():
    spec = importlib.util.spec_from_file_location("train_real_nodes", REPO / "scripts" / "train_real_nodes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def score(trn, model: str, slides: dict[str, Path]) -> dict:
    """Per kind: the script's ``_score`` (pooled Dice, instance precision / recall, counts)."""
    return {kind: trn._score(model, trn.cohort_slides(slides[kind]), (lambda p: []) if kind == "sections" else trn.node_truth)
            for kind in KINDS}

DRAWS = {SEED: "second", 3500: "third", 3600: "fourth", 3700: "fifth", 3800: "sixth", 3900: "seventh", 4000: "eighth", 4100: "ninth", 4200: "tenth",
         4300: "eleventh", 4400: "twelfth", 4500: "thirteenth"}  # the draws made so far: their name in cards and results


def draw_name(seed: int) -> str:
    return DRAWS.get(seed, f"seed-{seed}")


def a_draw(seed: int) -> str:
    """'a third draw', 'an eighth draw'."""
    name = draw_name(seed)
    return f"{'an' if name[0] in 'aeio' else 'a'} {name} draw"


def tested_on(seed: int) -> str:
    return (f"{a_draw(seed)} of 36 phantoms of unseen seeds ({seed}+; PCam train/ textures; "
            "benchmarks/pcam_nodes_second_draw.py)")


def record(model: str, res: dict, seed: int = SEED) -> None:
    """``res`` into the card of ``model`` (a model directory or a bundled name): ``metrics.<name>_draw``."""
    from tmln.atomic import write_json
    from tmln.models.card import CARD_NAME, read_card, resolve_model_dir

    d = resolve_model_dir(model)
    card = read_card(d)
    tested = [t for t in card.metrics.get("tested_on", []) if t != tested_on(seed)]
    card.metrics = {**card.metrics, "tested_on": [*tested, tested_on(seed)],
                    f"{draw_name(seed)}_draw": {k: {kk: vv for kk, vv in v.items() if kk != "per_slide"}
                                                for k, v in res.items()}}
    write_json(Path(d) / CARD_NAME, card.to_dict())


def markdown(results: dict, command: str, seconds: float, what: str, seed: int = SEED) -> str:
    lines = [f"# pcam-nodes on {a_draw(seed)} of held-out phantoms (seeds {seed}+)", "",
             f"Command: `{command}` ({seconds / 60:.0f} min on 2 cores, {what}).", "",
             "36 slides drawn like the validation slides of `scripts/train_real_nodes.py`, from seeds no training, "
             "rule choice or earlier test used; textures from PCam `train/` (the training textures' patch pool; "
             "the script's test set uses `valid/`). Instances match at IoU >= 0.5.", "",
             "| model | slides | nodes | Dice | instance precision | instance recall | false nodes | missed nodes |",
             "|---|---|---|---|---|---|---|---|"]
    for model, res in results.items():
        for kind in KINDS:
            r = res[kind]
            fmt = lambda v: "–" if v is None or kind == "sections" else f"{v:.3f}"  # noqa: E731
            lines.append(f"| {model}: {kind} | {r['slides']} | {r['n_truth']} | {fmt(r['dice'])} | {fmt(r['precision'])} "
                         f"| {fmt(r['recall'])} | {r['n_pred'] - r['tp']} | {r['n_truth'] - r['tp']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["pcam-nodes"], help="bundled model names or model directories")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "second-draw", help="where the slides are drawn")
    ap.add_argument("--out", type=Path, default=None, help="results markdown (default: print)")
    ap.add_argument("--record-in-card", action="store_true", help="write the figures into each model's card")
    ap.add_argument("--seed", type=int, default=SEED, help=f"first seed of the draw (default {SEED}; another draw: "
                    "seeds no training, rule choice or earlier draw used, e.g. 3500)")
    ap.add_argument("--draw-only", action="store_true", help="draw the slides, score nothing")
    a = ap.parse_args(argv)
    if not (SHARED / "data" / "pcam" / "train").is_dir():
        raise SystemExit(f"PCam patches not found under {SHARED / 'data' / 'pcam'} (set TMLN_SHARED)")
    t = time.time()
    trn = _script()
    trn.VAL_SEED = a.seed
    drawn_before = (a.work / "val" / "sections" / "done").is_file()
    slides = trn.make_validation(SHARED, a.work, second=False)  # the validation's second draw has fixed seeds: not drawn
    if a.draw_only:
        return 0
    results = {Path(m).name if Path(m).is_dir() else m: score(trn, m, slides) for m in a.models}
    if a.record_in_card:
        for m, res in zip(a.models, results.values()):
            record(m, res, a.seed)
    cmd = ("OMP_NUM_THREADS=2 .venv/bin/python benchmarks/pcam_nodes_second_draw.py "
           + ("" if a.seed == SEED else f"--seed {a.seed} --work build/{draw_name(a.seed)}-draw ") + " ".join(a.models))
    text = markdown(results, cmd, time.time() - t, "slides drawn before" if drawn_before else "slides included", a.seed)
    from common import emit  # benchmarks/common.py (the script's folder is on sys.path when run)

    emit(text, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
