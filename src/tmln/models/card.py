"""The model directory: ``MODEL/model.safetensors`` + ``MODEL/model_card.json``.

The card holds everything inference needs (task, architecture, µm/px, patch/tile size,
normalisation, threshold, classes) and what a reader needs to trust it (training data, metrics,
tmln version). Inference reads the card, never flags. Weights are safetensors: loading never
executes code from the file. Bundled models live in ``tmln/models/bundled/<name>/`` and are
addressed by name wherever a model directory is accepted.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tmln import __version__
from tmln.atomic import atomic_path, file_digest, file_identity, write_json
from tmln.errors import ModelCardError

CARD_NAME = "model_card.json"
WEIGHTS_NAME = "model.safetensors"
CARD_FORMAT = 1
TASKS = ("tumour-classifier", "node-segmentation", "node-edge-classifier")
BUNDLED_DIR = Path(__file__).parent / "bundled"

# ImageNet statistics: the default input normalisation (applied to RGB in [0, 1])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelCard:
    """Everything needed to run and to trust a model. Units: ``mpp`` µm/px; ``patch_size`` px."""

    task: str
    architecture: str
    mpp: float
    patch_size: int
    classes: list[str]
    threshold: float = 0.5
    normalisation: dict[str, Any] = field(
        default_factory=lambda: {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "stain": None}
    )
    params: dict[str, Any] = field(default_factory=dict)  # task-specific inference parameters
    training: dict[str, Any] = field(default_factory=dict)  # data summary, epochs, seed, split
    metrics: dict[str, Any] = field(default_factory=dict)  # validation metrics
    intended_use: str = "research use only; not for diagnosis"
    tmln_version: str = ""
    format: int = CARD_FORMAT

    def __post_init__(self):
        if self.task not in TASKS:
            raise ModelCardError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if not (self.mpp and self.mpp > 0):
            raise ModelCardError(f"mpp must be positive, got {self.mpp!r}")
        if int(self.patch_size) <= 0:
            raise ModelCardError(f"patch_size must be positive, got {self.patch_size!r}")
        if not self.tmln_version:
            self.tmln_version = __version__

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, path: Path | str | None = None) -> "ModelCard":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("task", "architecture", "mpp", "patch_size", "classes") if k not in d]
        if missing:
            raise ModelCardError(f"model card lacks required field(s) {missing}", path)
        unknown = set(d) - names
        if unknown:
            raise ModelCardError(f"model card has unknown field(s) {sorted(unknown)}", path)
        if int(d.get("format", CARD_FORMAT)) > CARD_FORMAT:
            raise ModelCardError(f"model card format {d['format']} is newer than this tmln understands", path)
        try:
            return cls(**d)
        except ModelCardError as err:
            raise ModelCardError(err.message, path) from None


def resolve_model_dir(model: str | Path) -> Path:
    """A model directory path, or the name of a bundled model (``tmln models`` lists them)."""
    p = Path(model)
    if p.is_dir():
        return p
    bundled = BUNDLED_DIR / str(model)
    if (bundled / CARD_NAME).is_file():
        return bundled
    names = ", ".join(list_bundled()) or "none"
    raise ModelCardError(f"not a model directory nor a bundled model name (bundled: {names})", model)


def list_bundled() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CARD_NAME).is_file())


def model_identity(name: str | Path) -> dict:
    """What a model is, not how its name or path is spelt: the sha256 of its card and the size and
    modification time (ns) of its weights, so a retrained model redoes slides and ``models/m``,
    ``./models/m/`` and ``/abs/models/m`` are one model. The name as given when it cannot be resolved."""
    try:
        d = resolve_model_dir(name)
        return {"card_sha256": file_digest(Path(d) / CARD_NAME), "weights": file_identity(Path(d) / WEIGHTS_NAME)}
    except Exception:  # the provider reports unusable models per slide
        return {"name": str(name)}


def read_card(model: str | Path) -> ModelCard:
    d = resolve_model_dir(model)
    path = d / CARD_NAME
    if not path.is_file():
        raise ModelCardError(f"no {CARD_NAME} in model directory", d)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"model card is not valid JSON ({exc})", path) from None
    return ModelCard.from_dict(obj, path)


def load_state_dict(model: str | Path) -> dict:
    """Tensors from ``model.safetensors`` (no code is executed)."""
    from safetensors.torch import load_file

    d = resolve_model_dir(model)
    path = d / WEIGHTS_NAME
    if not path.is_file():
        raise ModelCardError(f"no {WEIGHTS_NAME} in model directory", d)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelCardError(f"cannot read weights ({exc})", path) from None


def state_dict_mismatch(exc: Exception) -> str:
    """The first specific line of ``load_state_dict``'s error (e.g. ``size mismatch for fc.weight: ...``),
    for a message that names what does not fit without PyTorch's whole list."""
    lines = str(exc).strip().splitlines()
    return lines[1].strip() if len(lines) > 1 else lines[0]


def save_model_dir(model_dir: str | Path, state_dict: dict, card: ModelCard) -> Path:
    """Write weights and card atomically (each to a temporary name, then renamed; card last)."""
    from safetensors.torch import save_file

    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(d / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"task": card.task, "architecture": card.architecture})
    write_json(d / CARD_NAME, card.to_dict())
    return d
