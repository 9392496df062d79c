"""What every benchmark reader shares: the data root, the record format and the missing-data error.

A benchmark is a test split in the folder layout FC-CLIP's preparation scripts write under
detectron2's datasets folder (mmsegmentation's ADE20K layout is accepted as well). The data root is
``$OVSEG_DATA`` (default ``./data``); each reader documents its sub-folders and the command that
prepares them.

Each image is one record (a plain dict, detectron2's dataset-dict convention)::

    {"file_name": str, "image_id": str | int, "height": int, "width": int,
     "sem_seg_file_name": str,                       # semantic benchmarks
     "pan_seg_file_name": str, "segments_info": [...],  # panoptic benchmarks
     "inst_seg_file_name": str}                      # Cityscapes instance ids
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ovseg.utils.paths import data_root

TASKS = ("semantic", "panoptic", "instance")
__all__ = [
    "TASKS",
    "Benchmark",
    "BenchmarkNotFoundError",
    "data_root",
]  # data_root: one home, utils.paths


def prepare_command(name: str, root: Path) -> str:
    return f"python tools/prepare_data.py {name} --src <official download> --dst {root}"


class BenchmarkNotFoundError(FileNotFoundError):
    """A benchmark's folder or files are missing; the message names the dataset, every expected
    path and the command that prepares them.

    Attributes:
        dataset: the benchmark name; paths: the missing paths.
    """

    def __init__(self, dataset: str, root: Path, missing: Sequence[Path], hint: str = "") -> None:
        self.dataset = dataset
        self.paths = [str(p) for p in missing]
        shown = ", ".join(self.paths[:5]) + (" ..." if len(self.paths) > 5 else "")
        where = "" if root.is_dir() else f" (the data root {root} does not exist; set $OVSEG_DATA)"
        super().__init__(
            f"{dataset}: not found: {shown}{where}{hint}; prepare it with: "
            f"{prepare_command(dataset, root)}"
        )


@dataclass
class Benchmark:
    """One prepared test split: its records plus what evaluating it needs.

    Attributes:
        name: benchmark name (``"ade20k-150"``).
        vocabulary: built-in vocabulary name whose class k is label value k.
        tasks: the tasks loaded (subset of ``TASKS``).
        records: one dict per image (see the module docstring), sorted by ``file_name``.
        num_classes: number of semantic classes.
        ignore_index: ignored ground-truth label value.
        reduce_zero_label: whether the semantic ground truth needs mmseg's zero-label shift.
        panoptic_json / panoptic_root: COCO-panoptic ground truth (panoptic task).
        instances_json: COCO instances ground truth (instance task, where the dataset has one).
        category_ids: dataset category id of each class (from the panoptic json, when loaded).
        min_size_test / max_size_test: FC-CLIP's whole-image test resolution.
        instance_evaluator: ``"coco"`` (COCO mask AP) or ``"cityscapes"`` (official rules).
    """

    name: str
    vocabulary: str
    tasks: tuple[str, ...]
    records: list[dict[str, Any]]
    num_classes: int
    ignore_index: int = 255
    reduce_zero_label: bool = False
    panoptic_json: Path | None = None
    panoptic_root: Path | None = None
    instances_json: Path | None = None
    category_ids: list[int] | None = None
    min_size_test: int = 800
    max_size_test: int = 1333
    instance_evaluator: str = "coco"
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)


def resolve_tasks(name: str, available: Sequence[str], tasks: Sequence[str] | None) -> tuple:
    """``tasks`` checked against what the benchmark offers (None = all of them)."""
    if tasks is None:
        return tuple(available)
    tasks = tuple(tasks)
    bad = [t for t in tasks if t not in available]
    if bad:
        raise ValueError(f"{name} has no {', '.join(bad)} task; it offers: {', '.join(available)}")
    return tasks


def require(name: str, root: Path, paths: Sequence[Path], hint: str = "") -> None:
    """Raise :class:`BenchmarkNotFoundError` listing every path of ``paths`` that is missing."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise BenchmarkNotFoundError(name, root, missing, hint)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header (the pixels are not decoded)."""
    with Image.open(path) as img:
        width, height = img.size
    return height, width


