"""Dataset types: ``coco_panoptic`` and ``semantic_folder``."""

from .base import (
    VOID,
    CorruptSampleError,
    DatasetError,
    SegmentationDataset,
    read_image,
)
from .coco_panoptic import CocoPanopticDataset, rgb2id
from .semantic_folder import SemanticFolderDataset, load_class_list

__all__ = [
    "VOID",
    "CocoPanopticDataset",
    "CorruptSampleError",
    "DatasetError",
    "SegmentationDataset",
    "SemanticFolderDataset",
    "load_class_list",
    "read_image",
    "rgb2id",
]
