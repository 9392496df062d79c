"""Pascal VOC 2012 (20 / 21 classes) and Pascal Context (59 / 459 classes) validation sets.

VOC raw input (``VOCtrainval_11-May-2012.tar``)::

    VOCdevkit/VOC2012/JPEGImages/*.jpg
    VOCdevkit/VOC2012/SegmentationClass/*.png        palette PNGs: 0 background, 1..20, 255 border
    VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt 1,449 ids

Pascal Context raw input (``VOCtrainval_03-May-2010.tar`` + ``trainval.tar.gz`` extracted into
``VOCdevkit/VOC2010``)::

    VOCdevkit/VOC2010/JPEGImages/*.jpg
    VOCdevkit/VOC2010/trainval/*.mat                 ``LabelMap`` uint16: 0 unlabelled, 1..459
    VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt   (else ImageSets/Main/val.txt)

Output: the layouts of :mod:`ovseg.data.benchmarks.pascal` (FC-CLIP's ``pascal_voc_d2`` /
``pascal_ctx_d2``). PC-59 keeps the 59 classes of the Detail API's ``trainval_merged.json``
(labels.txt ids below, in that order), every other class becomes 255; PC-459 is ``LabelMap - 1``
with 0 -> 65535, as FC-CLIP's ``prepare_pascal_ctx_full_sem_seg.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import (
    PrepareError,
    find_dir,
    inside,
    place,
    progress,
    read_array,
    read_list,
    save_label,
)

VOC_HINT = (
    "extract VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) and "
    "pass the folder holding VOCdevkit as --src"
)
CTX_HINT = (
    "extract VOCtrainval_03-May-2010.tar and the Pascal Context trainval.tar.gz "
    "(https://www.cs.stanford.edu/~roozbeh/pascal-context/) into VOCdevkit/VOC2010 and pass the "
    "folder holding VOCdevkit as --src"
)

# The 59 Pascal Context classes as ids of labels.txt (1-based, 459 classes), in class order.
PC59_IDS = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113,
    115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326,
    347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)  # fmt: skip


def _plain_ids(ids: list[str], dataset: str, split: Path) -> list[str]:
    """The split file's image ids, each a plain name (no folder, no ``..``): they become paths."""
    for i in ids:
        inside(Path("."), i, dataset, str(split))
        if Path(i).name != i or i in (".", ".."):
            raise PrepareError(f"{dataset}: entry {i!r} in {split} is not a plain image id")
    return ids


def voc21_to_voc20(label: np.ndarray) -> np.ndarray:
    """VOC-21 labels (0 background, 1..20, 255) -> VOC-20 (0..19, background and 255 -> 255)."""
    out = label.astype(np.int64) - 1
    out[(label == 0) | (label == 255)] = 255
    return out.astype(np.uint8)


