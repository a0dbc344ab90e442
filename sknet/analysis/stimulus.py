"""The stimulus of Section 4.4: the central object enlarged by a central crop resized back.

Every validation image is shown at scales 1.0x, 1.5x, 2.0x by a central crop of 1/s of its side
resized back to the input size, so the central object grows while the image size stays. The crop
is taken from the *evaluation image*, the tensor the network sees at 1.0x (after the dataset's
resize, centre crop and normalisation), so 1.0x is exactly what ``sknet eval`` measures and every
scale keeps the evaluation framing. Normalisation is a per-channel affine map and bilinear
resizing is an affine combination of pixels, so cropping after it equals cropping before it. The
enlarged images are upsampled from the evaluation image and therefore slightly softer than the
original (for ImageNet a crop of the full-resolution file would be sharper; the paper does not say
which it used).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sknet.errors import UserError

SCALES = (1.0, 1.5, 2.0)
"""Object sizes of Section 4.4."""


def crop_side(side: int, scale: float) -> int:
    """Pixels of the central crop that shows an object ``scale`` times larger: ``side / scale``."""
    return max(1, round(side / scale))


def enlarge(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Section 4.4's stimulus: the central ``1/scale`` of each side, resized back (bilinear).

    Args:
        images: ``[N, C, H, W]`` (or one ``[C, H, W]`` image), e.g. normalised evaluation inputs.
        scale: object magnification, >= 1 (1 returns ``images`` unchanged).

    Returns:
        Images of the same shape whose central object is ``scale`` times larger (exactly
        ``H / crop_side(H, scale)``; the crop is rounded to whole pixels).
    """
    if not (math.isfinite(scale) and scale >= 1):
        raise UserError(f"scale must be a number >= 1 (a central crop), got {scale}")
    single = images.dim() == 3
    batch = images[None] if single else images
    height, width = batch.shape[-2:]
    crop_height, crop_width = crop_side(height, scale), crop_side(width, scale)
    if (crop_height, crop_width) != (height, width):
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        crop = batch[..., top : top + crop_height, left : left + crop_width]
        batch = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
    return batch[0] if single else batch


def scale_label(scale: float) -> str:
    """``1.0x``, ``1.5x``, ``1.25x``: the paper's way of writing an object size (one decimal
    at least, more where the scale needs them)."""
    return f"{scale:.1f}x" if round(scale, 1) == scale else f"{scale:g}x"
