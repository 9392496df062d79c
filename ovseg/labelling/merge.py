"""Merge a run's per-image results into ``annotations.json`` (+ ``panoptic.json``, ``failed.txt``).

Image ids are positions in the input list (1-based), so the merged files are the same whichever
backend, process count or number of resumes produced the per-image results; images come in
input order and annotations in each image's own order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovseg.labelling.coco import merge, merge_panoptic
from ovseg.labelling.store import LabelStore, WorkItem, input_root
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.io import atomic_write_json, atomic_write_text


@dataclass
class MergeSummary:
    """What the merge found: images with a result, failed ones, and ones not done yet."""

    images: int
    annotations: int
    failed: int
    missing: int
    paths: dict[str, Path]


def merge_run(
    store: LabelStore,
    items: Sequence[WorkItem],
    vocabulary: Vocabulary,
    task: str,
    save_png: bool = False,
    info: dict[str, Any] | None = None,
) -> MergeSummary:
    """Write ``annotations.json``, ``failed.txt`` and (panoptic with PNGs) ``panoptic.json``.

    COCO ``file_name`` is the image path relative to the deepest folder holding every input
    (recorded as ``info.image_root``): open the result with that folder as the images' root.
    """
    root = input_root([it.path for it in items])
    info = {**(info or {}), "image_root": str(root)}
    found: list[tuple[int, str, WorkItem, dict[str, Any]]] = []
    failed_lines: list[str] = []
    missing = 0
    for it in items:
        rec = store.read_result(it)
        if rec is None:
            reason = store.read_failure(it)
            if reason is None:
                missing += 1
            else:
                failed_lines.append(f"{it.path}\t{' '.join(reason.split())}\n")
            continue
        rel = Path(os.path.relpath(Path(it.path).resolve(), root)).as_posix()
        found.append((it.index + 1, rel, it, rec))
    coco = merge(((i, f, r) for i, f, _, r in found), vocabulary, info)
    paths = {"annotations": atomic_write_json(store.root / "annotations.json", coco, indent=None)}
    paths["failed"] = atomic_write_text(store.root / "failed.txt", "".join(failed_lines))
    if task == "panoptic" and save_png:
        pan = merge_panoptic(
            ((i, f, store.png_path(it).name, r) for i, f, it, r in found), vocabulary, info
        )
        paths["panoptic"] = atomic_write_json(store.root / "panoptic.json", pan, indent=None)
    return MergeSummary(len(found), len(coco["annotations"]), len(failed_lines), missing, paths)
