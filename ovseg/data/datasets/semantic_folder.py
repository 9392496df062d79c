"""Semantic segmentation from a folder of images and a folder of label PNGs (mmseg layout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
from PIL import Image

from ovseg.text.vocabulary import Vocabulary, builtin_names, load_vocabulary

from .base import (
    VOID,
    DatasetError,
    SegmentationDataset,
    list_paths,
    read_image,
    read_png_array,
)


def load_class_list(classes: str) -> Vocabulary:
    """A class list file (``Vocabulary.from_file``) or a built-in vocabulary name.

    Raises:
        DatasetError: neither an existing file nor a built-in name.
    """
    if not classes:
        raise DatasetError(
            "semantic_folder: classes is not set: give a class list file (one class per line, "
            f"synonyms comma-separated) or a built-in vocabulary ({', '.join(builtin_names())})"
        )
    try:
        return load_vocabulary(classes)
    except FileNotFoundError:
        path = Path(classes).expanduser()
    raise DatasetError(
        f"semantic_folder: classes file not found: {path} (and {classes!r} is not a built-in "
        f"vocabulary: {', '.join(builtin_names())})",
        [path],
    )


class SemanticFolderDataset(SegmentationDataset):
    """Images + single-channel label PNGs (class index per pixel) + a class list.

    Images and labels pair by their path relative to ``image_dir`` / ``label_dir`` minus the
    suffix (``images/a/x.jpg`` ↔ ``labels/a/x.png``). Each class present in a label map is one
    target segment (a semantic dataset has no instances).

    Args:
        image_dir: folder of the images (searched recursively for ``img_suffix``).
        label_dir: folder of the label maps (``seg_map_suffix``).
        classes: class list file or built-in vocabulary name; label value k is class k.
        ignore_index: label value without a target (and not evaluated).
        reduce_zero_label: 0 means "unlabelled": 0 → ignore, v → v - 1 (mmseg's ADE20K rule).
        img_suffix: image file suffix.
        seg_map_suffix: label file suffix.
        **kwargs: see :class:`SegmentationDataset`.

    Raises:
        DatasetError: a missing folder or class list, unpaired files (all listed), no images.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        label_dir: str | os.PathLike,
        classes: str,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
        img_suffix: str = ".jpg",
        seg_map_suffix: str = ".png",
        transform: A.Compose | None = None,
        **kwargs: Any,
    ) -> None:
        self.image_dir, self.label_dir = Path(image_dir), Path(label_dir)
        for path, key in ((self.image_dir, "image_dir"), (self.label_dir, "label_dir")):
            if not str(path) or str(path) == ".":
                raise DatasetError(f"semantic_folder: {key} is not set")
            if not path.is_dir():
                raise DatasetError(f"semantic_folder: {key} folder not found: {path}", [path])
        vocabulary = load_class_list(classes)
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = bool(reduce_zero_label)
        if 0 <= self.ignore_index < len(vocabulary):
            raise DatasetError(
                f"semantic_folder: ignore_index {self.ignore_index} is a class index (there are "
                f"{len(vocabulary)} classes); use a value outside 0..{len(vocabulary) - 1}, "
                "e.g. 255"
            )
        self.img_suffix, self.seg_map_suffix = img_suffix, seg_map_suffix
        images = self._index(self.image_dir, img_suffix)
        labels = self._index(self.label_dir, seg_map_suffix)
        if not images:
            raise DatasetError(
                f"semantic_folder: no *{img_suffix} images under {self.image_dir} (set img_suffix "
                "if your images use another extension)",
                [self.image_dir],
            )
        no_label = sorted(set(images) - set(labels))
        no_image = sorted(set(labels) - set(images))
        if no_label or no_image:
            parts, paths = [], []
            if no_label:
                paths += [images[k] for k in no_label]
                parts.append(
                    f"{len(no_label)} image(s) without a label in {self.label_dir}:"
                    + list_paths([images[k] for k in no_label])
                )
            if no_image:
                paths += [labels[k] for k in no_image]
                parts.append(
                    f"{len(no_image)} label(s) without an image in {self.image_dir}:"
                    + list_paths([labels[k] for k in no_image])
                )
            raise DatasetError("semantic_folder: unpaired files\n" + "\n".join(parts), paths)
        self.keys = sorted(images)
        self.image_files = [images[k] for k in self.keys]
        self.label_files = [labels[k] for k in self.keys]
        super().__init__(vocabulary, transform=transform, **kwargs)

    @staticmethod
    def _index(root: Path, suffix: str) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix()[: -len(suffix)]: str(p)
            for p in root.rglob(f"*{suffix}")
            if p.is_file()
        }

    def __len__(self) -> int:
        return len(self.keys)

    def get_eval_record(self, index: int) -> dict[str, Any]:
        """``image_id`` (relative path minus suffix), ``file_name``, ``sem_seg_file_name``,
        ``height``, ``width``, ``ignore_index`` and ``reduce_zero_label`` (the raw label file is
        not yet reduced; :meth:`load_semantic_gt` applies it)."""
        with Image.open(self.image_files[index]) as img:
            width, height = img.size
        return {
            "image_id": self.keys[index],
            "file_name": self.image_files[index],
            "sem_seg_file_name": self.label_files[index],
            "height": height,
            "width": width,
            "ignore_index": self.ignore_index,
            "reduce_zero_label": self.reduce_zero_label,
        }

    def load_semantic_gt(self, index: int) -> np.ndarray:
        """(H, W) int64 class indices in [0, C) or ``ignore_index`` (zero label reduced).

        Raises:
            CorruptSampleError: unreadable label file.
            DatasetError: not single-channel, or values outside the classes (named).
        """
        path = self.label_files[index]
        label = read_png_array(path)
        if label.ndim != 2:
            raise DatasetError(
                f"{path}: expected a single-channel label map (class index per pixel), got shape "
                f"{label.shape}; convert colour-coded labels to class indices first",
                [path],
            )
        label = label.astype(np.int64)
        if self.reduce_zero_label:
            label = np.where(label == 0, self.ignore_index, label - 1)
            label[label == self.ignore_index - 1] = self.ignore_index
        bad = (label != self.ignore_index) & ((label < 0) | (label >= len(self.vocabulary)))
        if bad.any():
            raise DatasetError(
                f"{path}: label value(s) {np.unique(label[bad]).tolist()[:20]} outside the "
                f"{len(self.vocabulary)} classes 0..{len(self.vocabulary) - 1} and not "
                f"ignore_index {self.ignore_index}"
                + (" (after reduce_zero_label)" if self.reduce_zero_label else ""),
                [path],
            )
        return label

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        image = read_image(self.image_files[index])
        num_classes = len(self.vocabulary)
        classes = np.arange(num_classes, dtype=np.int64)
        if not self.with_targets:
            return image, None, classes, np.zeros(num_classes, bool)
        label = self.load_semantic_gt(index)
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"{self.label_files[index]} is {label.shape[1]}x{label.shape[0]} but its image "
                f"{self.image_files[index]} is {image.shape[1]}x{image.shape[0]}",
                [self.label_files[index], self.image_files[index]],
            )
        seg = np.where(label == self.ignore_index, int(VOID), label).astype(np.uint16)
        return image, seg, classes, np.zeros(num_classes, bool)
