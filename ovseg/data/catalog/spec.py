"""The dataset catalog: one registered :class:`DatasetSpec` per benchmark.

Each benchmark module (:mod:`ovseg.data.benchmarks.ade20k`, ...) defines its reader and registers
its spec with ``DATASETS.register(spec.name, spec)``; everything else (``load_benchmark``, the
suite table, ``tools/prepare_data.py``, the evaluation runner) reads the catalog.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ovseg.utils.registry import Registry

TASKS = ("semantic", "panoptic", "instance")
INSTANCE_EVALUATORS = ("coco", "cityscapes")
# FC-CLIP README metric of each task.
TASK_METRIC = {"panoptic": "PQ", "instance": "AP", "semantic": "mIoU"}


@dataclass(frozen=True)
class DatasetSpec:
    """What ovseg knows about one benchmark.

    Attributes:
        name: the ``--dataset`` name (``"ade20k-150"``).
        loader: ``loader(root, tasks) -> Benchmark``, the prepared-layout reader.
        vocabulary: built-in vocabulary name (``Vocabulary.from_name``) whose class k is label k.
        tasks: the tasks its ground truth supports (subset of :data:`TASKS`).
        min_size_test / max_size_test: FC-CLIP's whole-image test size (short side, long cap).
        suite_order: its column in FC-CLIP's zero-shot table (None = not in the suite).
        suite_label: the column label (``"ADE20K"``).
        suite_tasks: the tasks the table reports, in the table's order (PQ, AP, mIoU).
        category_ids: dataset category id of each class when no panoptic json gives them.
        instance_evaluator: ``"coco"`` (COCO mask AP) or ``"cityscapes"`` (official rules).
        preparer: ``"module:function"`` converting the official download (None = none).
        preparer_name: the converter's name on ``tools/prepare_data.py`` (shared by siblings,
            e.g. ``pascal-voc`` writes VOC 21 and 20); defaults to ``name``.
        aliases: other names ``tools/prepare_data.py`` accepts for the converter.
        expected_images: the official number of test images (``--verify``).
        description / licence: one line each, shown by the CLI's listings.
    """

    name: str
    loader: Callable[..., Any]
    vocabulary: str
    tasks: tuple[str, ...]
    min_size_test: int = 800
    max_size_test: int = 1333
    suite_order: int | None = None
    suite_label: str | None = None
    suite_tasks: tuple[str, ...] = ()
    category_ids: tuple[int, ...] | None = None
    instance_evaluator: str = "coco"
    preparer: str | None = None
    preparer_name: str | None = None
    aliases: tuple[str, ...] = ()
    expected_images: int | None = None
    description: str = ""
    licence: str = ""

    def __post_init__(self) -> None:
        bad = [t for t in (*self.tasks, *self.suite_tasks) if t not in TASKS]
        if bad:
            raise ValueError(f"dataset {self.name!r}: unknown task(s) {bad}; valid: {TASKS}")
        if not set(self.suite_tasks) <= set(self.tasks):
            raise ValueError(f"dataset {self.name!r}: suite_tasks {self.suite_tasks} not in tasks")
        if self.instance_evaluator not in INSTANCE_EVALUATORS:
            raise ValueError(
                f"dataset {self.name!r}: instance_evaluator {self.instance_evaluator!r} is not "
                f"one of {INSTANCE_EVALUATORS}"
            )

    @property
    def converter(self) -> str:
        """The ``tools/prepare_data.py`` name of its preparer."""
        return self.preparer_name or self.name

    @property
    def suite_metrics(self) -> tuple[str, ...]:
        """The table's metrics of this column (``("PQ", "AP", "mIoU")``)."""
        return tuple(TASK_METRIC[t] for t in self.suite_tasks)

    def load_preparer(self) -> Callable[..., list[str]]:
        """The preparer function (imported on first use)."""
        if self.preparer is None:
            raise NotImplementedError(f"{self.name}: ovseg has no converter for this dataset")
        module, _, func = self.preparer.partition(":")
        return getattr(importlib.import_module(module), func)


DATASETS: Registry[DatasetSpec] = Registry("dataset", config_key="--dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under ``spec.name`` (raises on a duplicate)."""
    DATASETS.register(spec.name, spec)
    return spec


def canonical(name: str) -> str:
    """``ADE20K_150`` -> ``ade20k-150``."""
    return name.lower().replace("_", "-")


def get_spec(name: str) -> DatasetSpec:
    """The registered spec of ``name``; raises RegistryError with the closest names."""
    return DATASETS.get(canonical(name))


def suite_specs() -> list[DatasetSpec]:
    """FC-CLIP's zero-shot table: the specs with a ``suite_order``, in column order."""
    specs = [s for _, s in DATASETS.items() if s.suite_order is not None]
    return sorted(specs, key=lambda s: s.suite_order)
