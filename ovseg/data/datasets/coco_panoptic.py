"""COCO-panoptic-format datasets (COCO panoptic 2017 and any data in that format)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np

from ovseg.text.vocabulary import Vocabulary, builtin_names, load_vocabulary
from ovseg.utils.panoptic_ids import rgb2id

from .base import (
    MAX_SEGMENTS,
    VOID,
    DatasetError,
    SegmentationDataset,
    SerializedList,
    list_paths,
    read_image,
    read_png_array,
)

# Verify every panoptic PNG against its segments_info at construction when the dataset has at
# most this many images; larger datasets are checked as each sample loads.
VERIFY_ALL_LIMIT = 500


def _load_vocabulary_source(source: str) -> Vocabulary:
    try:
        return load_vocabulary(source)
    except FileNotFoundError:
        raise DatasetError(
            f"vocabulary {source!r} is neither a file nor a built-in vocabulary name; give the "
            f"path of a class list or one of: {', '.join(builtin_names())}",
            [source],
        ) from None


class CocoPanopticDataset(SegmentationDataset):
    """A COCO-panoptic dataset: images, an annotation JSON and RGB-encoded panoptic PNGs.

    Categories and their thing/stuff flags come from the JSON; class index k (contiguous, in
    the JSON's category order) is ``vocabulary[k]`` and ``vocabulary[k].id`` is the category id.
    Everything that can be checked without decoding pixels is checked at construction, and every
    problem of a kind is reported at once.

    Args:
        image_root: folder of the images (``images[].file_name``).
        panoptic_json: the annotation JSON (``images``, ``annotations``, ``categories``).
        panoptic_root: folder of the panoptic PNGs (``annotations[].file_name``).
        vocabulary: optional class list file or built-in name whose names (with synonyms)
            replace the JSON's names: matched by category id when the file has ids, else by order.
        verify: decode every PNG now and check its ids against ``segments_info`` (default: when
            the dataset has at most 500 images; otherwise each PNG is checked when it loads).
        **kwargs: see :class:`SegmentationDataset` (train, transform, strict, with_targets, ...).

    Raises:
        DatasetError: missing folder/JSON, invalid JSON, unknown category ids, images or PNGs
            missing on disk (all listed), PNG ids not matching ``segments_info``, no images.
    """

    def __init__(
        self,
        image_root: str | os.PathLike,
        panoptic_json: str | os.PathLike,
        panoptic_root: str | os.PathLike,
        vocabulary: str | None = None,
        verify: bool | None = None,
        transform: A.Compose | None = None,
        **kwargs: Any,
    ) -> None:
        self.image_root = Path(image_root)
        self.panoptic_json = Path(panoptic_json)
        self.panoptic_root = Path(panoptic_root)
        for value, key, kind in (
            (image_root, "image_root", "folder of the images"),
            (panoptic_json, "panoptic_json", "panoptic annotation JSON"),
            (panoptic_root, "panoptic_root", "folder of the panoptic PNGs"),
        ):
            if not str(value):
                raise DatasetError(f"coco_panoptic: {key} is not set: give the {kind}")
        if not self.panoptic_json.is_file():
            raise DatasetError(
                f"coco_panoptic: panoptic_json not found: {self.panoptic_json} (give the "
                "panoptic annotation JSON, e.g. annotations/panoptic_train2017.json)",
                [self.panoptic_json],
            )
        for path, key in (
            (self.image_root, "image_root"),
            (self.panoptic_root, "panoptic_root"),
        ):
            if not path.is_dir():
                raise DatasetError(f"coco_panoptic: {key} folder not found: {path}", [path])
        data = self._read_json()
        self.categories: list[dict] = self._parse_categories(data)
        self.category_id_to_contiguous = {c["id"]: i for i, c in enumerate(self.categories)}
        records = self._parse_records(data)
        del data
        self._check_files(records)
        self.records = SerializedList(records)
        del records
        json_names = [c["name"] for c in self.categories]
        isthing = [bool(c["isthing"]) for c in self.categories]
        ids = [c["id"] for c in self.categories]
        if vocabulary:
            vocab = self._replace_names(_load_vocabulary_source(vocabulary), ids, isthing)
        else:
            try:
                vocab = Vocabulary(
                    json_names, isthing=isthing, ids=ids, name=self.panoptic_json.stem
                )
            except ValueError as e:
                raise DatasetError(f"{self.panoptic_json}: bad category names: {e}") from None
        super().__init__(vocab, transform=transform, **kwargs)
        if verify is None:
            verify = len(self.records) <= VERIFY_ALL_LIMIT
        if verify:
            self.verify()

    # ----------------------------------------------------------------- parsing
    def _read_json(self) -> dict:
        try:
            with open(self.panoptic_json, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(
                f"{self.panoptic_json} is not valid JSON: {e}", [self.panoptic_json]
            ) from None
        except OSError as e:
            raise DatasetError(
                f"cannot read {self.panoptic_json}: {e}", [self.panoptic_json]
            ) from None
        missing = (
            [k for k in ("images", "annotations", "categories") if k not in data]
            if isinstance(data, dict)
            else ["images", "annotations", "categories"]
        )
        if missing:
            raise DatasetError(
                f"{self.panoptic_json} is not a COCO panoptic JSON: missing {missing} (expected "
                "'images', 'annotations' with 'segments_info', and 'categories')",
                [self.panoptic_json],
            )
        return data

    def _parse_categories(self, data: dict) -> list[dict]:
        cats = data["categories"]
        if not cats:
            raise DatasetError(f"{self.panoptic_json} has no categories", [self.panoptic_json])
        problems, seen = [], set()
        for i, c in enumerate(cats):
            absent = [k for k in ("id", "name", "isthing") if k not in c]
            if absent:
                problems.append(f"category {i} ({c!r}) lacks {absent}")
            elif c["id"] in seen:
                problems.append(f"category id {c['id']} appears twice")
            else:
                seen.add(c["id"])
        if problems:
            raise DatasetError(
                f"{self.panoptic_json}: bad categories:" + list_paths(problems),
                [self.panoptic_json],
            )
        return [dict(c) for c in cats]

    def _parse_records(self, data: dict) -> list[dict[str, Any]]:
        images = {img.get("id"): img for img in data["images"] if isinstance(img, dict)}
        records, problems = [], []
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "file_name" not in ann or "image_id" not in ann:
                problems.append(f"annotation {i} lacks 'file_name' or 'image_id': {ann!r:.200}")
                continue
            image_id = ann["image_id"]
            img = images.get(image_id)
            if img is None or "file_name" not in img:
                problems.append(
                    f"annotation {ann['file_name']!r}: image_id {image_id!r} has no entry with a "
                    "'file_name' in 'images'"
                )
                continue
            segments = ann.get("segments_info", [])
            seg_ids = [s.get("id") for s in segments]
            unknown = sorted(
                {s.get("category_id") for s in segments} - set(self.category_id_to_contiguous),
                key=str,
            )
            if unknown:
                problems.append(f"{ann.get('file_name')}: unknown category_id(s) {unknown}")
            if len(set(seg_ids)) != len(seg_ids) or None in seg_ids or 0 in seg_ids:
                problems.append(
                    f"{ann.get('file_name')}: segment ids must be unique and non-zero, "
                    f"got {seg_ids}"
                )
            if len(segments) >= MAX_SEGMENTS:
                problems.append(
                    f"{ann.get('file_name')}: {len(segments)} segments (at most {MAX_SEGMENTS - 1})"
                )
            records.append(
                {
                    "image_id": image_id,
                    "file_name": str(self.image_root / img["file_name"]),
                    "pan_seg_file_name": str(self.panoptic_root / ann["file_name"]),
                    "segments_info": segments,
                    "height": img.get("height"),
                    "width": img.get("width"),
                }
            )
        if problems:
            raise DatasetError(
                f"{self.panoptic_json}: {len(problems)} bad annotation(s):" + list_paths(problems),
                [self.panoptic_json],
            )
        if not records:
            raise DatasetError(
                f"{self.panoptic_json} has no annotated images: the dataset is empty",
                [self.panoptic_json],
            )
        return records

    def _check_files(self, records: list[dict[str, Any]]) -> None:
        missing_images = [r["file_name"] for r in records if not os.path.isfile(r["file_name"])]
        missing_pngs = [
            r["pan_seg_file_name"] for r in records if not os.path.isfile(r["pan_seg_file_name"])
        ]
        parts = []
        if missing_images:
            parts.append(
                f"{len(missing_images)} image(s) listed in {self.panoptic_json} are missing "
                f"under {self.image_root}:" + list_paths(missing_images)
            )
        if missing_pngs:
            parts.append(
                f"{len(missing_pngs)} panoptic PNG(s) listed in {self.panoptic_json} are "
                f"missing under {self.panoptic_root}:" + list_paths(missing_pngs)
            )
        if parts:
            raise DatasetError("\n".join(parts), missing_images + missing_pngs)

    def _replace_names(self, vocab: Vocabulary, ids: list[int], isthing: list[bool]) -> Vocabulary:
        source = vocab.name or "vocabulary"
        if all(c.id is not None for c in vocab):
            by_id = {c.id: c for c in vocab}
            missing = [i for i in ids if i not in by_id]
            extra = sorted(set(by_id) - set(ids))
            if missing or extra:
                raise DatasetError(
                    f"vocabulary {source!r} does not match the categories of {self.panoptic_json}: "
                    + (f"no class for category id(s) {missing}" if missing else "")
                    + ("; " if missing and extra else "")
                    + (f"unknown category id(s) {extra}" if extra else "")
                )
            classes = [by_id[i] for i in ids]
        else:
            if len(vocab) != len(ids):
                raise DatasetError(
                    f"vocabulary {source!r} has {len(vocab)} classes but {self.panoptic_json} has "
                    f"{len(ids)} categories; give one class per category, in the JSON's order, or "
                    "prefix each line with its category id ('ID: name, synonym')"
                )
            classes = list(vocab)
        return Vocabulary(
            [", ".join(c.synonyms) for c in classes],
            isthing=isthing,
            ids=ids,
            name=vocab.name,
        )

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.records)

    def get_eval_record(self, index: int) -> dict[str, Any]:
        """``image_id``, ``file_name`` (image path), ``pan_seg_file_name`` (panoptic PNG path),
        ``segments_info`` (the JSON's, category ids not contiguous), ``height``, ``width``."""
        return dict(self.records[index])

    def decode_panoptic(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode the panoptic PNG of sample ``index``.

        Returns:
            seg: (H, W) uint16 segment-index map (k = ``segments_info[k]``, :data:`VOID` = void);
            labels: (N,) int64 contiguous class indices; iscrowd: (N,) bool.

        Raises:
            CorruptSampleError: the PNG cannot be decoded.
            DatasetError: the PNG's ids do not match ``segments_info`` (file and ids named).
        """
        record = self.records[index]
        path = record["pan_seg_file_name"]
        png = read_png_array(path)
        if png.ndim != 3 or png.shape[2] not in (3, 4):
            raise DatasetError(
                f"{path}: expected an RGB panoptic PNG (id = R + 256 G + 256^2 B), got shape "
                f"{png.shape}", [path],
            )  # fmt: skip
        ids = rgb2id(png[..., :3])
        segments = record["segments_info"]
        seg_ids = np.array([s["id"] for s in segments], dtype=np.int64)
        if len(seg_ids):
            order = np.argsort(seg_ids)
            sorted_ids = seg_ids[order]
            pos = np.minimum(np.searchsorted(sorted_ids, ids), len(seg_ids) - 1)
            hit = sorted_ids[pos] == ids
            seg = np.where(hit, order[pos], int(VOID)).astype(np.uint16)
        else:
            hit = np.zeros(ids.shape, dtype=bool)
            seg = np.full(ids.shape, VOID, dtype=np.uint16)
        stray = ~hit & (ids != 0)
        counts = np.bincount(seg[hit], minlength=len(seg_ids))
        absent = seg_ids[counts == 0]
        if stray.any() or len(absent):
            parts = []
            if stray.any():
                parts.append(
                    f"ids {np.unique(ids[stray]).tolist()[:20]} are in the PNG but not in "
                    "segments_info"
                )
            if len(absent):
                parts.append(f"ids {absent.tolist()[:20]} are in segments_info but not in the PNG")
            raise DatasetError(
                f"{path} does not match its segments_info in {self.panoptic_json}: "
                + "; ".join(parts), [path],
            )  # fmt: skip
        labels = np.array(
            [self.category_id_to_contiguous[s["category_id"]] for s in segments],
            dtype=np.int64,
        )
        iscrowd = np.array([bool(s.get("iscrowd", 0)) for s in segments], dtype=bool)
        return seg, labels, iscrowd

    def load_semantic_gt(self, index: int, ignore_index: int = 255) -> np.ndarray:
        """(H, W) int64 contiguous class index per pixel (crowd included), ``ignore_index`` on void
        — the semantic ground truth Mask2Former derives from panoptic annotations."""
        seg, labels, _ = self.decode_panoptic(index)
        lut = np.full(MAX_SEGMENTS + 1, ignore_index, dtype=np.int64)
        lut[: len(labels)] = labels
        return lut[seg]

    def verify(self) -> None:
        """Decode every panoptic PNG and check it against its ``segments_info`` and image size.

        Raises:
            DatasetError: listing every mismatching or unreadable PNG.
        """
        problems, paths = [], []
        for i, record in enumerate(self.records):
            try:
                seg, _, _ = self.decode_panoptic(i)
            except DatasetError as e:
                problems.append(str(e))
                paths.extend(e.paths)
                continue
            h, w = record.get("height"), record.get("width")
            if h is not None and w is not None and seg.shape != (h, w):
                problems.append(
                    f"{record['pan_seg_file_name']}: size {seg.shape} but the image is listed "
                    f"as {(h, w)}"
                )
                paths.append(record["pan_seg_file_name"])
        if problems:
            raise DatasetError(
                f"{len(problems)} panoptic PNG(s) do not match {self.panoptic_json}:"
                + list_paths(problems),
                paths,
            )

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        record = self.records[index]
        image = read_image(record["file_name"])
        if not self.with_targets:
            return image, None, np.zeros(0, np.int64), np.zeros(0, bool)
        seg, labels, iscrowd = self.decode_panoptic(index)
        if seg.shape != image.shape[:2]:
            raise DatasetError(
                f"{record['pan_seg_file_name']} is {seg.shape[1]}x{seg.shape[0]} but its image "
                f"{record['file_name']} is {image.shape[1]}x{image.shape[0]}",
                [record["pan_seg_file_name"], record["file_name"]],
            )
        return image, seg, labels, iscrowd