def pair_by_stem(
    name: str,
    root: Path,
    image_dir: Path,
    label_dir: Path,
    image_suffix: str,
    label_suffix: str,
) -> list[dict[str, Any]]:
    """Semantic records: ``image_dir/**/X{image_suffix}`` with ``label_dir/**/X{label_suffix}``.

    Raises:
        BenchmarkNotFoundError: a folder is missing or holds no images.
        ValueError: images without a label (or labels without an image), listed.
    """
    require(name, root, [image_dir, label_dir])

    def index(folder: Path, suffix: str) -> dict[str, Path]:
        return {
            p.relative_to(folder).as_posix()[: -len(suffix)]: p
            for p in folder.rglob(f"*{suffix}")
            if p.is_file()
        }

    images = index(image_dir, image_suffix)
    labels = index(label_dir, label_suffix)
    if not images:
        raise BenchmarkNotFoundError(
            name, root, [image_dir / f"*{image_suffix}"], " (empty folder)"
        )
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        raise ValueError(
            f"{name}: {len(unpaired)} image(s)/label(s) in {image_dir} and {label_dir} do not pair "
            f"up: {', '.join(unpaired[:10])}{' ...' if len(unpaired) > 10 else ''}; re-run "
            f"{prepare_command(name, root)}"
        )
    records = []
    for key in sorted(images):
        height, width = image_size(images[key])
        records.append(
            {
                "file_name": str(images[key]),
                "image_id": key,
                "height": height,
                "width": width,
                "sem_seg_file_name": str(labels[key]),
            }
        )
    return records


def load_panoptic_json(
    name: str,
    root: Path,
    json_path: Path,
    panoptic_root: Path,
    image_dir: Path,
    image_suffix: str = ".jpg",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Records of a COCO-panoptic json: image path = ``image_dir / (PNG stem + image_suffix)``
    (detectron2's convention). Returns ``(records, categories)``.

    Raises:
        BenchmarkNotFoundError: the json or a folder is missing.
        ValueError: the json is malformed.
    """
    require(name, root, [json_path, panoptic_root, image_dir])
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
        records = []
        for ann in data["annotations"]:
            stem = Path(ann["file_name"]).stem
            height, width = sizes[ann["image_id"]]
            records.append(
                {
                    "file_name": str(image_dir / f"{stem}{image_suffix}"),
                    "image_id": ann["image_id"],
                    "height": height,
                    "width": width,
                    "pan_seg_file_name": str(panoptic_root / ann["file_name"]),
                    "segments_info": ann["segments_info"],
                }
            )
        categories = data["categories"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{name}: {json_path} is not a COCO panoptic json ({type(e).__name__}: {e}); re-run "
            f"{prepare_command(name, root)}"
        ) from None
    records.sort(key=lambda r: r["file_name"])
    return records, categories


def attach_semantic(
    name: str, root: Path, records: list[dict[str, Any]], label_dir: Path, suffix: str = ".png"
) -> None:
    """Add ``sem_seg_file_name`` (``label_dir / (image stem + suffix)``) to every record."""
    require(name, root, [label_dir])
    missing = []
    for r in records:
        path = label_dir / f"{Path(r['file_name']).stem}{suffix}"
        if not path.is_file():
            missing.append(path)
        r["sem_seg_file_name"] = str(path)
    if missing:
        raise BenchmarkNotFoundError(name, root, missing, f" ({len(missing)} label maps)")


def instance_image_ids(name: str, root: Path, json_path: Path) -> dict[str, Any]:
    """Map image file stem -> image id of a COCO instances json (to join it with other records).

    Raises:
        BenchmarkNotFoundError: the json is missing.
        ValueError: it is malformed.
    """
    require(name, root, [json_path])
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        return {Path(im["file_name"]).stem: im["id"] for im in data["images"]}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{name}: {json_path} is not a COCO instances json ({type(e).__name__}: {e})"
        ) from None


def link_instances(name: str, root: Path, records: list[dict[str, Any]], json_path: Path) -> None:
    """Add ``instance_image_id`` (the image's id in the instances json) to every record."""
    ids = instance_image_ids(name, root, json_path)
    missing = [r["file_name"] for r in records if Path(r["file_name"]).stem not in ids]
    if missing:
        raise ValueError(
            f"{name}: {len(missing)} image(s) are not in {json_path}: "
            f"{', '.join(Path(m).name for m in missing[:10])}; re-run {prepare_command(name, root)}"
        )
    for r in records:
        r["instance_image_id"] = ids[Path(r["file_name"]).stem]
