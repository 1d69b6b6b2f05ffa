"""Small synthetic slides and models for the tumour engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_slide(path: Path, rgb: np.ndarray, mpp: float, tile: int = 256) -> Path:
    """A single-level tiled TIFF (lossless, so pixels read back exactly) that OpenSlide opens."""
    import tifffile

    ppcm = 1e4 / mpp
    tifffile.imwrite(path, rgb, photometric="rgb", tile=(tile, tile), compression="zlib",
                     resolution=(ppcm, ppcm), resolutionunit="CENTIMETER", metadata=None)
    return path


def texture(h: int, w: int, seed: int = 0, cell: int = 24) -> np.ndarray:
    """Smooth random colour texture (structure at ~``cell`` px), uint8 RGB."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(40, 240, size=(h // cell + 3, w // cell + 3, 3)).astype(np.uint8)
    big = cv2.resize(small, ((w // cell + 3) * cell, (h // cell + 3) * cell), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[cell : cell + h, cell : cell + w])


def card(mpp: float = 0.5, patch: int = 96, arch: str = "resnet18", threshold: float = 0.5, **kw):
    from tmln.models.card import ModelCard

    return ModelCard(task="tumour-classifier", architecture=arch, mpp=mpp, patch_size=patch,
                     classes=["normal", "tumour"], threshold=threshold, **kw)


def small_resnet(seed: int = 0):
    """A one-block-per-stage torchvision ResNet (receptive field 195 px, stride 32): the same code
    path as ResNet-18 at a quarter of the cost."""
    import torch
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(seed)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1).eval()


def make_model_dir(path: Path, arch: str = "resnet18", mpp: float = 0.5, patch: int = 64, seed: int = 0,
                   threshold: float = 0.5) -> Path:
    """A random-weight tumour classifier directory."""
    import torch

    from tmln.models.card import save_model_dir
    from tmln.models.classifier import build_classifier

    torch.manual_seed(seed)
    net = build_classifier(arch)
    return save_model_dir(path, net.state_dict(), card(mpp, patch, arch, threshold))
