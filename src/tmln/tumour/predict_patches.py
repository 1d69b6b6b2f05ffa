"""Tumour probability for every image of a folder: ``predict_patches(model, folder) -> DataFrame``.

Images (PNG, JPEG, TIFF; found recursively, sorted) are taken to be at ``mpp`` µm/px (default: the
model's own) and resampled to the model card's µm/px, then centre-cropped or reflect-padded to the
card's patch size, Macenko-normalised when the card holds a stain reference, and normalised with
the card's mean/std. Output rows: ``path`` (relative to the folder, '/'-separated) and
``p_tumour`` in [0, 1]. An unreadable image stops the run with an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmln.atomic import write_csv
from tmln.errors import TmlnError
from tmln.imaging import fit_to_patch, list_images, read_image, resample
from tmln.models.classifier import InputTransform, load_classifier
from tmln.stain import normalise as stain_normalise
from tmln.tumour.runners import activate


class _ImageDataset:
    """Items ``(uint8 (P, P, 3) tensor, index, error message or "")``; errors are reported by the
    main process (so the error names the file whatever the worker setup)."""

    def __init__(self, paths, source_mpp, card, stain):
        self.paths = [str(p) for p in paths]
        self.source_mpp = source_mpp
        self.mpp = float(card.mpp)
        self.size = int(card.patch_size)
        self.stain = stain

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import torch

        try:
            img = read_image(self.paths[i])
        except TmlnError as err:
            return torch.zeros((self.size, self.size, 3), dtype=torch.uint8), i, err.message
        img = fit_to_patch(resample(img, self.source_mpp, self.mpp), self.size)
        if self.stain is not None:
            img = stain_normalise(img, self.stain)
        return torch.from_numpy(np.ascontiguousarray(img)), i, ""


def predict_patches(model, folder: str | Path, mpp: float | None = None, batch_size: int = 64,
                    device: str | None = "auto", num_workers: int = 0):
    """DataFrame ``path, p_tumour`` for every image under ``folder``.

    model : model directory or bundled model name (task ``tumour-classifier``).
    mpp : the images' µm/px (None: already at the model's µm/px).
    """
    import pandas as pd
    import torch

    folder = Path(folder)
    if not folder.is_dir():
        raise TmlnError("image folder not found", folder)
    paths = list_images(folder)
    if not paths:
        raise TmlnError("no PNG, JPEG or TIFF images in folder (searched recursively)", folder)
    if mpp is not None and not mpp > 0:
        raise TmlnError(f"mpp must be positive, got {mpp}")
    module, card = load_classifier(model, device)
    dev = next(module.parameters()).device
    transform = InputTransform(card)
    ds = _ImageDataset(paths, mpp, card, transform.reference)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    probs = np.zeros(len(paths), dtype=np.float64)
    channels_last = dev.type == "cuda"
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for xb, idx, errs in loader:
            for i, e in zip(idx.tolist(), errs):
                if e:
                    raise TmlnError(e, paths[i])
            x = transform.normalise(xb.to(dev, non_blocking=True))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = module(x).float()
            p = activate(logits.T, card)
            probs[idx.numpy()] = p.cpu().numpy()
    rel = [p.relative_to(folder).as_posix() for p in paths]
    return pd.DataFrame({"path": rel, "p_tumour": probs})


def write_predictions(frame, out: str | Path) -> Path:
    """Write the predictions CSV atomically."""
    write_csv(out, frame)
    return Path(out)
