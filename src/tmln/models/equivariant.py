"""D4 weight tying for ResNets: train rotation- and flip-equivariant, ship a plain ResNet.

Veeling et al. (MICCAI 2018) credit rotation-equivariant (p4m) group convolutions (Cohen & Welling,
ICML 2016) for much of their PCam result: a tissue patch has no "up", so a network whose features
turn with the image and whose output ignores the turn does not have to learn each orientation anew.

``D4ResNet`` is a torchvision BasicBlock ResNet (``resnet18``, ``resnet34``) whose every convolution,
batch norm and the final layer are *tied* over the dihedral group D4 (4 rotations x 2 flips):

* a feature map holds ``C`` free channels x 8 orientations (plain channel ``c * 8 + g``);
* the stem lifts the image: orientation ``g`` of filter ``c`` is the filter turned by ``g``;
* every later convolution turns its filter by ``g`` and permutes its input orientations by
  ``g^-1`` (a group convolution), so ``f(turn(x)) = turn_and_permute(f(x))`` layer by layer;
* batch norm shares its statistics and affine over the 8 orientations of a channel;
* the head averages the 8 orientations, so the logit is the same for all 8 turns of a patch
  (exactly where every strided layer's input has an odd size, e.g. 97 px; to the sampling grid's
  half-pixel otherwise).

The tied network has the plain network's layer widths (``C * 8`` = 64, 128, 256, 512), hence its
speed, and 1/8 of its free parameters. ``plain_state_dict`` writes the expanded weights under
torchvision's names, so the model directory holds an ordinary ``resnet18`` that every tmln engine
(the streamed fully convolutional map included) runs unchanged, and that fine-tunes untied.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ORDER = 8  # |D4|: 4 rotations x 2 flips
_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}  # BasicBlocks per stage
SUPPORTED = tuple(_BLOCKS)


def act(g: int, a: np.ndarray) -> np.ndarray:
    """Element ``g`` (0-7) of D4 acting on the last two axes: flip left-right if ``g >= 4``, then
    rotate by ``(g % 4) x 90°`` (``np.rot90``). Torch tensors: ``act_torch``."""
    if g >= 4:
        a = a[..., ::-1]
    return np.rot90(a, g % 4, axes=(-2, -1))


def act_torch(g: int, x: torch.Tensor) -> torch.Tensor:
    """``act`` for a torch tensor (last two axes)."""
    if g >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, g % 4, dims=(-2, -1))


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(product ``mul[g, h]`` with ``act(mul[g, h], a) == act(g, act(h, a))``, inverse ``inv[g]``),
    found by acting on a generic 3 x 3 array."""
    probe = np.arange(9.0).reshape(3, 3) ** 2
    images = [act(g, probe) for g in range(ORDER)]
    mul = np.zeros((ORDER, ORDER), dtype=np.int64)
    for g in range(ORDER):
        for h in range(ORDER):
            gh = act(g, act(h, probe))
            mul[g, h] = next(k for k in range(ORDER) if np.array_equal(images[k], gh))
    inv = np.array([int(np.nonzero(mul[g] == 0)[0][0]) for g in range(ORDER)])
    return mul, inv


MUL, INV = _tables()


def _expansion(out_c: int, in_c: int, k: int, lifting: bool) -> torch.Tensor:
    """Indices into a tied weight's flattened values that give the plain weight
    ``(out_c * 8, in_c [* 8], k, k)``: orientation ``g`` of output channel ``o`` is the free filter
    turned by ``g``, its input orientations ``h`` read from ``g^-1 h`` (group convolutions)."""
    shape = (out_c, in_c, k, k) if lifting else (out_c, in_c, ORDER, k, k)
    flat = np.arange(int(np.prod(shape))).reshape(shape)
    per_g = []
    for g in range(ORDER):
        w = flat if lifting else flat[:, :, MUL[INV[g]], :, :]  # input orientation h <- g^-1 h
        w = act(g, w)
        per_g.append(w if lifting else w.reshape(out_c, in_c * ORDER, k, k))
    plain = np.stack(per_g, axis=1)  # (out_c, 8, in, k, k)
    return torch.from_numpy(np.ascontiguousarray(plain.reshape(out_c * ORDER, -1, k, k)))


