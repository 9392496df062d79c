"""ADE20K-150 validation: semantic labels, and panoptic + instance annotations from the scene
parsing challenge's instance annotations (Mask2Former / FC-CLIP ``prepare_ade20k_*_seg.py``).

Raw input (``ADEChallengeData2016.zip`` and, for panoptic/instance, ``annotations_instance.tar``
from http://sceneparsing.csail.mit.edu/ extracted into ``ADEChallengeData2016``)::

    ADEChallengeData2016/images/validation/ADE_val_*.jpg
    ADEChallengeData2016/annotations/validation/ADE_val_*.png     0 = other, 1..150
    ADEChallengeData2016/annotations_instance/validation/*.png    R = instance class 1..100,
                                                                  G = instance id (0 = none)
    ade20k_instance_catid_mapping.txt   (optional; anywhere under --src)

Output (:mod:`ovseg.data.benchmarks.ade20k`): ``annotations_detectron2`` (label - 1, 0 -> 255),
``ade20k_panoptic_val`` + ``.json`` (category id = 0-based class index; stuff pasted first, then
every instance; segment ids numbered 1, 2, ... per image) and ``ade20k_instance_val.json`` (COCO,
RLE, the 100 thing classes). Without the mapping file, instance class k (1-based) is the k-th thing
class of the 150 in order, which is what the official mapping file says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.masks import encode_mask
from ovseg.utils.panoptic_ids import id2rgb

from .common import PrepareError, bbox_of, find_dir, place, progress, read_array, save_label

HINT = (
    "download ADEChallengeData2016.zip (and annotations_instance.tar for panoptic/instance) from "
    "http://sceneparsing.csail.mit.edu/ and extract them into --src"
)


def ade_semantic(label: np.ndarray) -> np.ndarray:
    """Raw ADE labels (0 other, 1..150) -> 0..149 with 255 ignore (uint8)."""
    out = label.astype(np.int64) - 1
    out[label == 0] = 255
    return out.astype(np.uint8)


def instance_class_mapping(src: Path) -> dict[int, int]:
    """0-based instance class -> 0-based ADE-150 class, from ``ade20k_instance_catid_mapping.txt``
    when found under ``src``, else the thing classes of the 150 in order."""
    found = sorted(src.rglob("ade20k_instance_catid_mapping.txt"))
    if found:
        mapping = {}
        for line in found[0].read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2:
                mapping[int(parts[0]) - 1] = int(parts[1]) - 1
        return mapping
    things = [k for k, c in enumerate(Vocabulary.from_name("ade20k-150")) if c.isthing]
    return dict(enumerate(things))


def prepare_ade20k(src: Path, dst: Path, link: bool = False) -> list[str]:
    """Write ``ADEChallengeData2016/`` (images, annotations_detectron2 and, when the instance
    annotations are there, the panoptic and instance ground truth)."""
    base = find_dir(
        src,
        ("ADEChallengeData2016", "ade/ADEChallengeData2016", ""),
        "ade20k-150",
        "ADEChallengeData2016",
        HINT,
        marker="images",
    )
    image_dir = find_dir(base, ("images/validation",), "ade20k-150", "images/validation", HINT)
    label_dir = find_dir(base, ("annotations/validation",), "ade20k-150",
                         "annotations/validation", HINT)  # fmt: skip
    inst_dir = base / "annotations_instance" / "validation"
    out = dst / "ADEChallengeData2016"
    images = sorted(image_dir.glob("*.jpg"))
    if not images:
        raise PrepareError(f"ade20k-150: no .jpg images in {image_dir}; {HINT}")
    vocab = Vocabulary.from_name("ade20k-150")
    with_instances = inst_dir.is_dir()
    mapping = instance_class_mapping(src) if with_instances else {}
    thing_classes = set(mapping.values())
    pan_images, pan_anns, ins_anns = [], [], []
    for path in progress(images, "ade20k-150"):
        stem = path.stem
        label_path = label_dir / f"{stem}.png"
        if not label_path.is_file():
            raise PrepareError(f"ade20k-150: label {label_path} for {path.name} not found; {HINT}")
        if out.resolve() != base.resolve():
            place(path, out / "images" / "validation" / path.name, link, root=dst)
            place(label_path, out / "annotations" / "validation" / label_path.name, link, root=dst)
        sem = ade_semantic(read_array(label_path))
        save_label(sem, out / "annotations_detectron2" / "validation" / f"{stem}.png")
        if not with_instances:
            continue
        inst_path = inst_dir / f"{stem}.png"
        if not inst_path.is_file():
            raise PrepareError(f"ade20k-150: instance annotation {inst_path} not found; {HINT}")
        inst = read_array(inst_path)
        h, w = sem.shape
        ids = np.zeros((h, w), np.int64)
        segments = []
        image_num = int(stem.split("_")[-1]) if stem.split("_")[-1].isdigit() else len(pan_images)
        for cls in np.unique(sem).tolist():  # stuff first (instances are pasted over it)
            if cls == 255 or cls in thing_classes:
                continue
            segments.append((len(segments) + 1, cls, sem == cls))
        for iid in np.unique(inst[..., 1]).tolist():
            if iid == 0:
                continue
            mask = inst[..., 1] == iid
            classes = np.unique(inst[..., 0][mask]).tolist()
            if len(classes) != 1 or classes[0] == 0 or classes[0] - 1 not in mapping:
                raise PrepareError(
                    f"ade20k-150: {inst_path}: instance {iid} has instance class(es) {classes}; "
                    "expected exactly one in 1..100"
                )
            cls = mapping[classes[0] - 1]
            segments.append((len(segments) + 1, cls, mask))
            ins_anns.append({"id": len(ins_anns) + 1, "image_id": image_num, "category_id": cls,
                             "segmentation": encode_mask(mask), "area": int(mask.sum()),
                             "bbox": bbox_of(mask), "iscrowd": 0})  # fmt: skip
        infos = []
        for sid, _, mask in segments:
            ids[mask] = sid
        for sid, cls, _ in segments:
            mask = ids == sid
            if mask.any():  # a stuff region entirely covered by instances is dropped
                infos.append({"id": sid, "category_id": cls, "area": int(mask.sum()),
                              "bbox": bbox_of(mask), "iscrowd": 0})  # fmt: skip
        save_label(id2rgb(ids), out / "ade20k_panoptic_val" / f"{stem}.png")
        pan_images.append({"id": stem, "file_name": path.name, "height": h, "width": w,
                           "instance_id": image_num})  # fmt: skip
        pan_anns.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": infos})
    written = ["ade20k-150 (semantic)"]
    if with_instances:
        cats = [{"id": k, "name": c.name, "isthing": int(k in thing_classes)}
                for k, c in enumerate(vocab)]  # fmt: skip
        _write_json(out / "ade20k_panoptic_val.json",
                    {"images": [{k: v for k, v in im.items() if k != "instance_id"}
                                for im in pan_images],
                     "annotations": pan_anns, "categories": cats})  # fmt: skip
        ins_images = [{"id": im["instance_id"], "file_name": im["file_name"],
                       "height": im["height"], "width": im["width"]} for im in pan_images]  # fmt: skip
        ins_cats = [{"id": c["id"], "name": c["name"]} for c in cats if c["isthing"]]
        _write_json(out / "ade20k_instance_val.json",
                    {"images": ins_images, "annotations": ins_anns, "categories": ins_cats})  # fmt: skip
        written = ["ade20k-150"]
    return written


def _write_json(path: Path, obj: dict) -> None:
    from ovseg.utils.io import atomic_write_json

    atomic_write_json(path, obj)
