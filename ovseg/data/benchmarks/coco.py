"""COCO 2017 validation (5,000 images): panoptic, semantic (from panoptic) and instance.

Layout under the data root (detectron2's, plus Mask2Former's
``prepare_coco_semantic_annos_from_panoptic_images.py`` for the semantic maps)::

    coco/val2017/*.jpg
    coco/annotations/panoptic_val2017.json + coco/panoptic_val2017/*.png
    coco/panoptic_semseg_val2017/*.png                              labels 0..132, 255 ignore
    coco/annotations/instances_val2017.json
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ovseg.data.catalog.spec import DatasetSpec, register_dataset

from .base import (
    Benchmark,
    attach_semantic,
    data_root,
    link_instances,
    load_panoptic_json,
    require,
    resolve_tasks,
)

NAME = "coco-panoptic"


def load_coco_panoptic(
    root: str | os.PathLike | None = None, tasks: Sequence[str] | None = None
) -> Benchmark:
    """COCO val2017; ``tasks`` defaults to panoptic, semantic and instance."""
    root = data_root(root)
    tasks = resolve_tasks(NAME, ("panoptic", "semantic", "instance"), tasks)
    base = root / "coco"
    bench = Benchmark(NAME, "coco-panoptic", tasks, [], num_classes=133)
    bench.panoptic_json = base / "annotations" / "panoptic_val2017.json"
    bench.panoptic_root = base / "panoptic_val2017"
    # The panoptic json lists the images and sizes for every task.
    bench.records, categories = load_panoptic_json(
        NAME, root, bench.panoptic_json, bench.panoptic_root, base / "val2017"
    )
    bench.category_ids = [c["id"] for c in categories]
    if "panoptic" not in tasks:
        bench.panoptic_json = bench.panoptic_root = None
        for r in bench.records:
            del r["pan_seg_file_name"], r["segments_info"]
    if "semantic" in tasks:
        attach_semantic(NAME, root, bench.records, base / "panoptic_semseg_val2017")
    if "instance" in tasks:
        bench.instances_json = base / "annotations" / "instances_val2017.json"
        require(NAME, root, [bench.instances_json])
        link_instances(NAME, root, bench.records, bench.instances_json)
    return bench


register_dataset(DatasetSpec(
    NAME, load_coco_panoptic, "coco-panoptic", ("semantic", "panoptic", "instance"),
    suite_order=8, suite_label="COCO", suite_tasks=("panoptic", "instance", "semantic"),
    preparer="ovseg.data.prepare.coco:prepare_coco", aliases=("coco",), expected_images=5000,
    description="COCO panoptic val2017, 133 classes (FC-CLIP's training set)",
    licence="CC BY 4.0 annotations; Flickr images",
))  # fmt: skip
