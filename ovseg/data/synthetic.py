"""Small synthetic datasets in real on-disk formats, for tests and toy training runs.

Each scene is two stuff regions (sky above a grass or water ground, split by a wavy horizon) with
a few non-overlapping things (circles, squares, triangles) of distinct colours on top. Colours and
textures differ per class, so a tiny model can learn the task in minutes of CPU.

:func:`make_synthetic_coco_panoptic` writes COCO panoptic format (images, RGB-encoded panoptic
PNGs with id = R + 256 G + 256^2 B, a JSON with images / annotations / categories incl.
``isthing``); :func:`make_synthetic_semantic_folder` writes images + class-index label PNGs + a
class list. Scene ``i`` of a dataset made with ``seed`` is ``render_synthetic_scene(
np.random.default_rng([seed, i]), ...)``, so a test can re-render exactly what was written.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ovseg.utils.panoptic_ids import id2rgb

# COCO-style categories: non-contiguous ids, things first. Colours are the drawing colours.
CATEGORIES: list[dict] = [
    {
        "id": 1,
        "name": "circle",
        "isthing": 1,
        "color": [220, 40, 40],
        "supercategory": "shape",
    },
    {
        "id": 2,
        "name": "square",
        "isthing": 1,
        "color": [240, 200, 30],
        "supercategory": "shape",
    },
    {
        "id": 3,
        "name": "triangle",
        "isthing": 1,
        "color": [200, 50, 200],
        "supercategory": "shape",
    },
    {
        "id": 21,
        "name": "sky",
        "isthing": 0,
        "color": [135, 190, 235],
        "supercategory": "stuff",
    },
    {
        "id": 22,
        "name": "grass",
        "isthing": 0,
        "color": [60, 150, 50],
        "supercategory": "stuff",
    },
    {
        "id": 23,
        "name": "water",
        "isthing": 0,
        "color": [30, 70, 150],
        "supercategory": "stuff",
    },
]
# Synonyms for the optional vocabulary file (FC-CLIP style "name, synonym, ...").
SYNONYMS: dict[int, str] = {
    1: "circle, circles, disc",
    2: "square, squares, box",
    3: "triangle, triangles",
    21: "sky",
    22: "grass, lawn",
    23: "water, sea, lake",
}
_SHAPES = {1: "circle", 2: "square", 3: "triangle"}


@dataclass(frozen=True)
class SyntheticCocoPanoptic:
    """Paths of a written synthetic COCO-panoptic split (detectron2's key names)."""

    image_root: Path
    panoptic_json: Path
    panoptic_root: Path
    vocabulary: Path
    num_images: int


@dataclass(frozen=True)
class SyntheticSemanticFolder:
    """Paths of a written synthetic semantic-folder dataset."""

    image_dir: Path
    label_dir: Path
    classes: Path
    num_images: int


def render_synthetic_scene(
    rng: np.random.Generator,
    height: int = 128,
    width: int = 128,
    max_things: int = 3,
    crowd_prob: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Draw one scene.

    Args:
        rng: the random generator (its state decides the whole scene).
        height: image height in pixels.
        width: image width in pixels.
        max_things: at most this many things (at least 1 is attempted).
        crowd_prob: probability that a thing is marked ``iscrowd``.

    Returns:
        image: (H, W, 3) uint8 RGB.
        segment_ids: (H, W) int64 panoptic segment ids (no void: every pixel is labelled).
        segments: COCO ``segments_info`` entries ``{"id", "category_id", "iscrowd", "area",
        "bbox"}`` (bbox as [x, y, w, h]), in drawing order, with area > 0.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ids = np.zeros((height, width), dtype=np.int64)
    image = np.zeros((height, width, 3), dtype=np.float32)
    used: set[int] = set()

    def new_id() -> int:
        while True:
            sid = int(rng.integers(1, 256**3))
            if sid not in used:
                used.add(sid)
                return sid

    cats = {c["id"]: c for c in CATEGORIES}
    segments: list[dict] = []

    # Stuff: sky above a wavy horizon, grass or water below.
    horizon = height * rng.uniform(0.3, 0.6)
    amplitude = height * rng.uniform(0.0, 0.06)
    phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 3.0)
    below = yy > horizon + amplitude * np.sin(phase + freq * 2 * np.pi * xx / width)
    ground = 22 if rng.random() < 0.5 else 23
    for cat_id, region in ((21, ~below), (ground, below)):
        sid = new_id()
        ids[region] = sid
        segments.append({"id": sid, "category_id": cat_id, "iscrowd": 0})
        base = np.array(cats[cat_id]["color"], dtype=np.float32)
        if cat_id == 21:  # sky: brighter towards the horizon
            tex = (yy / height * 40.0)[..., None] + rng.normal(0, 3, (height, width, 1))
        elif cat_id == 22:  # grass: coarse noise
            tex = rng.normal(0, 18, (height, width, 1))
        else:  # water: horizontal waves
            tex = 20 * np.sin(yy * 0.8 + 3 * np.sin(xx * 0.15))[..., None]
        image[region] = (base + tex)[region]

    # Things: non-overlapping shapes (rejection sampling on their bounding boxes).
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(1, max_things + 1))):
        cat_id = int(rng.choice(list(_SHAPES)))
        for _attempt in range(20):
            r = rng.uniform(0.08, 0.18) * min(height, width)
            cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            box = (cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2)
            if all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1] for b in boxes):
                break
        else:
            continue
        shape = _SHAPES[cat_id]
        if shape == "circle":
            region = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        elif shape == "square":
            region = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
        else:  # upward triangle: the half-width grows from 0 at the apex to r at the base
            region = (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
        if not region.any():
            continue
        boxes.append(box)
        sid = new_id()
        ids[region] = sid
        crowd = int(rng.random() < crowd_prob)
        segments.append({"id": sid, "category_id": cat_id, "iscrowd": crowd})
        colour = np.array(cats[cat_id]["color"], dtype=np.float32) + rng.uniform(-15, 15, 3)
        image[region] = colour + rng.normal(0, 4, (int(region.sum()), 3))

    out = []
    for seg in segments:
        mask = ids == seg["id"]
        area = int(mask.sum())
        if area == 0:
            continue
        ys, xs = np.nonzero(mask)
        x0, y0 = int(xs.min()), int(ys.min())
        bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        out.append({**seg, "area": area, "bbox": bbox})
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), ids, out


