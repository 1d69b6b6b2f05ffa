"""When a slide is done: its ``state.json`` (``tmln.rundir.SlideDir``, written last and atomically).

A slide is *done* when its state says ``"status": "done"`` and its ``params_hash`` equals the hash of
the current parameters (slide file identity, annotation file contents, models, µm/px override, MLN
rule). Anything else (no state, failed, other parameters, unreadable state) means the slide is redone.
"""

from __future__ import annotations

import hashlib
import json
def params_hash(params: dict) -> str:
    """sha256 (hex) of the parameters as canonical JSON."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def is_done(state: dict | None, expected_hash: str) -> bool:
    return bool(state) and state.get("status") == "done" and state.get("params_hash") == expected_hash
