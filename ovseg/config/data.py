"""Typed settings of the ``data`` config section (plain dataclasses with defaults).

The config schema merges YAML onto these, so every field needs a default and a plain type
(``str``, ``int``, ``float``, ``bool``, ``Optional[str]``). Which keys a dataset type uses::

    coco_panoptic:   image_root, panoptic_json, panoptic_root, [vocabulary]
    semantic_folder: image_dir, label_dir, classes, ignore_index, reduce_zero_label,
                     img_suffix, seg_map_suffix
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

DATASET_TYPES = ("coco_panoptic", "semantic_folder")


@dataclass
class DatasetConfig:
    """One dataset (``data.train`` or ``data.test``).

    Attributes:
        type: "coco_panoptic" or "semantic_folder".
        image_root: coco_panoptic: folder of the images (``file_name`` in the JSON's ``images``).
        panoptic_json: coco_panoptic: the panoptic annotation JSON.
        panoptic_root: coco_panoptic: folder of the RGB-encoded panoptic PNGs.
        vocabulary: coco_panoptic: optional vocabulary file (or built-in name such as
            "coco-panoptic") whose class names with synonyms replace the JSON's names; matched by
            category id when the file has ids, else by order. Thing/stuff flags stay the JSON's.
        image_dir: semantic_folder: folder of the images (searched recursively).
        label_dir: semantic_folder: folder of the label PNGs (class index per pixel).
        classes: semantic_folder: class list file (one class per line, synonyms comma-separated)
            or a built-in vocabulary name (e.g. "ade20k-150").
        ignore_index: semantic_folder: label value that is ignored (no target, not evaluated).
        reduce_zero_label: semantic_folder: label 0 is "unlabelled": map 0 → ignore and
            v → v - 1 (mmsegmentation's ADE20K convention).
        img_suffix: semantic_folder: image file suffix.
        seg_map_suffix: semantic_folder: label file suffix.
        strict: raise on a corrupt image during training instead of skipping it with a warning.
        name: optional label for logs and results (defaults to the type).
    """

    type: str = "coco_panoptic"
    image_root: str = ""
    panoptic_json: str = ""
    panoptic_root: str = ""
    vocabulary: Optional[str] = None  # noqa: UP045 (OmegaConf needs typing.Optional)
    image_dir: str = ""
    label_dir: str = ""
    classes: str = ""
    ignore_index: int = 255
    reduce_zero_label: bool = False
    img_suffix: str = ".jpg"
    seg_map_suffix: str = ".png"
    strict: bool = False
    name: str = ""


@dataclass
class TrainAugConfig:
    """Large-scale jitter (LSJ) training augmentation, as Mask2Former / FC-CLIP on COCO.

    Attributes:
        crop_size: square crop side; images are resized so that their longer side is
            ``scale * crop_size`` with scale ~ U(min_scale, max_scale), then cropped/padded.
        min_scale: smallest scale.
        max_scale: largest scale.
        hflip: random horizontal flip with probability 0.5.
    """

    crop_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    hflip: bool = True


@dataclass
class DataConfig:
    """The ``data`` section.

    Attributes:
        train: the training dataset.
        test: the evaluation dataset.
        batch_size: images per process per step (the global batch is batch_size x world size;
            FC-CLIP's 16 = 8 GPUs x 2).
        num_workers: DataLoader worker processes per process (0 = load in the main process).
        pin_memory: pin host memory of batches (only used when CUDA is available).
        aug: the training augmentation.
        test_short_side: resize test images so the short side is this long (0 = keep the
            original size; the FC-CLIP model applies its own test-time resize).
        test_max_size: cap of the longer side for ``test_short_side`` (0 = no cap).
    """

    train: DatasetConfig = field(default_factory=DatasetConfig)
    test: DatasetConfig = field(default_factory=DatasetConfig)
    batch_size: int = 2
    num_workers: int = 4
    pin_memory: bool = True
    aug: TrainAugConfig = field(default_factory=TrainAugConfig)
    test_short_side: int = 0
    test_max_size: int = 0
