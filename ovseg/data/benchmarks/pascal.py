"""Pascal Context (59 / 459 classes) and Pascal VOC (20 / 21 classes) validation sets (semantic).

Layout under the data root (FC-CLIP's ``prepare_pascal_ctx*.py`` / ``prepare_pascal_voc*.py``)::

    pascal_ctx_d2/images/validation/*.jpg                         5,104 images
    pascal_ctx_d2/annotations_ctx59/validation/*.png              labels 0..58, 255 ignore
    pascal_ctx_d2/annotations_ctx459/validation/*.tif             uint16 0..458, 65535 ignore
    pascal_voc_d2/images/validation/*.jpg                         1,449 images
    pascal_voc_d2/annotations_pascal21/validation/*.png           0 background, 1..20, 255 ignore
    pascal_voc_d2/annotations_pascal20/validation/*.png           0..19 (background ignored: 255)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ovseg.data.catalog.spec import DatasetSpec, register_dataset

from .base import Benchmark, data_root, pair_by_stem, resolve_tasks

# name -> (folder, label folder, label suffix, num classes, ignore index, vocabulary)
_SPECS = {
    "pascal-context-59": (
        "pascal_ctx_d2", "annotations_ctx59", ".png", 59, 255, "pascal-context-59",
    ),
    "pascal-context-459": (
        "pascal_ctx_d2", "annotations_ctx459", ".tif", 459, 65535, "pascal-context-459",
    ),
    "pascal-voc-21": ("pascal_voc_d2", "annotations_pascal21", ".png", 21, 255, "pascal-voc-21"),
    "pascal-voc-20": ("pascal_voc_d2", "annotations_pascal20", ".png", 20, 255, "pascal-voc-20"),
}  # fmt: skip


def _load(name: str, root: str | os.PathLike | None, tasks: Sequence[str] | None) -> Benchmark:
    folder, labels, suffix, num_classes, ignore_index, vocabulary = _SPECS[name]
    root = data_root(root)
    tasks = resolve_tasks(name, ("semantic",), tasks)
    base = root / folder
    records = pair_by_stem(
        name, root, base / "images" / "validation", base / labels / "validation", ".jpg", suffix
    )
    return Benchmark(name, vocabulary, tasks, records, num_classes, ignore_index=ignore_index)


def load_pascal_context_59(root=None, tasks=None) -> Benchmark:
    """Pascal Context 59 validation (5,104 images)."""
    return _load("pascal-context-59", root, tasks)


def load_pascal_context_459(root=None, tasks=None) -> Benchmark:
    """Pascal Context 459 validation (5,104 images; 16-bit TIFF labels)."""
    return _load("pascal-context-459", root, tasks)


def load_pascal_voc_21(root=None, tasks=None) -> Benchmark:
    """Pascal VOC 2012 validation with background (1,449 images)."""
    return _load("pascal-voc-21", root, tasks)


def load_pascal_voc_20(root=None, tasks=None) -> Benchmark:
    """Pascal VOC 2012 validation without background (1,449 images)."""
    return _load("pascal-voc-20", root, tasks)


_PC = "ovseg.data.prepare.pascal:prepare_pascal_context"
_VOC = "ovseg.data.prepare.pascal:prepare_pascal_voc"
for _name, _loader, _order, _label, _prep, _conv, _n, _what in (
    (
        "pascal-context-459",
        load_pascal_context_459,
        2,
        "PC-459",
        _PC,
        "pascal-context",
        5104,
        "Pascal Context val, 459 classes",
    ),
    (
        "pascal-context-59",
        load_pascal_context_59,
        3,
        "PC-59",
        _PC,
        "pascal-context",
        5104,
        "Pascal Context val, 59 classes",
    ),
    (
        "pascal-voc-21",
        load_pascal_voc_21,
        4,
        "PAS-21",
        _VOC,
        "pascal-voc",
        1449,
        "Pascal VOC 2012 val with background",
    ),
    (
        "pascal-voc-20",
        load_pascal_voc_20,
        5,
        "PAS-20",
        _VOC,
        "pascal-voc",
        1449,
        "Pascal VOC 2012 val without background",
    ),
):
    register_dataset(DatasetSpec(
        _name, _loader, _name, ("semantic",),
        suite_order=_order, suite_label=_label, suite_tasks=("semantic",), preparer=_prep,
        preparer_name=_conv, expected_images=_n, description=_what,
        licence="Pascal VOC / Context terms (Flickr images)",
    ))  # fmt: skip
