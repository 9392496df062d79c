"""Datasets, augmentation, samplers and loaders for training and evaluation."""

import os

# albumentations asks PyPI for a newer version at import (a network request of up to 2 s, and a
# warning when offline); a library must not phone home, and tests must not touch the network.
# An explicit user setting wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from ovseg.config.data import DataConfig, DatasetConfig, TrainAugConfig

from .build import (
    TrainLoader,
    build_dataset,
    build_test_loader,
    build_train_loader,
    collate_test,
    collate_train,
    seed_worker,
)
from .datasets import (
    CocoPanopticDataset,
    CorruptSampleError,
    DatasetError,
    SegmentationDataset,
    SemanticFolderDataset,
)
from .samplers import InferenceSampler, TrainingSampler
from .synthetic import make_synthetic_coco_panoptic, make_synthetic_semantic_folder
from .transforms import build_train_transform, resize_shortest_edge, shortest_edge_size

__all__ = [
    "CocoPanopticDataset",
    "CorruptSampleError",
    "DataConfig",
    "DatasetConfig",
    "DatasetError",
    "InferenceSampler",
    "SegmentationDataset",
    "SemanticFolderDataset",
    "TrainAugConfig",
    "TrainLoader",
    "TrainingSampler",
    "build_dataset",
    "build_test_loader",
    "build_train_loader",
    "build_train_transform",
    "collate_test",
    "collate_train",
    "make_synthetic_coco_panoptic",
    "make_synthetic_semantic_folder",
    "resize_shortest_edge",
    "seed_worker",
    "shortest_edge_size",
]
