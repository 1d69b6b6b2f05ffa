"""Pixel helpers shared by slide reading, inference and training: compositing, resizing, resampling
to a µm/px, patch fitting, block iteration, and reading single image files (patches).

Sizes are (w, h) where named ``size`` and (h, w) where named ``shape``, as in OpenCV and numpy;
µm/px arguments are named ``*_mpp``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from tmln.errors import TmlnError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}  # image files of patch folders


def rgba_to_rgb_white(rgba: np.ndarray) -> np.ndarray:
    """Composite RGBA (straight alpha) over white -> RGB uint8."""
    if rgba.ndim == 3 and rgba.shape[2] == 3:
        return np.ascontiguousarray(rgba)
    if rgba[..., 3].min() == 255:  # opaque (the usual case): no arithmetic
        return np.ascontiguousarray(rgba[..., :3])
    rgb = rgba[..., :3].astype(np.uint16)
    a = rgba[..., 3:4].astype(np.uint16)
    out = (rgb * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def resize_rgb(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (h, w, c) to ``size`` = (w, h): area averaging when shrinking, linear when enlarging."""
    import cv2

    w, h = size
    shrink = w <= img.shape[1] and h <= img.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(img, (int(w), int(h)), interpolation=interp)


def _affine_sample(img: np.ndarray, scale: tuple[float, float], offset: tuple[float, float],
                   size: tuple[int, int]) -> np.ndarray:
    """Output pixel (u, v) takes ``img`` at ``offset + (u + 0.5) * scale - 0.5`` (pixel centres),
    bilinear, edges replicated. ``size`` = (w, h)."""
    import cv2

    sx, sy = scale
    ox, oy = offset
    m = np.array([[sx, 0.0, ox + 0.5 * sx - 0.5], [0.0, sy, oy + 0.5 * sy - 0.5]], np.float64)
    return cv2.warpAffine(img, m, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def iter_blocks(shape: tuple[int, int], block: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (y, x, h, w) blocks covering an array of ``shape`` = (h, w)."""
    H, W = shape
    for y in range(0, H, block):
        for x in range(0, W, block):
            yield y, x, min(block, H - y), min(block, W - x)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (RGBA composited on white, greyscale expanded,
    16-bit scaled). Raises ``TmlnError`` naming the file when it cannot be read."""
    path = Path(path)
    arr = None
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                arr = np.asarray(im.convert("RGBA"))
            elif im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = None  # let tifffile handle high bit depth
            else:
                arr = np.asarray(im.convert("RGB"))
    except Exception:
        arr = None
    if arr is None and path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            arr = tifffile.imread(path)
        except Exception:
            arr = None
    if arr is None:
        raise TmlnError("cannot read image (not a readable PNG, JPEG or TIFF)", path)
    arr = np.array(arr)  # a writable copy
    if arr.size == 0 or arr.ndim < 2 or min(arr.shape[:2]) < 1:
        raise TmlnError(f"empty or truncated image (shape {arr.shape})", path)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        hi = 65535.0 if arr.dtype == np.uint16 else (a.max() if a.max() > 1 else 1.0)
        arr = np.clip(a / hi * 255 + 0.5, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise TmlnError(f"unsupported image shape {arr.shape} (expected RGB or RGBA)", path)
    return rgba_to_rgb_white(arr)


def resample(rgb: np.ndarray, source_mpp: float | None, target_mpp: float) -> np.ndarray:
    """Resample an image from ``source_mpp`` to ``target_mpp`` µm/px (no-op when equal or None)."""
    if source_mpp is None or abs(source_mpp / target_mpp - 1) < 1e-6:
        return rgb
    f = source_mpp / target_mpp
    h, w = rgb.shape[:2]
    return resize_rgb(rgb, (max(1, int(round(w * f))), max(1, int(round(h * f)))))


def fit_to_patch(rgb: np.ndarray, size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Crop (centred, or at a random offset given ``rng``) or reflect-pad to ``size`` x ``size``."""
    h, w = rgb.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        mode = "reflect" if min(h, w) > 1 else "edge"
        rgb = np.pad(rgb, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode=mode)
        if rgb.shape[0] < size or rgb.shape[1] < size:  # reflect cannot pad more than the image size
            rgb = np.pad(rgb, ((0, max(0, size - rgb.shape[0])), (0, max(0, size - rgb.shape[1])), (0, 0)), mode="edge")
        h, w = rgb.shape[:2]
    if rng is not None:
        y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    else:
        y0, x0 = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(rgb[y0 : y0 + size, x0 : x0 + size])


def list_images(folder: str | Path) -> list[Path]:
    """Image files (PNG, JPEG, TIFF) under ``folder``, recursively, sorted."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))
