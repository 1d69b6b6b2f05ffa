"""Per-slide state: ``slides/<slide_id>/state.json``, written last and atomically.

A slide is *done* when its state says ``"status": "done"`` and its ``params_hash`` equals the hash of
the current parameters (slide file identity, annotation file contents, models, µm/px override, MLN
rule). Anything else (no state, failed, other parameters, unreadable state) means the slide is redone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from tmln.atomic import write_json

STATE_NAME = "state.json"
STATE_VERSION = 1


def params_hash(params: dict) -> str:
    """sha256 (hex) of the parameters as canonical JSON."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def read_state(slide_dir: str | Path) -> dict | None:
    """The slide's state, or None when absent or unreadable (treated as not done)."""
    p = Path(slide_dir) / STATE_NAME
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def write_state(slide_dir: str | Path, state: dict) -> None:
    write_json(Path(slide_dir) / STATE_NAME, {"state_version": STATE_VERSION, **state})


def clear_state(slide_dir: str | Path) -> None:
    """Remove the state first when a slide is (re)started, so a kill mid-slide never leaves it 'done'."""
    with contextlib.suppress(FileNotFoundError):
        (Path(slide_dir) / STATE_NAME).unlink()


def is_done(state: dict | None, expected_hash: str) -> bool:
    return bool(state) and state.get("status") == "done" and state.get("params_hash") == expected_hash
