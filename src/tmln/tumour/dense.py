"""Fully convolutional form of a patch classifier: features -> per-cell logits -> k×k mean.

A CNN patch classifier of the form ``fc(mean over cells of features(patch))`` (global average
pooling, then a linear head) is linear after the feature extractor, so for a patch of ``k × k``
feature cells

    logit(patch) = mean over its k×k cells of (fc applied to each cell's feature vector)

Applying ``fc`` as a 1×1 convolution to the feature map of a large tile therefore gives one
*cell logit* per ``stride`` px, and the mean of the ``k × k`` cell logits under a patch is the
patch classifier's logit for that patch, **up to border effects**: inside the patch classifier the
cells at the patch border see zero padding, in the tile they see the real neighbouring tissue.
This module builds that form for architectures where it is valid and computes the receptive
field of the feature extractor, which gives the tile margin that makes tiling exact (a cell whose
receptive field lies inside the tile is identical to the same cell computed on the whole slide at
once).

Architectures with channel attention over the whole image (squeeze-and-excitation:
EfficientNet, MobileNetV3, RegNetY) or a non-linear head after pooling are not equivalent; the
engine classifies them patch by patch on a stride grid instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ReceptiveField:
    """Geometry of a feature extractor, input px: feature cell ``i`` is centred on input pixel
    ``start + i * stride`` (pixel indices, centre of pixel 0 at 0) and depends on input pixels
    within ``± (size - 1) / 2`` of it."""

    size: int
    stride: int
    start: float

    def margins(self) -> tuple[int, int]:
        """(cells before, cells after) that must be dropped at each tile edge so that every kept cell's
        receptive field lies inside the tile (then tiling is exact)."""
        half = (self.size - 1) / 2
        lo = max(0, math.ceil((half - self.start) / self.stride - 1e-9))
        hi = max(0, math.ceil((1 + self.start + half) / self.stride - 1e-9) - 1)
        return lo, hi


def receptive_field(features: nn.Module) -> ReceptiveField:
    """Receptive field of a chain of convolutions and poolings (module registration order).

    Parallel strided shortcuts (ResNet ``downsample``) are skipped: they never widen the field.
    Valid for the feature extractors ``dense_form`` accepts (ResNet, DenseNet, MobileNetV2).
    """
    size, stride, start = 1.0, 1, 0.0
    for name, mod in features.named_modules():
        if "downsample" in name.split("."):
            continue
        if isinstance(mod, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p, d = (_first(getattr(mod, a, 1)) for a in ("kernel_size", "stride", "padding", "dilation"))
            if isinstance(mod, nn.AvgPool2d):
                d = 1
            keff = d * (k - 1) + 1
            size += (keff - 1) * stride
            start += ((keff - 1) / 2 - p) * stride
            stride *= s
    return ReceptiveField(int(size), int(stride), float(start))


def _first(v):
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


class DenseForm(nn.Module):
    """``features`` then the linear head as a 1×1 convolution: image (N,3,H,W) -> cell logits
    (N, outputs, H/stride, W/stride)."""

    def __init__(self, features: nn.Module, linear: nn.Linear, rf: ReceptiveField):
        super().__init__()
        self.features = features
        self.head = nn.Conv2d(linear.in_features, linear.out_features, 1)
        with torch.no_grad():
            self.head.weight.copy_(linear.weight[:, :, None, None])
            self.head.bias.copy_(linear.bias if linear.bias is not None else torch.zeros(linear.out_features))
        self.rf = rf

    @property
    def stride(self) -> int:
        return self.rf.stride

    def forward(self, x):
        return self.head(self.features(x))


def dense_form(module: nn.Module, fuse_bn: bool = True) -> DenseForm | None:
    """The fully convolutional form of a classifier, or ``None`` where it is not equivalent.

    Supported: torchvision ResNet / ResNeXt / Wide-ResNet, DenseNet, MobileNetV2 (all end in global
    average pooling + a linear layer). ``fuse_bn`` folds eval-mode BatchNorm into the preceding
    convolutions (same function, fewer memory passes). The module must be in eval mode.
    """
    import torchvision.models as tvm

    features = linear = None
    if type(module) is tvm.ResNet:
        m = module
        features = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
        linear = m.fc
    elif type(module) is tvm.DenseNet:
        features = nn.Sequential(module.features, nn.ReLU())
        linear = module.classifier
    elif type(module) is tvm.MobileNetV2:
        head = [c for c in module.classifier if not isinstance(c, nn.Dropout)]
        if len(head) == 1:
            features, linear = module.features, head[0]
    if features is None or not isinstance(linear, nn.Linear):
        return None
    rf = receptive_field(features)
    if fuse_bn and not module.training:
        features = _fuse(features)
    return DenseForm(features, linear, rf).eval()


def _fuse(features: nn.Module) -> nn.Module:
    """Fold BatchNorm into convolutions (torch.fx); the unfused module where tracing fails."""
    import copy

    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(copy.deepcopy(features))
    except Exception:  # pragma: no cover - untraceable module: keep it as is
        return features
