"""Test-time resize, exactly as detectron2's ``ResizeShortestEdge`` in FC-CLIP's evaluation."""

from __future__ import annotations

import numpy as np
from PIL import Image


def shortest_edge_size(h: int, w: int, short: int, max_size: int = 0) -> tuple[int, int]:
    """Output (h, w): short side -> ``short``, long side capped at ``max_size`` (0: no cap),
    each rounded as ``int(x + 0.5)`` (detectron2's ``ResizeShortestEdge.get_output_shape``)."""
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max_size > 0 and max(newh, neww) > max_size:
        s = max_size / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


def resize_shortest_edge(image: np.ndarray, short: int, max_size: int = 0) -> np.ndarray:
    """Resize an (H, W, 3) uint8 RGB image with PIL bilinear (antialiased when shrinking), the
    filter detectron2 applies to uint8 images. Returns (h, w, 3) uint8."""
    h, w = image.shape[:2]
    nh, nw = shortest_edge_size(h, w, short, max_size)
    if (nh, nw) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