class TiedConv2d(nn.Module):
    """A convolution tied over D4 (no bias). ``lifting``: input is an image (``in_c`` plain
    channels); otherwise input and output hold ``in_c`` / ``out_c`` channels x 8 orientations."""

    def __init__(self, in_c: int, out_c: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 lifting: bool = False):
        super().__init__()
        self.stride, self.padding, self.lifting = stride, padding, lifting
        # free weights (out, in [x 8 input orientations], k, k), 4-D so channels-last memory applies
        self.weight = nn.Parameter(torch.empty(out_c, in_c * (1 if lifting else ORDER), kernel_size, kernel_size))
        fan_in = self.weight[0].numel()
        nn.init.normal_(self.weight, std=(2.0 / fan_in) ** 0.5)  # He init, as torchvision's ResNet (fan_out there)
        self.register_buffer("index", _expansion(out_c, in_c, kernel_size, lifting), persistent=False)

    def plain_weight(self) -> torch.Tensor:
        """The equivalent plain convolution weight ``(out_c * 8, in, k, k)``."""
        return self.weight.reshape(-1)[self.index]

    def forward(self, x):
        return F.conv2d(x, self.plain_weight(), stride=self.stride, padding=self.padding)


class TiedBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over ``channels`` free channels, each shared by its 8 orientations (statistics
    over batch, space and orientation)."""

    def forward(self, x):
        n, c8, h, w = x.shape
        y = super().forward(x.reshape(n, c8 // ORDER, ORDER * h, w))
        return y.reshape(n, c8, h, w)

    def plain_state(self) -> dict[str, torch.Tensor]:
        """Parameters and running statistics repeated per orientation (plain ``BatchNorm2d``)."""
        out = {}
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[name] = getattr(self, name).detach().repeat_interleave(ORDER)
        out["num_batches_tracked"] = self.num_batches_tracked.detach().clone()
        return out


class _Block(nn.Module):
    """torchvision's ``BasicBlock``, tied."""

    def __init__(self, in_c: int, out_c: int, stride: int):
        super().__init__()
        self.conv1 = TiedConv2d(in_c, out_c, 3, stride, 1)
        self.bn1 = TiedBatchNorm2d(out_c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = TiedConv2d(out_c, out_c, 3, 1, 1)
        self.bn2 = TiedBatchNorm2d(out_c)
        self.downsample = None
        if stride != 1 or in_c != out_c:
            self.downsample = nn.Sequential(TiedConv2d(in_c, out_c, 1, stride, 0), TiedBatchNorm2d(out_c))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class D4ResNet(nn.Module):
    """A BasicBlock ResNet tied over D4, with torchvision's module names (see the module docstring).

    Plain widths 64, 128, 256, 512 = 8, 16, 32, 64 free channels x 8 orientations.
    """

    def __init__(self, architecture: str = "resnet18", num_classes: int = 1):
        super().__init__()
        if architecture not in _BLOCKS:
            raise ValueError(f"D4 weight tying supports {', '.join(SUPPORTED)}, not {architecture!r}")
        widths = [64 // ORDER, 128 // ORDER, 256 // ORDER, 512 // ORDER]
        self.conv1 = TiedConv2d(3, widths[0], 7, 2, 3, lifting=True)
        self.bn1 = TiedBatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_c = widths[0]
        for i, (width, n) in enumerate(zip(widths, _BLOCKS[architecture])):
            blocks = [_Block(in_c, width, 1 if i == 0 else 2)] + [_Block(width, width, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_c = width
        self.fc = nn.Linear(in_c, num_classes)  # on the orientation-averaged features

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        n, c8 = x.shape[:2]
        pooled = x.mean(dim=(2, 3)).reshape(n, c8 // ORDER, ORDER).mean(dim=2)  # invariant to D4
        return self.fc(pooled)

    def plain_state_dict(self) -> dict[str, torch.Tensor]:
        """The equivalent plain torchvision ResNet's ``state_dict`` (same outputs, same names)."""
        out: dict[str, torch.Tensor] = {}
        for name, module in self.named_modules():
            prefix = f"{name}." if name else ""
            if isinstance(module, TiedConv2d):
                out[prefix + "weight"] = module.plain_weight().detach().clone()
            elif isinstance(module, TiedBatchNorm2d):
                out.update({prefix + k: v for k, v in module.plain_state().items()})
        out["fc.weight"] = self.fc.weight.detach().repeat_interleave(ORDER, dim=1) / ORDER
        out["fc.bias"] = self.fc.bias.detach().clone()
        return out


def plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The weights to ship for ``module``: a tied network's plain equivalent, else its ``state_dict``."""
    if isinstance(module, D4ResNet):
        return module.plain_state_dict()
    return module.state_dict()
