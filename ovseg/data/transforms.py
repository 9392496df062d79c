"""Training augmentation (large-scale jitter with albumentations) and test-time resizing.

Image and labels are transformed jointly: the labels travel as one (H, W) integer segment-index
map (nearest-neighbour resampling), from which the per-segment binary masks are cut afterwards,
so N masks cost one resize instead of N.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from ovseg.config.data import TrainAugConfig
from ovseg.utils.image import resize_shortest_edge, shortest_edge_size  # noqa: F401


class ResizeScale(A.DualTransform):
    """Resize so the image fits in ``scale x (target_height, target_width)``, keeping its aspect.

    ``scale`` ~ U(min_scale, max_scale) per call; the output size is ``round(input x r)`` with
    ``r = min(scale * target_h / h, scale * target_w / w)`` (detectron2's ``ResizeScale``).
    Images are resized bilinearly, masks with nearest neighbour.
    """

    def __init__(
        self,
        min_scale: float,
        max_scale: float,
        target_height: int,
        target_width: int,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.target_height = target_height
        self.target_width = target_width

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        h, w = params["shape"][:2]
        scale = self.py_random.uniform(self.min_scale, self.max_scale)
        ratio = min(scale * self.target_height / h, scale * self.target_width / w)
        out_h = max(1, round(h * ratio))
        out_w = max(1, round(w * ratio))
        return {"out_size": (out_h, out_w)}

    def apply(self, img: np.ndarray, out_size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, (out_size[1], out_size[0]), interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(
        self, mask: np.ndarray, out_size: tuple[int, int], **params: Any
    ) -> np.ndarray:
        return cv2.resize(mask, (out_size[1], out_size[0]), interpolation=cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_scale", "max_scale", "target_height", "target_width")


class FixedSizeCrop(A.DualTransform):
    """Crop a random ``min(H, crop_h) x min(W, crop_w)`` window (detectron2's ``FixedSizeCrop``
    without its padding: the collate function pads to the crop size and records the valid size).

    The offsets along the two axes are drawn independently.
    """

    def __init__(self, crop_height: int, crop_width: int, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.crop_height = crop_height
        self.crop_width = crop_width

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        h, w = params["shape"][:2]
        max_y, max_x = max(h - self.crop_height, 0), max(w - self.crop_width, 0)
        y0 = round(max_y * self.py_random.random())
        x0 = round(max_x * self.py_random.random())
        return {
            "window": (
                y0,
                x0,
                min(h, y0 + self.crop_height),
                min(w, x0 + self.crop_width),
            )
        }

    def apply(
        self, img: np.ndarray, window: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        y0, x0, y1, x1 = window
        return np.ascontiguousarray(img[y0:y1, x0:x1])

    def apply_to_mask(
        self, mask: np.ndarray, window: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        return self.apply(mask, window)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("crop_height", "crop_width")


def build_train_transform(cfg: TrainAugConfig) -> A.Compose:
    """LSJ as in Mask2Former's COCO-panoptic LSJ mapper: flip, ResizeScale, FixedSizeCrop.

    Args:
        cfg: crop size, scale range and flip flag.

    Returns:
        an albumentations ``Compose`` taking ``image`` (H, W, 3) uint8 and ``mask`` (H, W)
        integer map; outputs are at most ``crop_size`` on each side.
    """
    if cfg.crop_size < 1:
        raise ValueError(f"data.aug.crop_size must be >= 1, got {cfg.crop_size}")
    steps: list[A.BasicTransform] = []
    if cfg.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    steps.append(ResizeScale(cfg.min_scale, cfg.max_scale, cfg.crop_size, cfg.crop_size))
    steps.append(FixedSizeCrop(cfg.crop_size, cfg.crop_size))
    return A.Compose(steps)


def apply_train_transform(
    transform: A.Compose, image: np.ndarray, seg: np.ndarray, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transform`` jointly to an image and its segment-index map.

    Args:
        transform: from :func:`build_train_transform`.
        image: (H, W, 3) uint8 RGB.
        seg: (H, W) uint16 segment-index map.
        seed: when given, the transform's random state is reset to it first, so the result
            depends only on (sample, seed), not on which worker ran it or what ran before.

    Returns:
        the transformed image (h, w, 3) uint8 and map (h, w) uint16.
    """
    if seed is not None:
        transform.set_random_seed(int(seed))
    out = transform(image=image, mask=seg)
    return out["image"], out["mask"]
