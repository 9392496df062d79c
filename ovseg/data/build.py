"""Config → datasets and DataLoaders (training stream and sharded evaluation)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from ovseg.config.data import DATASET_TYPES, DataConfig, DatasetConfig, TrainAugConfig
from ovseg.text.vocabulary import Vocabulary

from .datasets import (
    CocoPanopticDataset,
    DatasetError,
    SegmentationDataset,
    SemanticFolderDataset,
)
from .samplers import InferenceSampler, TrainingSampler
from .transforms import build_train_transform


def build_dataset(
    cfg: DatasetConfig,
    train: bool,
    aug: TrainAugConfig | None = None,
    with_targets: bool | None = None,
    test_short_side: int = 0,
    test_max_size: int = 0,
) -> SegmentationDataset:
    """Build the dataset described by ``cfg``.

    Args:
        cfg: the dataset section (``data.train`` or ``data.test``).
        train: training mode (augmentation with ``aug``, crowd dropped, corrupt images skipped
            unless ``cfg.strict``).
        aug: the training augmentation; None in training means no augmentation.
        with_targets: return labels and masks (default: ``train``).
        test_short_side: test-time short-side resize (0 = original size).
        test_max_size: long-side cap of the test-time resize (0 = none).

    Raises:
        DatasetError: an unknown type or bad input, prefixed with the config section.
    """
    section = "data.train" if train else "data.test"
    common = {
        "train": train,
        "transform": build_train_transform(aug) if train and aug is not None else None,
        "strict": cfg.strict,
        "with_targets": train if with_targets is None else with_targets,
        "test_short_side": test_short_side,
        "test_max_size": test_max_size,
    }
    try:
        if cfg.type == "coco_panoptic":
            return CocoPanopticDataset(
                cfg.image_root,
                cfg.panoptic_json,
                cfg.panoptic_root,
                cfg.vocabulary,
                **common,
            )
        if cfg.type == "semantic_folder":
            return SemanticFolderDataset(
                cfg.image_dir,
                cfg.label_dir,
                cfg.classes,
                ignore_index=cfg.ignore_index,
                reduce_zero_label=cfg.reduce_zero_label,
                img_suffix=cfg.img_suffix,
                seg_map_suffix=cfg.seg_map_suffix,
                **common,
            )
    except DatasetError as e:
        raise DatasetError(f"{section}: {e}", e.paths) from None
    raise DatasetError(
        f"{section}.type: unknown dataset type {cfg.type!r}; "
        f"choose one of {', '.join(DATASET_TYPES)}"
    )


# ---------------------------------------------------------------------------------- collate
def collate_train(
    samples: Sequence[dict[str, Any]],
    pad_size: tuple[int, int] | None = None,
    vocabulary: Vocabulary | None = None,
) -> dict[str, Any]:
    """Batch training samples, zero-padding at the bottom/right.

    Args:
        samples: dataset outputs (``image`` (h, w, 3) uint8, ``labels``, ``masks`` (N, h, w)).
        pad_size: pad at least to this (H, W) (the crop size), more if an image is larger.
        vocabulary: the dataset's classes, passed on as ``batch["vocabulary"]`` (label k is
            ``vocabulary[k]``) so the model classifies into exactly the dataset's classes.

    Returns:
        ``images``: (B, 3, H, W) uint8 RGB, zero outside each image's valid region;
        ``targets``: B dicts ``labels`` (N,) int64, ``masks`` (N, H, W) bool at the padded size;
        ``image_sizes``: B (h, w) valid sizes; ``indices``: dataset indices; ``seeds``: the
        samples' stream seeds (None without a training sampler; OneFormer's task draw);
        ``num_skipped``: corrupt samples skipped while loading this batch;
        ``vocabulary``: when given.
    """
    height = max(s["image"].shape[0] for s in samples)
    width = max(s["image"].shape[1] for s in samples)
    if pad_size is not None:
        height, width = max(height, pad_size[0]), max(width, pad_size[1])
    images = torch.zeros(len(samples), 3, height, width, dtype=torch.uint8)
    targets, sizes = [], []
    for i, s in enumerate(samples):
        h, w = s["image"].shape[:2]
        images[i, :, :h, :w] = torch.from_numpy(s["image"]).permute(2, 0, 1)
        masks = torch.zeros(len(s["labels"]), height, width, dtype=torch.bool)
        masks[:, :h, :w] = torch.from_numpy(s["masks"])
        targets.append({"labels": torch.from_numpy(s["labels"]).long(), "masks": masks})
        sizes.append((h, w))
    batch = {
        "images": images,
        "targets": targets,
        "image_sizes": sizes,
        "indices": [s["index"] for s in samples],
        "seeds": [s.get("seed") for s in samples],
        "num_skipped": sum(s["num_skipped"] for s in samples),
    }
    if vocabulary is not None:
        batch["vocabulary"] = vocabulary
    return batch


class _PadCollate:
    """Picklable ``collate_train`` with a fixed pad size (for worker processes)."""

    def __init__(
        self, pad_size: tuple[int, int] | None, vocabulary: Vocabulary | None = None
    ) -> None:
        self.pad_size = pad_size
        self.vocabulary = vocabulary

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate_train(samples, self.pad_size, self.vocabulary)


def collate_test(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Test batches stay lists: ``image`` becomes a (3, H, W) uint8 RGB tensor, the rest as is."""
    out = []
    for s in samples:
        s = dict(s)
        s["image"] = torch.from_numpy(s["image"]).permute(2, 0, 1).contiguous()
        for key in ("labels", "masks", "iscrowd"):
            if key in s:
                s[key] = torch.from_numpy(s[key])
        out.append(s)
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python and NumPy from torch's per-worker seed.

    torch seeds worker w with ``base_seed + w``, where ``base_seed`` comes from the loader's
    generator (seeded with ``seed + rank``), so every (seed, rank, worker) has its own streams.
    Augmentation itself is seeded per sample by the sampler and does not depend on these.
    """
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


# ---------------------------------------------------------------------------------- loaders
class TrainLoader:
    """An infinite, resumable iterator of training batches.

    Iterating yields :func:`collate_train` batches forever. :meth:`state_dict` records how many
    samples this rank has consumed (batches handed out, not batches prefetched by workers);
    :meth:`load_state_dict` before iterating continues the same stream exactly.

    Args:
        dataset: the training dataset (accepts ``(index, seed)`` keys).
        sampler: the stream of ``(index, seed)``.
        batch_size: images per batch (per process).
        num_workers: worker processes (0 = main process).
        pin_memory: pin batches (ignored without CUDA).
        pad_size: pad batches at least to this (H, W).
        generator_seed: seeds the workers' base seed (``seed + rank``).
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: TrainingSampler,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        pad_size: tuple[int, int] | None = None,
        generator_seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.loader = DataLoader(
            dataset,
            batch_sampler=BatchSampler(sampler, batch_size, drop_last=True),
            num_workers=num_workers,
            collate_fn=_PadCollate(pad_size, getattr(dataset, "vocabulary", None)),
            pin_memory=pin_memory and torch.cuda.is_available(),
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(generator_seed),
            persistent_workers=num_workers > 0,
        )
        self.num_skipped = 0  # corrupt samples skipped so far (all workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        iterator = iter(self.loader)  # the sampler's start position is read here
        return self._count(iterator)

    def _count(self, iterator: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for batch in iterator:
            self.sampler.position += self.batch_size
            self.num_skipped += batch["num_skipped"]
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The sampler state (plain ints) plus ``batch_size`` and ``num_skipped``."""
        return {
            **self.sampler.state_dict(),
            "batch_size": self.batch_size,
            "num_skipped": self.num_skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the stream; call before creating the next iterator."""
        self.sampler.load_state_dict(state)
        self.num_skipped = int(state.get("num_skipped", 0))


def build_train_loader(
    cfg: DataConfig,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    dataset: SegmentationDataset | None = None,
) -> TrainLoader:
    """The training loader of ``cfg``: LSJ augmentation, infinite shuffled stream sharded by rank.

    Args:
        cfg: the ``data`` section.
        seed: the run's seed (the same on every rank: the stream is global).
        rank: this process's rank.
        world_size: number of processes.
        dataset: an already built training dataset (default: built from ``cfg.train``).

    Returns:
        a :class:`TrainLoader` of ``cfg.batch_size`` images per step, padded to the crop size.
    """
    if dataset is None:
        dataset = build_dataset(cfg.train, train=True, aug=cfg.aug)
    sampler = TrainingSampler(len(dataset), seed=seed, rank=rank, world_size=world_size)
    crop = cfg.aug.crop_size
    return TrainLoader(
        dataset,
        sampler,
        cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory,
        pad_size=(crop, crop),
        generator_seed=seed + rank,
    )


class _WithRecords(Dataset):
    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        sample["record"] = self.dataset.get_eval_record(index)
        return sample


def build_test_loader(
    cfg: DataConfig,
    rank: int = 0,
    world_size: int = 1,
    dataset: SegmentationDataset | None = None,
) -> DataLoader:
    """The evaluation loader: batch 1, each image once across ranks (contiguous shards).

    Args:
        cfg: the ``data`` section (``test``, ``num_workers``, ``test_short_side``, ...).
        rank: this process's rank.
        world_size: number of processes.
        dataset: an already built test dataset (default: from ``cfg.test``, without targets).

    Returns:
        a DataLoader yielding lists of one dict: ``image`` (3, H, W) uint8 RGB tensor,
        ``height``/``width`` (original size), ``index`` and ``record``
        (:meth:`~SegmentationDataset.get_eval_record`). The dataset is ``loader.dataset.dataset``.
    """
    if dataset is None:
        dataset = build_dataset(
            cfg.test,
            train=False,
            test_short_side=cfg.test_short_side,
            test_max_size=cfg.test_max_size,
        )
    return DataLoader(
        _WithRecords(dataset),
        batch_size=1,
        sampler=InferenceSampler(len(dataset), rank, world_size),
        num_workers=cfg.num_workers,
        collate_fn=collate_test,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),
        worker_init_fn=seed_worker,
    )
