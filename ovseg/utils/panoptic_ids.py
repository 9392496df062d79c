"""COCO panoptic PNG encoding: segment id = R + 256 G + 256^2 B (panopticapi's rgb2id/id2rgb)."""

from __future__ import annotations

import numpy as np


def rgb2id(color: np.ndarray) -> np.ndarray:
    """(H, W, 3[+]) uint8 RGB panoptic PNG -> (H, W) int64 segment ids."""
    color = np.asarray(color)
    if color.ndim != 3 or color.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {color.shape}")
    color = color[..., :3].astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) non-negative integer segment ids (< 2**24) -> (H, W, 3) uint8; inverse of rgb2id."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"segment ids must lie in [0, 2**24), got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256], axis=-1).astype(np.uint8)
