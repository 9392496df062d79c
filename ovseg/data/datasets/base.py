"""Shared machinery of the segmentation datasets: image reading, corrupt-sample skipping,
augmentation and the conversion of a segment-index map into per-segment binary masks."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
from torch.utils.data import Dataset

from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.image import ImageLoadError, load_image, read_label

from ..transforms import apply_train_transform, resize_shortest_edge

logger = logging.getLogger(__name__)

VOID = np.uint16(65535)  # "no segment" in a segment-index map (void, ignore, crowd in training)
MAX_SEGMENTS = int(VOID)


class DatasetError(ValueError):
    """Bad dataset input; the message names the path(s) at fault and what to do.

    Attributes:
        paths: every offending path (the message may show only the first few).
    """

    def __init__(self, message: str, paths: Sequence[str | Path] = ()) -> None:
        super().__init__(message)
        self.paths = [str(p) for p in paths]


class CorruptSampleError(DatasetError):
    """An image or label file that exists but cannot be decoded."""


def list_paths(paths: Sequence[Any], limit: int = 20) -> str:
    """The first ``limit`` entries of ``paths`` for an error message, plus the remaining count."""
    shown = "\n  ".join(str(p) for p in paths[:limit])
    more = f"\n  ... and {len(paths) - limit} more" if len(paths) > limit else ""
    return "\n  " + shown + more


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB with :func:`ovseg.utils.image.load_image`.

    Raises:
        CorruptSampleError: the file is missing, empty, truncated or not an image.
    """
    try:
        return load_image(path)  # the same reader as inference (16-bit scaled, not clipped)
    except ImageLoadError as e:
        raise CorruptSampleError(str(e), [path]) from None


def read_png_array(path: str | Path) -> np.ndarray:
    """Read a label PNG as a numpy array without any mode conversion.

    Raises:
        CorruptSampleError: the file is missing, truncated or not an image.
    """
    try:
        return read_label(path)
    except ImageLoadError as e:
        raise CorruptSampleError(str(e), [path]) from None


class SerializedList:
    """A read-only list of picklable records stored as one numpy byte buffer.

    DataLoader workers forked from the main process would otherwise touch the reference counts of
    millions of small Python objects (COCO: ~1 M segment dicts) and copy them page by page, so
    each worker's memory grows to the whole annotation set (detectron2's ``DatasetFromList``
    serializes for the same reason).
    """

    def __init__(self, items: Sequence[Any]) -> None:
        blobs = [
            np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
            for x in items
        ]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._data = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        index %= len(self)
        start = int(self._ends[index - 1]) if index > 0 else 0
        return pickle.loads(self._data[start : int(self._ends[index])].tobytes())

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class SegmentationDataset(Dataset):
    """Base class: a subclass implements ``__len__``, ``_load`` and ``get_eval_record``.

    ``_load(i)`` returns the image (H, W, 3) uint8 RGB, a (H, W) uint16 segment-index map (value k
    = segment k, :data:`VOID` = no segment), the segments' contiguous class indices (N,) int64 and
    their crowd flags (N,) bool.

    Args:
        vocabulary: the classes; label ``k`` is ``vocabulary[k]``.
        train: training mode: crowd segments are dropped from the targets (as Mask2Former does),
            ``transform`` is applied and a corrupt sample is skipped unless ``strict``.
        transform: the joint image/label augmentation (:func:`build_train_transform`).
        strict: raise on a corrupt sample in training instead of skipping it.
        with_targets: also return labels and masks (evaluation needs only the image).
        test_short_side: when > 0 and not training, resize the image (and targets) so that its
            short side has this length (detectron2's ``ResizeShortestEdge``).
        test_max_size: cap of the long side for ``test_short_side`` (0 = none).
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        train: bool = False,
        transform: A.Compose | None = None,
        strict: bool = False,
        with_targets: bool = True,
        test_short_side: int = 0,
        test_max_size: int = 0,
    ) -> None:
        self.vocabulary = vocabulary
        self.train = train
        self.transform = transform
        self.strict = strict
        self.with_targets = with_targets
        self.test_short_side = test_short_side
        self.test_max_size = test_max_size
        self.num_skipped = 0  # corrupt samples skipped by this process (each worker counts its own)

    # ----------------------------------------------------------------- subclass API
    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def get_eval_record(self, index: int) -> dict[str, Any]:
        """File paths and ids an evaluator needs for sample ``index`` (see the subclasses)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- loading
    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Load one sample.

        Args:
            key: the sample index, or ``(index, seed)``: the training sampler passes a seed per
                sample so that augmentation does not depend on which worker loads it.

        Returns:
            ``image``: (H, W, 3) uint8 RGB numpy array (augmented in training);
            ``labels``: (N,) int64 contiguous class indices; ``masks``: (N, H, W) bool;
            ``iscrowd``: (N,) bool (all False in training: crowd segments are dropped);
            ``index``: the index actually loaded (differs from ``key`` after a skip);
            ``height``, ``width``: the original image size; ``num_skipped``: corrupt samples
            skipped to produce this one; ``seed``: the sampler's seed (None without one).
            Without ``with_targets`` the first three target keys are absent. Segments with no pixel left after augmentation are removed.
        """
        index, seed = key if isinstance(key, tuple) else (key, None)
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        skipped = 0
        while True:
            try:
                image, seg, labels, iscrowd = self._load(index)
                break
            except CorruptSampleError as e:
                if self.strict or not self.train:
                    raise
                skipped += 1
                self.num_skipped += 1
                logger.warning(
                    "skipping corrupt sample %d (%s); %d skipped so far in this process "
                    "(set strict=True to stop instead)",
                    index,
                    e,
                    self.num_skipped,
                )
                if skipped >= min(len(self), 100):
                    raise DatasetError(
                        f"{skipped} consecutive samples could not be read (last: {e}); check "
                        "the dataset files"
                    ) from None
                index = (index + 1) % len(self)
        height, width = image.shape[:2]
        if self.train:
            if seg is None:  # with_targets=False: augment the image alone
                seg = np.full(image.shape[:2], VOID, dtype=np.uint16)
            if iscrowd.any():
                # Crowd regions get no target (Mask2Former drops iscrowd segments in training).
                lut = np.arange(MAX_SEGMENTS + 1, dtype=np.uint16)
                lut[: len(iscrowd)][iscrowd] = VOID
                seg = lut[seg]
            if self.transform is not None:
                image, seg = apply_train_transform(self.transform, image, seg, seed)
        elif self.test_short_side > 0:
            image = resize_shortest_edge(image, self.test_short_side, self.test_max_size)
            if self.with_targets and image.shape[:2] != seg.shape:
                seg = cv2.resize(seg, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        out: dict[str, Any] = {
            "image": np.ascontiguousarray(image),
            "index": index,
            "height": height,
            "width": width,
            "num_skipped": skipped,
            "seed": seed,
        }
        if self.with_targets:
            # Segments cropped away entirely are dropped. Mask2Former's LSJ panoptic mapper keeps
            # them as empty targets, which asks a query to predict a class for no pixel at all.
            counts = np.bincount(seg.ravel(), minlength=len(labels))[: len(labels)]
            present = np.flatnonzero(counts)
            if self.train:
                present = present[~iscrowd[present]]
            out["labels"] = labels[present].astype(np.int64)
            out["masks"] = seg[None] == present.astype(np.uint16)[:, None, None]
            out["iscrowd"] = iscrowd[present].astype(bool)
        return out
