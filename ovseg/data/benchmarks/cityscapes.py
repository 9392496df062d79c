"""Cityscapes validation (500 images): semantic, panoptic and instance ground truth.

Layout under the data root (the official ``leftImg8bit`` / ``gtFine`` folders plus
cityscapesscripts' ``createTrainIdLabelImgs`` and ``createPanopticImgs`` outputs)::

    cityscapes/leftImg8bit/val/<city>/<id>_leftImg8bit.png
    cityscapes/gtFine/val/<city>/<id>_gtFine_labelTrainIds.png     trainIds 0..18, 255 ignore
    cityscapes/gtFine/val/<city>/<id>_gtFine_instanceIds.png       id*1000+instance (instance task)
    cityscapes/gtFine/cityscapes_panoptic_val/*.png + cityscapes_panoptic_val.json

Tested at FC-CLIP's Cityscapes resolution: short side 1024, long side at most 2560.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from ovseg.data.catalog.cityscapes_labels import LABEL_IDS
from ovseg.data.catalog.spec import DatasetSpec, register_dataset

from .base import Benchmark, data_root, image_size, prepare_command, require, resolve_tasks

NAME = "cityscapes"
IMAGE_SUFFIX = "_leftImg8bit.png"


def load_cityscapes(
    root: str | os.PathLike | None = None, tasks: Sequence[str] | None = None
) -> Benchmark:
    """Cityscapes val; ``tasks`` defaults to semantic, panoptic and instance."""
    root = data_root(root)
    tasks = resolve_tasks(NAME, ("semantic", "panoptic", "instance"), tasks)
    base = root / "cityscapes"
    image_dir = base / "leftImg8bit" / "val"
    gt_dir = base / "gtFine" / "val"
    require(NAME, root, [image_dir] + ([gt_dir] if {"semantic", "instance"} & set(tasks) else []))
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        require(NAME, root, [image_dir / "<city>" / f"*{IMAGE_SUFFIX}"])
    bench = Benchmark(NAME, "cityscapes", tasks, [], num_classes=19,
                      min_size_test=1024, max_size_test=2560)  # fmt: skip
    missing = []
    for path in images:
        key = path.name[: -len(IMAGE_SUFFIX)]
        height, width = image_size(path)
        record = {"file_name": str(path), "image_id": key, "height": height, "width": width}
        for task, field, suffix in (
            ("semantic", "sem_seg_file_name", "_gtFine_labelTrainIds.png"),
            ("instance", "inst_seg_file_name", "_gtFine_instanceIds.png"),
        ):
            if task in tasks:
                label = gt_dir / path.parent.name / f"{key}{suffix}"
                missing += [] if label.is_file() else [label]
                record[field] = str(label)
        bench.records.append(record)
    if missing:
        require(NAME, root, missing)
    if "panoptic" in tasks:
        bench.panoptic_json = base / "gtFine" / "cityscapes_panoptic_val.json"
        bench.panoptic_root = base / "gtFine" / "cityscapes_panoptic_val"
        require(NAME, root, [bench.panoptic_json, bench.panoptic_root])
        try:
            data = json.loads(bench.panoptic_json.read_text(encoding="utf-8"))
            anns = {a["image_id"]: a for a in data["annotations"]}
            bench.category_ids = [c["id"] for c in data["categories"]]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(
                f"{NAME}: {bench.panoptic_json} is not a COCO panoptic json ({e})"
            ) from None
        unpaired = [r["image_id"] for r in bench.records if r["image_id"] not in anns]
        if unpaired:
            raise ValueError(
                f"{NAME}: {len(unpaired)} image(s) have no entry in {bench.panoptic_json}: "
                f"{', '.join(unpaired[:10])}; re-run {prepare_command(NAME, root)}"
            )
        for r in bench.records:
            ann = anns[r["image_id"]]
            r["pan_seg_file_name"] = str(bench.panoptic_root / ann["file_name"])
            r["segments_info"] = ann["segments_info"]
    return bench


register_dataset(DatasetSpec(
    NAME, load_cityscapes, "cityscapes", ("semantic", "panoptic", "instance"),
    min_size_test=1024, max_size_test=2560, suite_order=6, suite_label="Cityscapes",
    suite_tasks=("panoptic", "instance", "semantic"), category_ids=LABEL_IDS,
    instance_evaluator="cityscapes",
    preparer="ovseg.data.prepare.cityscapes:prepare_cityscapes", expected_images=500,
    description="Cityscapes gtFine val, 19 classes; AP by the official cityscapesscripts rules",
    licence="Cityscapes terms (registration; non-commercial)",
))  # fmt: skip
