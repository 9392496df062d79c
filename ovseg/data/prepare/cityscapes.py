"""Cityscapes validation (500 images) and Mapillary Vistas validation (2,000 images).

Cityscapes raw input (``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``)::

    leftImg8bit/val/<city>/<id>_leftImg8bit.png
    gtFine/val/<city>/<id>_gtFine_labelIds.png, <id>_gtFine_instanceIds.png

Output (:mod:`ovseg.data.benchmarks.cityscapes`): the images and ``instanceIds`` as shipped, plus
what cityscapesscripts' ``createTrainIdLabelImgs`` (``labelTrainIds``: 19 trainIds, 255 ignore) and
``createPanopticImgs`` (label ids as category ids, segment id = instanceIds value, a thing value
< 1000 is a crowd region, classes ignored in evaluation dropped) write.

Mapillary Vistas ships in the benchmark layout (v1.2: ``validation/{images,labels,panoptic}``, or
``validation/v1.2/{labels,panoptic}`` in the v2.0 release); it is copied or linked as is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovseg.data.catalog.cityscapes_labels import CITYSCAPES_LABELS
from ovseg.utils.panoptic_ids import id2rgb

from .common import (
    PrepareError,
    bbox_of,
    find_dir,
    place,
    progress,
    read_array,
    read_json,
    save_label,
)

CS_HINT = (
    "download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ and extract them into --src"
)
MV_HINT = (
    "download the Mapillary Vistas release from https://www.mapillary.com/dataset/vistas and "
    "extract it into --src (validation/images, validation/labels, validation/panoptic)"
)

_BY_ID = {lab[0]: lab for lab in CITYSCAPES_LABELS}


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """(H, W) Cityscapes label ids -> trainIds 0..18, 255 elsewhere (uint8)."""
    lut = np.full(256, 255, dtype=np.uint8)
    for lid, _, train_id, _, _ in CITYSCAPES_LABELS:
        lut[lid] = train_id
    return lut[np.clip(label_ids.astype(np.int64), 0, 255)]


def panoptic_from_instance_ids(instance_ids: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """(H, W) ``gtFine_instanceIds`` -> (H, W, 3) panoptic PNG and its ``segments_info``."""
    ids = instance_ids.astype(np.int64)
    out = np.zeros(ids.shape, np.int64)
    segments = []
    for value in np.unique(ids).tolist():
        label = value // 1000 if value >= 1000 else value
        info = _BY_ID.get(label)
        if info is None or info[4]:  # unknown or ignored in evaluation
            continue
        mask = ids == value
        out[mask] = value
        segments.append({"id": int(value), "category_id": int(label), "area": int(mask.sum()),
                         "bbox": bbox_of(mask),
                         "iscrowd": int(value < 1000 and info[3])})  # fmt: skip
    return id2rgb(out), segments


def prepare_cityscapes(src: Path, dst: Path, link: bool = False) -> list[str]:
    """Write ``cityscapes/`` (leftImg8bit/val, gtFine/val with labelTrainIds and instanceIds,
    gtFine/cityscapes_panoptic_val + json)."""
    base = find_dir(
        src,
        ("cityscapes", ""),
        "cityscapes",
        "the Cityscapes folder",
        CS_HINT,
        marker="leftImg8bit",
    )
    image_dir = find_dir(base, ("leftImg8bit/val",), "cityscapes", "leftImg8bit/val", CS_HINT)
    gt_dir = find_dir(base, ("gtFine/val",), "cityscapes", "gtFine/val", CS_HINT)
    images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise PrepareError(f"cityscapes: no <city>/*_leftImg8bit.png under {image_dir}; {CS_HINT}")
    out = dst / "cityscapes"
    pan_dir = out / "gtFine" / "cityscapes_panoptic_val"
    json_images, json_anns = [], []
    for path in progress(images, "cityscapes"):
        city, key = path.parent.name, path.name[: -len("_leftImg8bit.png")]
        label_path = gt_dir / city / f"{key}_gtFine_labelIds.png"
        inst_path = gt_dir / city / f"{key}_gtFine_instanceIds.png"
        for p in (label_path, inst_path):
            if not p.is_file():
                raise PrepareError(f"cityscapes: {p} not found; {CS_HINT}")
        gt_out = out / "gtFine" / "val" / city
        if out.resolve() != base.resolve():
            place(path, out / "leftImg8bit" / "val" / city / path.name, link, root=dst)
            place(label_path, gt_out / label_path.name, link, root=dst)
            place(inst_path, gt_out / inst_path.name, link, root=dst)
        save_label(label_ids_to_train_ids(read_array(label_path)),
                   gt_out / f"{key}_gtFine_labelTrainIds.png")  # fmt: skip
        inst = read_array(inst_path)
        png, segments = panoptic_from_instance_ids(inst)
        save_label(png, pan_dir / f"{key}_gtFine_panoptic.png")
        json_images.append({"id": key, "file_name": path.name, "height": int(inst.shape[0]),
                            "width": int(inst.shape[1])})  # fmt: skip
        json_anns.append({"image_id": key, "file_name": f"{key}_gtFine_panoptic.png",
                          "segments_info": segments})  # fmt: skip
    cats = [{"id": lid, "name": name, "isthing": int(thing)}
            for lid, name, _, thing, ignored in CITYSCAPES_LABELS if not ignored]  # fmt: skip
    from ovseg.utils.io import atomic_write_json

    atomic_write_json(
        out / "gtFine" / "cityscapes_panoptic_val.json",
        {"images": json_images, "annotations": json_anns, "categories": cats},
    )
    return ["cityscapes"]


def prepare_mapillary(src: Path, dst: Path, link: bool = False) -> list[str]:
    """Copy (or link) Mapillary Vistas validation into ``mapillary_vistas/validation``."""
    val = find_dir(src, ("mapillary_vistas/validation", "validation"), "mapillary-vistas",
                   "validation", MV_HINT)  # fmt: skip
    images = find_dir(val, ("images",), "mapillary-vistas", "validation/images", MV_HINT)
    ann = val / "v1.2" if (val / "v1.2").is_dir() else val
    labels = find_dir(ann, ("labels",), "mapillary-vistas", "labels (v1.2)", MV_HINT)
    panoptic = find_dir(ann, ("panoptic",), "mapillary-vistas", "panoptic (v1.2)", MV_HINT)
    pan_json = panoptic / "panoptic_2018.json"
    if not pan_json.is_file():
        raise PrepareError(f"mapillary-vistas: {pan_json} not found; {MV_HINT}")
    out = dst / "mapillary_vistas" / "validation"
    if out.resolve() == val.resolve():
        return ["mapillary-vistas"]
    data = read_json(pan_json, "mapillary-vistas", ("categories",))
    if not isinstance(data["categories"], list) or len(data["categories"]) != 65:
        raise PrepareError(
            f"mapillary-vistas: {pan_json} has {len(data.get('categories', []))} categories, not "
            "v1.2's 65 (use the v1.2 annotations of the release)"
        )
    for folder, target, pattern in ((images, "images", "*.jpg"), (labels, "labels", "*.png"),
                                    (panoptic, "panoptic", "*.png")):  # fmt: skip
        for p in progress(sorted(folder.glob(pattern)), f"mapillary {target}"):
            place(p, out / target / p.name, link, root=dst)
    place(pan_json, out / "panoptic" / "panoptic_2018.json", link, root=dst)
    return ["mapillary-vistas"]