def prepare_pascal_voc(src: Path, dst: Path, link: bool = False) -> list[str]:
    """Write ``pascal_voc_d2`` (images, ``annotations_pascal21``, ``annotations_pascal20``).

    Returns:
        the benchmark names written.
    """
    voc = find_dir(
        src,
        ("VOCdevkit/VOC2012", "VOC2012", ""),
        "pascal-voc",
        "VOC2012",
        VOC_HINT,
        marker="JPEGImages",
    )
    split = voc / "ImageSets" / "Segmentation" / "val.txt"
    if not split.is_file():
        raise PrepareError(f"pascal-voc: {split} not found; {VOC_HINT}")
    ids = _plain_ids(read_list(split), "pascal-voc", split)
    out = dst / "pascal_voc_d2"
    missing = [
        p
        for i in ids
        for p in (voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png")
        if not p.is_file()
    ]
    if missing:
        shown = ", ".join(map(str, missing[:5]))
        raise PrepareError(f"pascal-voc: {len(missing)} file(s) listed in {split} are missing: "
                           f"{shown}{' ...' if len(missing) > 5 else ''}; {VOC_HINT}")  # fmt: skip
    for i in progress(ids, "pascal-voc"):
        place(
            voc / "JPEGImages" / f"{i}.jpg",
            out / "images" / "validation" / f"{i}.jpg",
            link,
            root=dst,
        )
        label = read_array(voc / "SegmentationClass" / f"{i}.png")
        if label.ndim != 2:
            raise PrepareError(
                f"pascal-voc: {voc / 'SegmentationClass' / f'{i}.png'} is not a palette/grey "
                "label PNG (class index per pixel)"
            )
        save_label(label.astype(np.uint8), out / "annotations_pascal21" / "validation" / f"{i}.png")
        save_label(voc21_to_voc20(label), out / "annotations_pascal20" / "validation" / f"{i}.png")
    return ["pascal-voc-21", "pascal-voc-20"]


def context_labels(label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Pascal Context ``LabelMap`` (uint16, 0 unlabelled, 1..459) -> (PC-59 uint8 labels with
    255 ignore, PC-459 uint16 labels with 65535 ignore)."""
    lm = label_map.astype(np.int64)
    lut = np.full(max(int(lm.max()) + 1, 460), 255, dtype=np.uint8)
    lut[list(PC59_IDS)] = np.arange(len(PC59_IDS), dtype=np.uint8)
    pc59 = lut[lm]
    pc459 = np.where(lm == 0, 65535, lm - 1).astype(np.uint16)
    return pc59, pc459


def prepare_pascal_context(
    src: Path, dst: Path, link: bool = False, split_file: Path | None = None
) -> list[str]:
    """Write ``pascal_ctx_d2`` (images, ``annotations_ctx59`` PNG, ``annotations_ctx459`` TIFF)
    from the .mat files of the validation split."""
    from scipy.io import loadmat

    voc = find_dir(src, ("VOCdevkit/VOC2010", "VOC2010", ""), "pascal-context", "VOC2010",
                   CTX_HINT, marker="JPEGImages")  # fmt: skip
    mat_dir = find_dir(voc, ("trainval",), "pascal-context", "trainval/*.mat", CTX_HINT)
    if split_file is None:
        for cand in ("ImageSets/SegmentationContext/val.txt", "ImageSets/Main/val.txt"):
            if (voc / cand).is_file():
                split_file = voc / cand
                break
        else:
            raise PrepareError(
                f"pascal-context: no validation split list under {voc / 'ImageSets'} "
                "(SegmentationContext/val.txt or Main/val.txt); pass --split-file"
            )
    ids = _plain_ids(read_list(Path(split_file)), "pascal-context", split_file)
    ids = [i for i in ids if (mat_dir / f"{i}.mat").is_file()]
    if not ids:
        raise PrepareError(f"pascal-context: no .mat file in {mat_dir} for the ids of {split_file}")
    out = dst / "pascal_ctx_d2"
    for i in progress(ids, "pascal-context"):
        image = voc / "JPEGImages" / f"{i}.jpg"
        if not image.is_file():
            raise PrepareError(f"pascal-context: {image} not found; {CTX_HINT}")
        place(image, out / "images" / "validation" / f"{i}.jpg", link, root=dst)
        try:
            mat = loadmat(mat_dir / f"{i}.mat")
        except (OSError, ValueError, TypeError, IndexError, KeyError, NotImplementedError) as e:
            raise PrepareError(f"pascal-context: cannot read {mat_dir / f'{i}.mat'}: {e}") from None
        if "LabelMap" not in mat:
            raise PrepareError(f"pascal-context: {mat_dir / f'{i}.mat'} has no LabelMap")
        pc59, pc459 = context_labels(mat["LabelMap"])
        save_label(pc59, out / "annotations_ctx59" / "validation" / f"{i}.png")
        save_label(pc459, out / "annotations_ctx459" / "validation" / f"{i}.tif")
    return ["pascal-context-59", "pascal-context-459"]
