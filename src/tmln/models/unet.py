"""The lymph-node U-Net: build it from a model card (or plain parameters) and load a model directory.

The network is ``segmentation_models_pytorch.Unet`` with a named encoder and ``encoder_weights=None``
(nothing is downloaded). Its output channels follow ``card.classes``: ``"node"`` (the whole node,
the semantic target) and optionally ``"node_core"`` (the node without a thin band along borders
shared with a touching node; used as watershed markers to split touching nodes).

Everything needed to rebuild the network lives in the card: ``architecture = "unet:<encoder>"``
and ``params["unet"] = {"encoder_depth": int, "decoder_channels": [int, ...]}``.
"""

from __future__ import annotations

from typing import Any

from tmln.device import select_device
from tmln.errors import ModelCardError
from tmln.models.card import ModelCard, load_state_dict, read_card, resolve_model_dir

TASK = "node-segmentation"
DEFAULT_ENCODER = "resnet18"
DEFAULT_DEPTH = 5
DEFAULT_DECODER = (256, 128, 64, 32, 16)


def unet_params(card_or_params: Any) -> dict:
    """The build parameters (encoder, encoder_depth, decoder_channels, classes) of a card or dict.

    A dict may give ``encoder`` (or ``architecture="unet:<encoder>"``), ``encoder_depth``,
    ``decoder_channels`` and ``classes`` (an int or a list of class names).
    """

    if isinstance(card_or_params, ModelCard):
        card = card_or_params
        d = dict(card.params.get("unet", {}))
        d.setdefault("architecture", card.architecture)
        d.setdefault("classes", card.classes)
    elif isinstance(card_or_params, dict):
        d = dict(card_or_params)
    elif isinstance(card_or_params, str):
        d = {"architecture": card_or_params}
    else:
        raise TypeError(f"expected a ModelCard, a dict or an architecture string, got {type(card_or_params).__name__}")
    arch = d.pop("architecture", None)
    encoder = d.pop("encoder", None)
    if encoder is None:
        if not arch:
            encoder = DEFAULT_ENCODER
        else:
            kind, _, encoder = str(arch).partition(":")
            if kind.lower() != "unet" or not encoder:
                raise ModelCardError(f"architecture {arch!r} is not 'unet:<encoder>'")
    depth = int(d.pop("encoder_depth", DEFAULT_DEPTH))
    if not 1 <= depth <= 5:
        raise ModelCardError(f"encoder_depth must be 1..5, got {depth}")
    decoder = d.pop("decoder_channels", None)
    decoder = list(DEFAULT_DECODER[:depth]) if decoder is None else [int(c) for c in decoder]
    if len(decoder) != depth:
        raise ModelCardError(f"decoder_channels needs {depth} entries (one per encoder stage), got {decoder}")
    classes = d.pop("classes", 1)
    n_classes = len(classes) if isinstance(classes, (list, tuple)) else int(classes)
    if n_classes < 1:
        raise ModelCardError("a U-Net needs at least one output class")
    return {"encoder": str(encoder), "encoder_depth": depth, "decoder_channels": decoder, "classes": n_classes}


def build_unet(card_or_params: Any = None):
    """A freshly initialised ``smp.Unet`` (no pretrained weights) for a card, a dict or ``"unet:<encoder>"``."""
    import segmentation_models_pytorch as smp

    p = unet_params(card_or_params if card_or_params is not None else {})
    try:
        return smp.Unet(
            encoder_name=p["encoder"],
            encoder_depth=p["encoder_depth"],
            encoder_weights=None,
            decoder_channels=tuple(p["decoder_channels"]),
            in_channels=3,
            classes=p["classes"],
        )
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ModelCardError(f"cannot build U-Net with encoder {p['encoder']!r} ({exc})") from None


def input_multiple(card_or_params: Any) -> int:
    """Input height/width must be a multiple of this (2 ** encoder_depth)."""
    return 2 ** unet_params(card_or_params)["encoder_depth"]


def load_unet(model_dir_or_name, device="auto"):
    """Load a node-segmentation model directory (or bundled name) -> ``(module.eval(), ModelCard)``.

    The module is on ``device`` ("auto": CUDA if available, else CPU). Weights come from safetensors
    (no code is executed); a mismatch between card and weights raises ``ModelCardError``.
    """

    path = resolve_model_dir(model_dir_or_name)
    card = read_card(path)
    if card.task != TASK:
        raise ModelCardError(f"model task is {card.task!r}, expected {TASK!r}", path)
    net = build_unet(card)
    state = load_state_dict(path)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelCardError(f"weights do not match the card's architecture {card.architecture!r} ({first})", path) from None
    return net.to(select_device(device)).eval(), card


def normalise(x, card: ModelCard):
    """RGB float tensor (N, 3, H, W) in [0, 1] -> the model's input (``card.normalisation`` mean/std)."""
    import torch

    norm = card.normalisation or {}
    mean = torch.as_tensor(norm.get("mean", (0.0, 0.0, 0.0)), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(norm.get("std", (1.0, 1.0, 1.0)), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
