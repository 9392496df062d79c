"""Sliding-window grid for ``model.test.mode: slide`` (mmsegmentation's ``slide_inference``).

Windows of ``crop_size`` step by ``stride`` over the (already resized) image; along each axis

    grids = max(size - crop + stride - 1, 0) // stride + 1

and the last window is moved back to end flush with the border, so every pixel is covered and no
window reaches past the image. An image smaller than the crop along an axis gets one window of
the image's own size along that axis (the model pads it to ``size_divisibility`` as usual).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Window(NamedTuple):
    """One window in image pixels: rows ``y1:y2`` and columns ``x1:x2`` (end exclusive)."""

    y1: int
    y2: int
    x1: int
    x2: int

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the window."""
        return self.y2 - self.y1, self.x2 - self.x1


def axis_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis of length ``size`` (see the module doc)."""
    if size < 1 or crop < 1 or stride < 1:
        raise ValueError(f"size, crop and stride must be >= 1; got {size}, {crop}, {stride}")
    if stride > crop:
        raise ValueError(f"stride {stride} > crop {crop} would leave pixels no window covers")
    grids = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(grids)]


def sliding_windows(
    image_size: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]
) -> list[Window]:
    """The windows over an image, row by row.

    Args:
        image_size: (H, W) of the image the windows cut (after the test-time resize).
        crop_size: (h, w) of a window; stride: (h, w) step between window starts.

    Returns:
        ``Window`` s, rows outer, columns inner; each at most ``crop_size`` and inside the image.
    """
    (height, width), (crop_h, crop_w), (stride_h, stride_w) = image_size, crop_size, stride
    ys = axis_starts(height, crop_h, stride_h)
    xs = axis_starts(width, crop_w, stride_w)
    return [Window(y, min(y + crop_h, height), x, min(x + crop_w, width)) for y in ys for x in xs]
