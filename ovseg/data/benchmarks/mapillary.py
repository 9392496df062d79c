"""Mapillary Vistas v1.2 validation (2,000 images): semantic and panoptic.

Layout under the data root (the official release, as Mask2Former registers it)::

    mapillary_vistas/validation/images/*.jpg
    mapillary_vistas/validation/labels/*.png                        labels 0..64, 65 ignore
    mapillary_vistas/validation/panoptic/*.png + panoptic/panoptic_2018.json

Tested at short side 1024, long side at most 2560 (as Cityscapes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ovseg.data.catalog.spec import DatasetSpec, register_dataset

from .base import (
    Benchmark,
    attach_semantic,
    data_root,
    load_panoptic_json,
    pair_by_stem,
    resolve_tasks,
)

NAME = "mapillary-vistas"


def load_mapillary_vistas(
    root: str | os.PathLike | None = None, tasks: Sequence[str] | None = None
) -> Benchmark:
    """Mapillary Vistas val; ``tasks`` defaults to semantic and panoptic."""
    root = data_root(root)
    tasks = resolve_tasks(NAME, ("semantic", "panoptic"), tasks)
    base = root / "mapillary_vistas" / "validation"
    bench = Benchmark(NAME, "mapillary-vistas", tasks, [], num_classes=65, ignore_index=65,
                      min_size_test=1024, max_size_test=2560)  # fmt: skip
    if "panoptic" in tasks:
        bench.panoptic_json = base / "panoptic" / "panoptic_2018.json"
        bench.panoptic_root = base / "panoptic"
        bench.records, categories = load_panoptic_json(
            NAME, root, bench.panoptic_json, bench.panoptic_root, base / "images"
        )
        bench.category_ids = [c["id"] for c in categories]
        if "semantic" in tasks:
            attach_semantic(NAME, root, bench.records, base / "labels")
    else:
        bench.records = pair_by_stem(NAME, root, base / "images", base / "labels", ".jpg", ".png")
    return bench


register_dataset(DatasetSpec(
    NAME, load_mapillary_vistas, "mapillary-vistas", ("semantic", "panoptic"),
    min_size_test=1024, max_size_test=2560, suite_order=7, suite_label="Mapillary",
    suite_tasks=("panoptic", "semantic"),
    preparer="ovseg.data.prepare.cityscapes:prepare_mapillary", aliases=("mapillary",),
    expected_images=2000, description="Mapillary Vistas v1.2 val, 65 classes",
    licence="CC BY-NC-SA 4.0",
))  # fmt: skip
