"""Binary-mask codecs: COCO compressed RLE (pycocotools)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def encode_mask(mask: Any) -> dict[str, Any]:
    """(H, W) bool mask (numpy or torch) -> COCO compressed RLE ``{"size": [H, W], "counts": str}``.

    Raises:
        ValueError: the mask is not two-dimensional.
    """
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
