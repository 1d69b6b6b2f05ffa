"""The run directory as code (tmln.rundir) against docs/run-directory.md and against a real run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tmln import rundir as R
from tmln.cohort.run import run_cohort
from tmln.phantom import make_cohort
from tmln.rundir import RunDir, SlideDir

DOC = Path(__file__).resolve().parents[1] / "docs" / "run-directory.md"


def documented_tree(text: str) -> dict[str, set[str]]:
    """The file names of the tree drawn in the doc's first code block, keyed by where and when:
    ``run``, ``slide`` (always there) and ``run <condition>`` / ``slide <condition>`` for the lines
    marked ``(only with <condition>: ...)``."""
    block = text.split("```", 2)[1]
    tree: dict[str, set[str]] = {}
    for line in block.splitlines()[1:]:
        if not line.strip() or line.strip().endswith("/"):
            continue
        where = "run" if len(line) - len(line.lstrip()) == 2 else "slide"
        names, _, remark = line.strip().partition("(")
        cond = re.match(r"only with ([^:)]+)", remark)
        key = where + (f" {cond.group(1).strip()}" if cond else "")
        tree.setdefault(key, set()).update(names.split())
    return tree


def test_documented_tree_is_the_module():
    tree = documented_tree(DOC.read_text(encoding="utf-8"))
    assert tree == {
        "run": {*R.RUN_OUTPUTS, R.LOCK},
        "run --slides DIR": {R.DERIVED_TABLE},
        "slide": {R.STATE_JSON, *R.SLIDE_OUTPUTS},
        "slide --node-model": set(R.NODE_MODEL_OUTPUTS),
        "slide --tumour-model": set(R.TUMOUR_MODEL_OUTPUTS),
    }


def test_documented_tree_parser_sees_a_missing_file():
    text = DOC.read_text(encoding="utf-8").replace("overlay.png", "", 1)
    assert R.OVERLAY_PNG not in documented_tree(text)["slide"]


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()}


@pytest.mark.slow
def test_run_tree_is_the_documented_tree(tmp_path):
    ph = make_cohort(tmp_path / "ph", patients=1, slides_per_patient=1, seed=2, size_mm=(3.0, 2.0))
    slides_csv = ph  # make_cohort returns the slides table it wrote
    tree = documented_tree(DOC.read_text(encoding="utf-8"))
    run = RunDir(tmp_path / "run")
    run_cohort(slides_csv, run.path, node_model="demo-nodes", tumour_model="demo-tumour", device="cpu",
               tumour_precision="fp32", quiet=True)
    assert _files(run.path) == tree["run"]
    assert [p.name for p in run.path.iterdir() if p.is_dir()] == [R.SLIDES]
    (sd,) = [SlideDir(p) for p in run.slides.iterdir()]
    assert _files(sd.path) == tree["slide"] | tree["slide --node-model"] | tree["slide --tumour-model"]
    assert sd.read_state()["status"] == "done" and sd.has_outputs() and sd.has_tumour_map()

    # the slide fails on a rerun (no node outline file): none of its earlier outputs survives
    empty = tmp_path / "no-outlines"
    empty.mkdir()
    run_cohort(slides_csv, run.path, node_annotations=empty, tumour_annotations=empty, quiet=True)
    assert _files(sd.path) == {R.STATE_JSON}
    assert sd.read_state()["status"] == "failed"


def test_slide_dir_state_roundtrip_and_clear(tmp_path):
    sd = RunDir(tmp_path).slide("S1")
    assert sd.path == tmp_path / R.SLIDES / "S1" and sd.slide_id == "S1"
    assert sd.read_state() is None
    sd.write_state({"status": "done"})
    assert sd.read_state() == {"state_version": R.STATE_VERSION, "status": "done"}
    sd.state.write_text("{truncated")
    assert sd.read_state() is None
    sd.clear_state()
    assert not sd.state.exists()
    for name in (R.NODES_CSV, R.TUMOUR_MAP_NPY):
        (sd.path / name).write_text("x")
    (sd.path / "sub").mkdir()
    assert not sd.has_outputs()
    sd.clear()
    assert list(sd.path.iterdir()) == []
