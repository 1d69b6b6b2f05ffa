"""Batch augmentation for training both models, on torch tensors (CPU or GPU).

``Augmenter`` applies, per sample and drawn from one ``torch.Generator`` (so a seed fixes the
result): random horizontal/vertical flips and 90° rotations (applied identically to masks), colour
jitter (brightness, contrast, saturation, hue) and HED stain jitter (Tellez et al. 2018: each
haematoxylin/eosin/DAB concentration scaled by ``1 ± σ`` and shifted by ``± σ`` in optical-density
units, using scikit-image's colour-deconvolution matrices).

Images: float tensors (N, 3, H, W) with values in [0, 1], or uint8 numpy arrays (N, H, W, 3)
(returned in the same form). Masks: (N, H, W) or (N, C, H, W) tensors/arrays of any dtype; only the
geometric transforms touch them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Colour-deconvolution matrices (Ruifrok & Johnston) as in skimage.color: rows of RGB_FROM_HED are
# the optical-density vectors of haematoxylin, eosin and DAB.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
_MIN_INTENSITY = 1.0 / 255.0  # clamp before log: optical density of a black pixel stays finite
# ITU-R BT.601 luma weights (greyscale for contrast/saturation)
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class Augmenter:
    """Random batch augmentation.

    flips : random horizontal and vertical flips.
    rot90 : random multiples of 90° (square images; non-square ones get 0° or 180° only).
    colour : strength of colour jitter: brightness and contrast factors in ``1 ± colour``,
        saturation in ``1 ± colour``, hue shift in ``± colour / 2`` turns. 0 disables.
    hed : σ of HED stain jitter (scale ``1 ± σ``, shift ``± σ`` OD units). 0 disables.
    """

    flips: bool = True
    rot90: bool = True
    colour: float = 0.1
    hed: float = 0.03

    def __call__(self, images, masks=None, generator: torch.Generator | None = None):
        """Augment a batch; returns ``images`` (and ``(images, masks)`` when masks are given)."""
        was_numpy = isinstance(images, np.ndarray)
        x = numpy_to_tensor(images) if was_numpy else images
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) tensors or (N, H, W, 3) arrays, got {tuple(x.shape)}")
        m = None
        mask_numpy = isinstance(masks, np.ndarray)
        if masks is not None:
            m = torch.from_numpy(np.ascontiguousarray(masks)) if mask_numpy else masks
            if m.shape[0] != x.shape[0] or m.shape[-2:] != x.shape[-2:]:
                raise ValueError(f"masks {tuple(m.shape)} do not match images {tuple(x.shape)}")
        g = generator
        if g is None:
            g = torch.Generator()
            g.seed()  # non-deterministic: pass a seeded generator for reproducible augmentation
        n = x.shape[0]
        # draw every random number on the CPU generator first (same numbers on any device)
        flip_h = torch.rand(n, generator=g) < 0.5 if self.flips else torch.zeros(n, dtype=torch.bool)
        flip_v = torch.rand(n, generator=g) < 0.5 if self.flips else torch.zeros(n, dtype=torch.bool)
        square = x.shape[-1] == x.shape[-2]
        if self.rot90:
            k = torch.randint(0, 4, (n,), generator=g) if square else 2 * torch.randint(0, 2, (n,), generator=g)
        else:
            k = torch.zeros(n, dtype=torch.long)
        x, m = _dihedral(x, m, flip_h, flip_v, k)
        if self.colour > 0:
            x = colour_jitter(x, self.colour, g)
        if self.hed > 0:
            x = hed_jitter(x, self.hed, g)
        if was_numpy:
            x = tensor_to_numpy(x)
        if m is not None and mask_numpy:
            m = m.numpy()
        return x if masks is None else (x, m)


def _dihedral(x, m, flip_h, flip_v, k):
    """Apply per-sample flips and rotations, grouping samples that share a transform."""
    codes = flip_h.long() * 8 + flip_v.long() * 4 + k
    x = x.clone()
    m = m.clone() if m is not None else None
    for code in torch.unique(codes).tolist():
        if code == 0:
            continue
        idx = torch.nonzero(codes == code).flatten()
        idx_dev = idx.to(x.device)
        xi = _apply_code(x[idx_dev], code)
        x[idx_dev] = xi
        if m is not None:
            idx_m = idx.to(m.device)
            m[idx_m] = _apply_code(m[idx_m], code)
    return x, m


def _apply_code(t, code):
    fh, fv, k = bool(code & 8), bool(code & 4), code & 3
    if fh:
        t = torch.flip(t, dims=(-1,))
    if fv:
        t = torch.flip(t, dims=(-2,))
    if k:
        t = torch.rot90(t, k, dims=(-2, -1))
    return t


def colour_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation and hue jitter of (N, 3, H, W) in [0, 1]."""
    n = x.shape[0]

    def factor(lo, hi):
        return (lo + (hi - lo) * torch.rand(n, generator=g)).to(x.device, x.dtype).view(n, 1, 1, 1)

    s = float(strength)
    b, c, sat = factor(1 - s, 1 + s), factor(1 - s, 1 + s), factor(1 - s, 1 + s)
    hue = factor(-s / 2, s / 2) * (2 * np.pi)
    luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = x * b
    grey = (x * luma).sum(1, keepdim=True)
    x = (x - grey.mean(dim=(2, 3), keepdim=True)) * c + grey.mean(dim=(2, 3), keepdim=True)
    grey = (x * luma).sum(1, keepdim=True)
    x = grey + (x - grey) * sat
    x = _rotate_hue(x, hue.view(n))
    return x.clamp(0, 1)


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate chroma in YIQ space by ``angle`` radians per sample (luma preserved)."""
    rgb2yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device, dtype=x.dtype
    )
    yiq2rgb = torch.linalg.inv(rgb2yiq)
    cos, sin = torch.cos(angle), torch.sin(angle)
    n = x.shape[0]
    rot = torch.zeros(n, 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    mat = yiq2rgb.unsqueeze(0) @ rot @ rgb2yiq.unsqueeze(0)  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", mat, x)


def hed_jitter(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    """HED stain jitter of (N, 3, H, W) in [0, 1]: concentrations ``c * U(1±σ) + U(±σ)`` (OD units)."""
    n = x.shape[0]
    alpha = (1 + sigma * (2 * torch.rand(n, 3, generator=g) - 1)).to(x.device, x.dtype)
    beta = (sigma * (2 * torch.rand(n, 3, generator=g) - 1)).to(x.device, x.dtype)
    hed_from_rgb = torch.as_tensor(_HED_FROM_RGB, device=x.device, dtype=x.dtype)
    rgb_from_hed = torch.as_tensor(_RGB_FROM_HED, device=x.device, dtype=x.dtype)
    od = -torch.log(x.clamp(min=_MIN_INTENSITY))  # (N, 3, H, W)
    conc = torch.einsum("nchw,cs->nshw", od, hed_from_rgb)
    conc = conc * alpha.view(n, 3, 1, 1) + beta.view(n, 3, 1, 1)
    od = torch.einsum("nshw,sc->nchw", conc, rgb_from_hed)
    return torch.exp(-od).clamp(0, 1)


def numpy_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {a.shape}")
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)
    return t.float() / 255.0 if a.dtype == np.uint8 else t.float()


def tensor_to_numpy(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8."""
    return (x.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