def _save_image(image: np.ndarray, path: Path) -> None:
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(image).save(path, quality=95)
    else:
        Image.fromarray(image).save(path)


def make_synthetic_coco_panoptic(
    root: str | Path,
    num_images: int = 16,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    split: str = "train2017",
    image_format: str = "png",
    max_things: int = 3,
    crowd_prob: float = 0.0,
) -> SyntheticCocoPanoptic:
    """Write a synthetic COCO-panoptic split under ``root``.

    Layout (as COCO's)::

        root/{split}/000000000001.png                    images
        root/annotations/panoptic_{split}.json           images / annotations / categories
        root/annotations/panoptic_{split}/000000000001.png   RGB-encoded segment ids
        root/annotations/synthetic_vocabulary.txt        "ID: name, synonyms" per class

    Args:
        root: output folder (created).
        num_images: number of images (image ids 1..num_images).
        size: (H, W) of every image.
        seed: scene ``i`` is drawn from ``np.random.default_rng([seed, i])``.
        split: split name used in the folder and JSON names.
        image_format: "png" (lossless) or "jpg" (quality 95, like COCO).
        max_things: at most this many things per image.
        crowd_prob: probability that a thing is marked ``iscrowd`` = 1.

    Returns:
        the written paths.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    ext = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg"}.get(image_format.lower())
    if ext is None:
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    root = Path(root)
    image_root = root / split
    panoptic_root = root / "annotations" / f"panoptic_{split}"
    image_root.mkdir(parents=True, exist_ok=True)
    panoptic_root.mkdir(parents=True, exist_ok=True)
    height, width = size
    images, annotations = [], []
    for i in range(num_images):
        image_id = i + 1
        image, ids, segments = render_synthetic_scene(
            np.random.default_rng([seed, i]), height, width, max_things, crowd_prob
        )
        stem = f"{image_id:012d}"
        _save_image(image, image_root / f"{stem}{ext}")
        Image.fromarray(id2rgb(ids)).save(panoptic_root / f"{stem}.png")
        images.append(
            {
                "id": image_id,
                "file_name": f"{stem}{ext}",
                "height": height,
                "width": width,
            }
        )
        annotations.append(
            {
                "image_id": image_id,
                "file_name": f"{stem}.png",
                "segments_info": segments,
            }
        )
    panoptic_json = root / "annotations" / f"panoptic_{split}.json"
    data = {
        "info": {"description": f"ovseg synthetic shapes, seed {seed}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    panoptic_json.write_text(json.dumps(data), encoding="utf-8")
    vocabulary = root / "annotations" / "synthetic_vocabulary.txt"
    vocabulary.write_text(
        "".join(f"{c['id']}: {SYNONYMS[c['id']]}\n" for c in CATEGORIES),
        encoding="utf-8",
    )
    return SyntheticCocoPanoptic(image_root, panoptic_json, panoptic_root, vocabulary, num_images)


def make_synthetic_semantic_folder(
    root: str | Path,
    num_images: int = 16,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    image_format: str = "png",
    max_things: int = 3,
    ignore_border: int = 0,
    ignore_index: int = 255,
) -> SyntheticSemanticFolder:
    """Write a synthetic semantic-segmentation folder dataset under ``root``.

    Layout: ``root/images/NNNN.{png,jpg}``, ``root/labels/NNNN.png`` (uint8 class indices in
    :data:`CATEGORIES` order, ``ignore_index`` on a border of ``ignore_border`` pixels) and
    ``root/classes.txt`` (one class per line, with synonyms and ``[stuff]`` marks).

    The scenes are the same as :func:`make_synthetic_coco_panoptic` with the same seed.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    ext = ".jpg" if image_format.lower() in ("jpg", "jpeg") else ".png"
    root = Path(root)
    image_dir, label_dir = root / "images", root / "labels"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    contiguous = {c["id"]: i for i, c in enumerate(CATEGORIES)}
    height, width = size
    for i in range(num_images):
        image, ids, segments = render_synthetic_scene(
            np.random.default_rng([seed, i]), height, width, max_things
        )
        label = np.full((height, width), ignore_index, dtype=np.uint8)
        for seg in segments:
            label[ids == seg["id"]] = contiguous[seg["category_id"]]
        if ignore_border > 0:
            b = ignore_border
            label[:b], label[-b:], label[:, :b], label[:, -b:] = (ignore_index,) * 4
        _save_image(image, image_dir / f"{i:04d}{ext}")
        Image.fromarray(label).save(label_dir / f"{i:04d}.png")
    classes = root / "classes.txt"
    classes.write_text(
        "".join(
            SYNONYMS[c["id"]] + ("" if c["isthing"] else " [stuff]") + "\n" for c in CATEGORIES
        ),
        encoding="utf-8",
    )
    return SyntheticSemanticFolder(image_dir, label_dir, classes, num_images)


