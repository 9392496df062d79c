"""Predictions as COCO records: one per-image record, merged into COCO (and COCO-panoptic) files.

COCO conventions: category ids are vocabulary index + 1 (0 stays free for "void" in panoptic
PNGs); ``bbox`` is ``[x, y, w, h]`` in pixels; ``segmentation`` is compressed RLE
(``{"size": [H, W], "counts": str}``, pycocotools); every annotation has ``iscrowd: 0``.
Per task, one annotation per: semantic, class present (score: the mean of the class's score over
its pixels); panoptic, segment (score: the segment's query score); instance, instance (its full
mask, so instances may overlap; score: class probability x mean mask probability).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ovseg.structures import Prediction
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.masks import encode_mask
from ovseg.visualization.segments import instance_masks, kept_instances, label_map, segments_table

TASKS = ("panoptic", "instance", "semantic")


def categories(vocabulary: Vocabulary) -> list[dict[str, Any]]:
    """COCO ``categories``: id (index + 1), canonical name, isthing (1/0), the synonyms."""
    return [
        {
            "id": i + 1,
            "name": c.name,
            "supercategory": "thing" if c.isthing else "stuff",
            "isthing": int(bool(c.isthing)),
            "synonyms": list(c.synonyms),
        }
        for i, c in enumerate(vocabulary.classes)
    ]


def prediction_record(
    prediction: Prediction, task: str, min_score: float = 0.0
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One image's annotations (without ids) and, for panoptic, its segment-id map.

    Args:
        prediction: what ``Segmenter.predict`` returned (at the image's resolution).
        task: "panoptic", "instance" or "semantic".
        min_score: annotations scoring below it are left out (panoptic: their pixels become
            void in the returned map, so the PNG and the JSON agree).

    Returns:
        ({"height", "width", "annotations": [...], "segments_info": [...] (panoptic)}, the
        (H, W) int64 panoptic id map or the task's label map).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    h, w = (int(v) for v in prediction.image_size)
    rows = segments_table(prediction, task, score_threshold=min_score)
    labels = label_map(prediction, task, score_threshold=min_score)
    masks = instance_masks(prediction) if task == "instance" else None
    order = kept_instances(prediction, min_score) if task == "instance" else None
    anns: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    for k, row in enumerate(rows):
        score = row["score"]
        if row["area"] == 0 or (score is not None and score < min_score):
            if task == "panoptic":
                labels[labels == row["id"]] = 0
            continue
        if task == "semantic":
            mask = labels == row["category_id"]
        elif task == "panoptic":
            mask = labels == row["id"]
        else:
            mask = masks[order[k]]
        x0, y0, x1, y1 = row["bbox"]
        ann = {
            "category_id": row["category_id"] + 1,
            "segmentation": encode_mask(mask),
            "area": int(row["area"]),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "score": None if score is None else float(score),
            "iscrowd": 0,
        }
        anns.append(ann)
        if task == "panoptic":
            segments.append(
                {
                    "id": int(row["id"]),
                    "category_id": ann["category_id"],
                    "area": ann["area"],
                    "bbox": ann["bbox"],
                    "iscrowd": 0,
                    "score": ann["score"],
                }
            )
    record: dict[str, Any] = {"height": h, "width": w, "annotations": anns}
    if task == "panoptic":
        record["segments_info"] = segments
    return record, labels


def merge(
    images: Iterable[tuple[int, str, dict[str, Any]]],
    vocabulary: Vocabulary,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """COCO detection/segmentation JSON from ``(image_id, file_name, record)`` triples (in the
    order given; annotation ids 1..N in that order)."""
    coco_images, anns = [], []
    for image_id, file_name, rec in images:
        coco_images.append(
            {"id": image_id, "file_name": file_name, "height": rec["height"], "width": rec["width"]}
        )
        for a in rec["annotations"]:
            anns.append({"id": len(anns) + 1, "image_id": image_id, **a})
    return {
        "info": info or {},
        "images": coco_images,
        "annotations": anns,
        "categories": categories(vocabulary),
    }


def merge_panoptic(
    images: Iterable[tuple[int, str, str, dict[str, Any]]],
    vocabulary: Vocabulary,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """COCO-panoptic JSON from ``(image_id, file_name, png_name, record)`` (PNG ids in the COCO
    RGB encoding, ``id = R + 256 G + 256^2 B``)."""
    coco_images, anns = [], []
    for image_id, file_name, png_name, rec in images:
        coco_images.append(
            {"id": image_id, "file_name": file_name, "height": rec["height"], "width": rec["width"]}
        )
        anns.append(
            {"image_id": image_id, "file_name": png_name, "segments_info": rec["segments_info"]}
        )
    return {
        "info": info or {},
        "images": coco_images,
        "annotations": anns,
        "categories": categories(vocabulary),
    }
