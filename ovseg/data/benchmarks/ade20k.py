"""ADE20K-150 (semantic, panoptic, instance) and ADE20K-847 (semantic) validation sets.

Layout under the data root (FC-CLIP / Mask2Former ``prepare_ade20k_*.py`` output)::

    ADEChallengeData2016/images/validation/ADE_val_*.jpg                 2,000 images
    ADEChallengeData2016/annotations_detectron2/validation/*.png         labels 0..149, 255 ignore
    ADEChallengeData2016/ade20k_panoptic_val/*.png + ade20k_panoptic_val.json
    ADEChallengeData2016/ade20k_instance_val.json                        COCO instances (100 things)
    ADE20K_2021_17_01/images_detectron2/validation/*.jpg                 2,000 images
    ADE20K_2021_17_01/annotations_detectron2/validation/*.tif            uint16 0..846, 65535 ignore

``tools/prepare_data.py ade20k-150`` writes the first layout from the scene parsing challenge's
files, ``tools/prepare_data.py ade20k-847`` the second from the full ADE20K release (short side
capped at 512, as FC-CLIP's ``prepare_ade20k_full_sem_seg.py``; see
:mod:`ovseg.data.prepare.ade20k_full`).

mmsegmentation's layout ``ade/ADEChallengeData2016/annotations/validation/*.png`` (raw labels,
0 = other) is read for the semantic task too, with ``reduce_zero_label``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ovseg.data.catalog.spec import DatasetSpec, register_dataset

from .base import (
    Benchmark,
    attach_semantic,
    data_root,
    image_size,
    link_instances,
    load_panoptic_json,
    pair_by_stem,
    require,
    resolve_tasks,
)

NAME_150 = "ade20k-150"
NAME_847 = "ade20k-847"


def load_ade20k_150(
    root: str | os.PathLike | None = None, tasks: Sequence[str] | None = None
) -> Benchmark:
    """ADE20K-150 validation (2,000 images); ``tasks`` defaults to all three."""
    root = data_root(root)
    tasks = resolve_tasks(NAME_150, ("semantic", "panoptic", "instance"), tasks)
    base = root / "ADEChallengeData2016"
    reduce_zero_label = False
    if not base.is_dir() and (root / "ade" / "ADEChallengeData2016").is_dir():
        base = root / "ade" / "ADEChallengeData2016"  # mmsegmentation layout
    image_dir = base / "images" / "validation"
    label_dir = base / "annotations_detectron2" / "validation"
    if (
        "semantic" in tasks
        and not label_dir.is_dir()
        and (base / "annotations" / "validation").is_dir()
    ):
        label_dir = base / "annotations" / "validation"
        reduce_zero_label = True
    bench = Benchmark(NAME_150, "ade20k-150", tasks, [], num_classes=150,
                      reduce_zero_label=reduce_zero_label)  # fmt: skip
    if "panoptic" in tasks:
        bench.panoptic_json = base / "ade20k_panoptic_val.json"
        bench.panoptic_root = base / "ade20k_panoptic_val"
        bench.records, categories = load_panoptic_json(
            NAME_150, root, bench.panoptic_json, bench.panoptic_root, image_dir
        )
        bench.category_ids = [c["id"] for c in categories]
        if "semantic" in tasks:
            attach_semantic(NAME_150, root, bench.records, label_dir)
    elif "semantic" in tasks:
        bench.records = pair_by_stem(NAME_150, root, image_dir, label_dir, ".jpg", ".png")
    if "instance" in tasks:
        bench.instances_json = base / "ade20k_instance_val.json"
        if not bench.records:
            require(NAME_150, root, [image_dir, bench.instances_json])
            bench.records = _images(image_dir)
        link_instances(NAME_150, root, bench.records, bench.instances_json)
    return bench


def load_ade20k_847(
    root: str | os.PathLike | None = None, tasks: Sequence[str] | None = None
) -> Benchmark:
    """ADE20K-847 validation (2,000 images, semantic): 16-bit TIFF labels, 65535 ignored."""
    root = data_root(root)
    tasks = resolve_tasks(NAME_847, ("semantic",), tasks)
    base = root / "ADE20K_2021_17_01"
    records = pair_by_stem(
        NAME_847,
        root,
        base / "images_detectron2" / "validation",
        base / "annotations_detectron2" / "validation",
        ".jpg",
        ".tif",
    )
    return Benchmark(NAME_847, "ade20k-847", tasks, records, num_classes=847, ignore_index=65535)


def _images(image_dir: Path) -> list[dict]:
    records = []
    for path in sorted(image_dir.glob("*.jpg")):
        height, width = image_size(path)
        records.append({"file_name": str(path), "image_id": path.stem, "height": height,
                        "width": width})  # fmt: skip
    return records


register_dataset(DatasetSpec(
    NAME_150, load_ade20k_150, "ade20k-150", ("semantic", "panoptic", "instance"),
    suite_order=0, suite_label="ADE20K",
    suite_tasks=("panoptic", "instance", "semantic"),
    preparer="ovseg.data.prepare.ade20k:prepare_ade20k", aliases=("ade20k",),
    expected_images=2000, description="ADE20K scene parsing val, 150 classes",
    licence="BSD-3 (MIT CSAIL); images under their own terms",
))  # fmt: skip
register_dataset(DatasetSpec(
    NAME_847, load_ade20k_847, "ade20k-847", ("semantic",),
    suite_order=1, suite_label="A-847", suite_tasks=("semantic",),
    preparer="ovseg.data.prepare.ade20k_full:prepare_ade20k_full", aliases=("ade20k-full",),
    expected_images=2000, description="full ADE20K (2021_17_01) val, 847 classes",
    licence="ADE20K terms of use (registration required)",
))  # fmt: skip