def main(argv: list[str] | None = None) -> int:
    """CLI: write a synthetic COCO-panoptic (or semantic-folder) dataset."""
    parser = argparse.ArgumentParser(
        prog="make_synthetic_coco.py",
        description="Write a small synthetic dataset of shapes on stuff backgrounds.",
        epilog=(
            "examples:\n"
            "  python tools/make_synthetic_coco.py data/synthetic --split train2017 -n 64\n"
            "  python tools/make_synthetic_coco.py data/synthetic --split val2017 -n 16 --seed 1\n"
            "  python tools/make_synthetic_coco.py data/synth_sem --format semantic_folder"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", help="output folder")
    parser.add_argument("-n", "--num-images", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train2017", help="COCO split name (coco_panoptic)")
    parser.add_argument("--image-format", choices=("png", "jpg"), default="png")
    parser.add_argument("--max-things", type=int, default=3)
    parser.add_argument(
        "--format",
        choices=("coco_panoptic", "semantic_folder"),
        default="coco_panoptic",
    )
    args = parser.parse_args(argv)
    if args.format == "coco_panoptic":
        out = make_synthetic_coco_panoptic(
            args.root, args.num_images, tuple(args.size), args.seed, args.split,
            args.image_format, args.max_things,
        )  # fmt: skip
        print(
            f"wrote {out.num_images} images\n"
            f"  data.*.image_root={out.image_root}\n"
            f"  data.*.panoptic_json={out.panoptic_json}\n"
            f"  data.*.panoptic_root={out.panoptic_root}\n"
            f"  data.*.vocabulary={out.vocabulary}"
        )
    else:
        out = make_synthetic_semantic_folder(
            args.root, args.num_images, tuple(args.size), args.seed, args.image_format,
            args.max_things,
        )  # fmt: skip
        print(
            f"wrote {out.num_images} images\n"
            f"  data.*.image_dir={out.image_dir}\n"
            f"  data.*.label_dir={out.label_dir}\n"
            f"  data.*.classes={out.classes}"
        )
    return 0
