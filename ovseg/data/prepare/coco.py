"""COCO 2017 validation: images, panoptic and instance annotations as shipped, plus the semantic
label maps derived from the panoptic PNGs (Mask2Former's
``prepare_coco_semantic_annos_from_panoptic_annos.py``: every segment, crowd included, gets the
contiguous index of its category in the json's order; void is 255).

Raw input (``val2017.zip``, ``annotations_trainval2017.zip``,
``panoptic_annotations_trainval2017.zip`` extracted into one folder)::

    val2017/*.jpg
    annotations/panoptic_val2017.json
    annotations/panoptic_val2017.zip  (or an extracted panoptic_val2017/ folder, either place)
    annotations/instances_val2017.json   (optional: the instance task)
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np

from ovseg.utils.image import ImageLoadError
from ovseg.utils.panoptic_ids import rgb2id

from .common import (
    PrepareError,
    find_dir,
    inside,
    place,
    progress,
    read_array,
    read_json,
    require_file,
    save_label,
)

HINT = (
    "download val2017.zip, annotations_trainval2017.zip and panoptic_annotations_trainval2017.zip "
    "from https://cocodataset.org/#download and extract them into --src"
)


def semantic_from_panoptic(
    png: np.ndarray, segments: list[dict], contiguous: dict[int, int], ignore: int = 255
) -> np.ndarray:
    """(H, W, 3) panoptic PNG + its ``segments_info`` -> (H, W) uint8 contiguous class indices."""
    ids = rgb2id(png)
    out = np.full(ids.shape, ignore, dtype=np.uint8)
    for s in segments:
        if not isinstance(s, dict) or "id" not in s or "category_id" not in s:
            raise PrepareError(f"segments_info entry {s!r:.80} has no 'id' / 'category_id'")
        if s["category_id"] not in contiguous:
            raise PrepareError(
                f"segment {s['id']} has category_id {s['category_id']!r}, which is not among the "
                "json's categories"
            )
        out[ids == s["id"]] = contiguous[s["category_id"]]
    return out


def _panoptic_pngs(src: Path, dst_dir: Path, link: bool) -> Path:
    """The folder of panoptic PNGs under ``dst_dir``: linked/copied from an extracted folder or
    extracted from the official zip."""
    for cand in (src / "panoptic_val2017", src / "annotations" / "panoptic_val2017"):
        if cand.is_dir() and any(cand.glob("*.png")):
            if dst_dir.resolve() != cand.resolve():
                dst_dir.mkdir(parents=True, exist_ok=True)
                for p in progress(sorted(cand.glob("*.png")), "coco panoptic PNGs"):
                    place(p, dst_dir / p.name, link, root=dst_dir)
            return dst_dir
    archive = src / "annotations" / "panoptic_val2017.zip"
    if not archive.is_file():
        raise PrepareError(
            f"coco-panoptic: no panoptic PNGs: neither {src / 'panoptic_val2017'} nor {archive}; "
            f"{HINT}"
        )
    dst_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = Path(info.filename).name
            if info.is_dir() or not name.endswith(".png"):
                continue
            with zf.open(info) as f_in, open(dst_dir / name, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
    return dst_dir


def _entry(record: object, key: str, source: Path, where: str) -> str:
    """``record[key]`` as a string, or a one-line error naming the json and the entry."""
    if not isinstance(record, dict) or not isinstance(record.get(key), str):
        raise PrepareError(f"coco-panoptic: {source} {where} entry {record!r:.80} has no {key!r}")
    return record[key]


def prepare_coco(src: Path, dst: Path, link: bool = False) -> list[str]:
    """Write ``coco/`` (val2017, annotations, panoptic_val2017, panoptic_semseg_val2017)."""
    images = find_dir(src, ("val2017",), "coco-panoptic", "val2017 images", HINT)
    pan_json = require_file(src / "annotations" / "panoptic_val2017.json", "coco-panoptic", HINT)
    out = dst / "coco"
    data = read_json(pan_json, "coco-panoptic", ("images", "annotations", "categories"))
    place(pan_json, out / "annotations" / "panoptic_val2017.json", link, root=dst)
    inst = src / "annotations" / "instances_val2017.json"
    if inst.is_file():
        place(inst, out / "annotations" / "instances_val2017.json", link, root=dst)
    for im in progress(data["images"], "coco images"):
        name = _entry(im, "file_name", pan_json, "images[]")
        path = inside(images, name, "coco-panoptic", f"{pan_json} images[]")
        if not path.is_file():
            raise PrepareError(f"coco-panoptic: {path} (listed in {pan_json}) not found; {HINT}")
        target = inside(out / "val2017", name, "coco-panoptic", f"{pan_json} images[]")
        place(path, target, link, root=dst)
    pngs = _panoptic_pngs(src, out / "panoptic_val2017", link)
    contiguous = {c["id"]: k for k, c in enumerate(data["categories"])}
    for ann in progress(data["annotations"], "coco semantic from panoptic"):
        name = _entry(ann, "file_name", pan_json, "annotations[]")
        where = f"{pan_json} annotations[]"
        path = inside(pngs, name, "coco-panoptic", where)
        if not path.is_file():
            raise PrepareError(f"coco-panoptic: panoptic PNG {path} not found; {HINT}")
        target = inside(out / "panoptic_semseg_val2017", name, "coco-panoptic", where)
        if not isinstance(ann.get("segments_info"), list):
            raise PrepareError(f"coco-panoptic: {where} entry {name!r} has no 'segments_info' list")
        try:
            sem = semantic_from_panoptic(read_array(path), ann["segments_info"], contiguous)
        except ImageLoadError as e:
            raise PrepareError(f"coco-panoptic: {e} (listed in {where})") from None
        except PrepareError as e:
            raise PrepareError(f"coco-panoptic: {where} entry {name!r}: {e}") from None
        save_label(sem, target)
    return ["coco-panoptic"]
