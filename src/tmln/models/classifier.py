"""Patch classifiers: build by architecture name, load from a model directory, prepare inputs.

A tumour classifier maps an RGB patch (``card.patch_size`` px at ``card.mpp`` µm/px) to logits;
with one output (the default, ``num_classes=1``) that output is the tumour logit and
``sigmoid(logit)`` the tumour probability. Architectures come from torchvision by name, else timm
by name; weights are never downloaded (``weights=None`` / ``pretrained=False``): they come from
the model directory's ``model.safetensors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tmln.device import select_device
from tmln.errors import ModelCardError
from tmln.models.card import ModelCard, load_state_dict, read_card, resolve_model_dir, state_dict_mismatch
from tmln.stain import normalise as stain_normalise

# torchvision models whose auxiliary heads would change the forward's return type
_NO_AUX = {"inception_v3", "googlenet"}


def torchvision_architectures() -> list[str]:
    """Names of torchvision's image-classification models."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def build_classifier(architecture: str, num_classes: int = 1):
    """An untrained classifier with ``num_classes`` output logits (1 = the tumour logit).

    ``architecture`` is a torchvision classification model name (``resnet18``, ``efficientnet_b0``,
    ...) or, failing that, a timm model name (``convnext_tiny``, ``vit_small_patch16_224``, ...).
    Raises ``ModelCardError`` for a name neither library knows.
    """
    import torch  # noqa: F401  (torch before torchvision/timm: clearer import errors)

    name = str(architecture)
    if int(num_classes) < 1:
        raise ModelCardError(f"num_classes must be >= 1, got {num_classes!r}")
    if name in torchvision_architectures():
        import torchvision

        kwargs: dict[str, Any] = {"weights": None, "num_classes": int(num_classes)}
        if name in _NO_AUX:
            kwargs.update(aux_logits=False, init_weights=True)
        return torchvision.models.get_model(name, **kwargs)
    import timm

    if timm.is_model(name):
        return timm.create_model(name, pretrained=False, num_classes=int(num_classes))
    raise ModelCardError(
        f"unknown architecture {name!r}: not a torchvision classification model nor a timm model "
        "(see torchvision.models.list_models() and timm.list_models())"
    )


def num_outputs(card: ModelCard) -> int:
    """Logits the card's model produces: ``card.params['num_outputs']`` if set, else 1 for a binary
    (or single-class) task, else one per class."""
    n = card.params.get("num_outputs") if isinstance(card.params, dict) else None
    if n is not None:
        return int(n)
    return 1 if len(card.classes) <= 2 else len(card.classes)


def _strip_prefixes(state: dict) -> dict:
    """Remove wrapper prefixes left by DDP (``module.``) or ``torch.compile`` (``_orig_mod.``)."""
    out = {}
    for k, v in state.items():
        for p in ("module.", "_orig_mod."):
            while k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def load_classifier(model_dir_or_name: str | Path, device: str | None = "auto", task: str = "tumour-classifier"):
    """``(module.eval() on device, ModelCard)`` from a model directory or bundled model name.

    ``task``: the card's task (a patch classifier: ``tumour-classifier`` or ``node-edge-classifier``).

    Weights come from safetensors (no code executed); a card/weights mismatch raises
    ``ModelCardError`` naming the directory.
    """

    model_dir = resolve_model_dir(model_dir_or_name)
    card = read_card(model_dir)
    if card.task != task:
        raise ModelCardError(f"model task is {card.task!r}, expected {task!r}", model_dir)
    module = build_classifier(card.architecture, num_outputs(card))
    state = _strip_prefixes(load_state_dict(model_dir))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelCardError(
            f"weights do not fit architecture {card.architecture!r} with {num_outputs(card)} output(s): "
            + state_dict_mismatch(exc),
            model_dir,
        ) from None
    dev = select_device(device)
    return module.to(dev).eval(), card


class InputTransform:
    """uint8 RGB -> normalised float tensor, as the model was trained.

    Call with an ``(H, W, 3)`` image or an ``(N, H, W, 3)`` batch (numpy uint8 or torch uint8);
    returns ``(3, H, W)`` / ``(N, 3, H, W)`` float32. The stain step (Macenko to the card's
    reference, when ``card.normalisation['stain']`` is set) works on numpy RGB and can run in
    DataLoader workers (``stain``); ``normalise`` works on torch uint8 NCHW/NHWC batches on any
    device, so the engine can send uint8 to the GPU and normalise there. Picklable.
    """

    def __init__(self, card: ModelCard):
        norm = card.normalisation or {}
        self.mean = tuple(float(v) for v in norm.get("mean") or (0.0, 0.0, 0.0))
        self.std = tuple(float(v) for v in norm.get("std") or (1.0, 1.0, 1.0))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelCardError(f"model card normalisation needs 3 means and 3 positive stds, got {norm!r}")
        self.reference = norm.get("stain") or None

    @property
    def has_stain(self) -> bool:
        return self.reference is not None

    def stain(self, rgb: np.ndarray) -> np.ndarray:
        """Macenko-normalise ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 RGB to the card's reference
        (identity when the card has none)."""
        if self.reference is None:
            return rgb

        if rgb.ndim == 4:
            return np.stack([np.asarray(stain_normalise(im, self.reference), dtype=np.uint8) for im in rgb])
        return np.asarray(stain_normalise(rgb, self.reference), dtype=np.uint8)

    def normalise(self, batch, channels_last_input: bool = True):
        """Torch uint8 batch ``(N, H, W, 3)`` (or ``(N, 3, H, W)`` with ``channels_last_input=False``)
        -> float32 ``(N, 3, H, W)``: ``(x / 255 - mean) / std`` on the batch's device."""
        import torch

        x = batch.permute(0, 3, 1, 2) if channels_last_input else batch
        x = x.to(torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
        return (x - mean) / std

    def __call__(self, rgb):
        import torch

        arr = rgb.numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
        if arr.dtype != np.uint8 or arr.shape[-1] != 3 or arr.ndim not in (3, 4):
            raise ValueError(f"expected uint8 RGB (H, W, 3) or (N, H, W, 3), got {arr.dtype} {arr.shape}")
        single = arr.ndim == 3
        arr = self.stain(arr[None] if single else arr)
        out = self.normalise(torch.from_numpy(np.ascontiguousarray(arr)))
        return out[0] if single else out


def input_transform(card: ModelCard) -> InputTransform:
    """The card's input transform (see ``InputTransform``)."""
    return InputTransform(card)


def predict_proba(module, batch, transform: InputTransform | None = None, card=None):
    """Tumour probabilities for a float ``(N, 3, H, W)`` batch, or a uint8 ``(N, H, W, 3)`` batch
    given ``transform``/``card``. One logit -> sigmoid; several -> softmax (all columns)."""
    import torch

    if batch.dtype == torch.uint8:
        transform = transform or InputTransform(card)
        batch = transform.normalise(batch)
    with torch.inference_mode():
        logits = module(batch)
    return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
