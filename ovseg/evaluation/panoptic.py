"""Panoptic quality (PQ = SQ x RQ) with the conventions of cocodataset/panopticapi ``pq_compute``.

Per image, a ground-truth segment (``iscrowd`` 0) and a predicted segment of the same category
match when IoU > 0.5, where the part of the prediction lying on ground-truth VOID (id 0) is taken
out of the union. Unmatched ground truth is a false negative; an unmatched prediction is a false
positive unless more than half of it lies on VOID plus the crowd region of its own category.
TP / FP / FN and the sum of matched IoUs accumulate per category over the whole dataset; the All /
Things / Stuff averages are unweighted means over the categories with TP + FP + FN > 0.

Panoptic PNGs store segment ids as RGB: id = R + 256 G + 256^2 B (:func:`rgb2id`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ovseg.evaluation.errors import EvaluationError
from ovseg.utils.dist import all_gather_object, all_reduce_sum
from ovseg.utils.panoptic_ids import id2rgb, rgb2id  # noqa: F401 (re-exported)

VOID = 0


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Read a COCO-panoptic PNG as (H, W) int64 segment ids.

    Raises:
        EvaluationError: the file is missing or is not an RGB(A) image.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"panoptic PNG not found: {path}")
    with Image.open(path) as img:
        arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise EvaluationError(
            f"{path}: expected an RGB panoptic PNG (id = R + 256 G + 256^2 B), got an image of "
            f"shape {arr.shape}"
        )
    return rgb2id(arr)


def _as_ids(x: np.ndarray | torch.Tensor, what: str, where: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise EvaluationError(
            f"{what}{where} must be an (H, W) integer segment-id map, got shape {x.shape} "
            f"dtype {x.dtype} (decode RGB PNGs with rgb2id)"
        )
    if x.size and x.min() < 0:
        raise EvaluationError(f"{what}{where} has negative segment ids ({int(x.min())})")
    return x.astype(np.int64, copy=False)


class PanopticEvaluator:
    """Streaming PQ / SQ / RQ, equal to panopticapi's ``pq_compute``.

    Args:
        categories: the ground truth's category list, ``{"id", "isthing", "name"}`` each (COCO
            panoptic json ``categories``); averages run over this list.

    ``process`` is called once per image on each rank; ``evaluate`` sums the per-category counts
    of all ranks when ``torch.distributed`` is initialised. Shard without padding so each image
    is processed once; given ``image_id``\\ s, a duplicate is reported.
    """

    def __init__(self, categories: Sequence[Mapping[str, Any]]) -> None:
        if not categories:
            raise EvaluationError("categories is empty: pass the ground truth's category list")
        self.categories = [dict(c) for c in categories]
        self.cat_index: dict[int, int] = {}
        for i, c in enumerate(self.categories):
            for key in ("id", "isthing"):
                if key not in c:
                    raise EvaluationError(f"category {i} ({c!r}) has no {key!r}")
            if int(c["id"]) in self.cat_index:
                raise EvaluationError(f"category id {c['id']} is listed twice")
            self.cat_index[int(c["id"])] = i
        self.isthing = np.array([bool(c["isthing"]) for c in self.categories])
        self.reset()

    def reset(self) -> None:
        """Forget every processed image."""
        n = len(self.categories)
        self.tp = np.zeros(n, dtype=np.int64)
        self.fp = np.zeros(n, dtype=np.int64)
        self.fn = np.zeros(n, dtype=np.int64)
        self.iou = np.zeros(n, dtype=np.float64)
        self.num_images = 0
        self.image_ids: list[Any] = []
        self._seen: set[Any] = set()

    def _category(self, cid: Any, what: str, where: str) -> int:
        try:
            return self.cat_index[int(cid)]
        except (KeyError, TypeError, ValueError):
            raise EvaluationError(
                f"{what}{where} has category_id {cid!r}, which is not among the ground-truth "
                f"categories ({len(self.cat_index)} ids: {_short(sorted(self.cat_index))})"
            ) from None

    def process(
        self,
        gt_png_ids: np.ndarray | torch.Tensor,
        gt_segments: Sequence[Mapping[str, Any]],
        pred_png_ids: np.ndarray | torch.Tensor,
        pred_segments: Sequence[Mapping[str, Any]],
        image_id: Any = None,
    ) -> None:
        """Accumulate one image.

        Args:
            gt_png_ids: (H, W) int ground-truth segment ids; 0 is VOID.
            gt_segments: ``{"id", "category_id", "iscrowd", "area"}`` per ground-truth segment;
                ``area`` (panopticapi takes the JSON's) defaults to the PNG pixel count, ``iscrowd``
                to 0.
            pred_png_ids: (H, W) int predicted segment ids; 0 = no segment.
            pred_segments: ``{"id", "category_id"}`` per predicted segment; every non-zero id in
                the PNG must be listed and every listed id must occur in the PNG.
            image_id: used in error messages and to detect an image processed twice.

        Raises:
            EvaluationError: size mismatch, PNG/segment list disagreement, unknown category.
        """
        where = f" of image {image_id}" if image_id is not None else ""
        if image_id is not None and image_id in self._seen:
            raise EvaluationError(f"image {image_id} was processed twice")
        gt = _as_ids(gt_png_ids, "ground-truth segment map", where)
        pred = _as_ids(pred_png_ids, "predicted segment map", where)
        if gt.shape != pred.shape:
            raise EvaluationError(
                f"image size mismatch{where}: prediction is {pred.shape[0]}x{pred.shape[1]} but "
                f"ground truth is {gt.shape[0]}x{gt.shape[1]} (HxW)"
            )
        gt_u, gt_inv = np.unique(gt, return_inverse=True)
        pr_u, pr_inv = np.unique(pred, return_inverse=True)
        joint = np.bincount(
            gt_inv.reshape(-1) * len(pr_u) + pr_inv.reshape(-1), minlength=len(gt_u) * len(pr_u)
        ).reshape(len(gt_u), len(pr_u))
        pr_area = dict(zip(pr_u.tolist(), joint.sum(axis=0).tolist()))
        gt_area = dict(zip(gt_u.tolist(), joint.sum(axis=1).tolist()))

        gt_segs: dict[int, tuple[int, bool, float]] = {}  # id -> (cat index, iscrowd, area)
        for s in gt_segments:
            sid = int(s["id"])
            if sid in gt_segs:
                raise EvaluationError(f"ground-truth segment id {sid} is listed twice{where}")
            area = s.get("area")
            area = gt_area.get(sid, 0) if area is None else area
            cat = self._category(s["category_id"], f"ground-truth segment {sid}", where)
            gt_segs[sid] = (cat, bool(s.get("iscrowd", 0)), area)

        pred_segs: dict[int, int] = {}  # id -> cat index
        for s in pred_segments:
            sid = int(s["id"])
            if sid in pred_segs:
                raise EvaluationError(f"predicted segment id {sid} is listed twice{where}")
            pred_segs[sid] = self._category(s["category_id"], f"predicted segment {sid}", where)
        in_png = {i for i in pr_u.tolist() if i != VOID}
        if in_png - set(pred_segs):
            raise EvaluationError(
                f"predicted PNG{where} has segment id(s) {_short(sorted(in_png - set(pred_segs)))} "
                "with no entry in segments_info"
            )
        if set(pred_segs) - in_png:
            raise EvaluationError(
                f"segments_info{where} lists segment id(s) "
                f"{_short(sorted(set(pred_segs) - in_png))} that do not occur in the predicted PNG"
            )

        void_col = int(np.searchsorted(gt_u, VOID))
        has_void = void_col < len(gt_u) and gt_u[void_col] == VOID
        void_overlap = dict(zip(pr_u.tolist(), joint[void_col].tolist())) if has_void else {}

        # Matching, in panopticapi's order (gt id major, pred id minor) so iou sums agree.
        gt_matched: set[int] = set()
        pred_matched: set[int] = set()
        gi_nz, pi_nz = np.nonzero(joint)
        for gi, pi in zip(gi_nz.tolist(), pi_nz.tolist()):
            g_id, p_id = int(gt_u[gi]), int(pr_u[pi])
            if g_id not in gt_segs or p_id not in pred_segs:
                continue
            g_cat, g_crowd, g_area = gt_segs[g_id]
            if g_crowd or g_cat != pred_segs[p_id]:
                continue
            inter = int(joint[gi, pi])
            union = pr_area[p_id] + g_area - inter - void_overlap.get(p_id, 0)
            iou = inter / union
            if iou > 0.5:
                self.tp[g_cat] += 1
                self.iou[g_cat] += iou
                gt_matched.add(g_id)
                pred_matched.add(p_id)

        crowd_by_cat: dict[int, int] = {}
        for g_id, (g_cat, g_crowd, _) in gt_segs.items():
            if g_id in gt_matched:
                continue
            if g_crowd:
                crowd_by_cat[g_cat] = g_id  # panopticapi keeps the last crowd segment per class
                continue
            self.fn[g_cat] += 1

        gt_row = {g: i for i, g in enumerate(gt_u.tolist())}
        pr_col = {p: i for i, p in enumerate(pr_u.tolist())}
        for p_id, p_cat in pred_segs.items():
            if p_id in pred_matched:
                continue
            ignored = void_overlap.get(p_id, 0)
            crowd = crowd_by_cat.get(p_cat)
            if crowd is not None and crowd in gt_row:
                ignored += int(joint[gt_row[crowd], pr_col[p_id]])
            if ignored / pr_area[p_id] > 0.5:
                continue
            self.fp[p_cat] += 1

        self.num_images += 1
        if image_id is not None:
            self._seen.add(image_id)
            self.image_ids.append(image_id)

    def evaluate(self) -> dict[str, Any]:
        """PQ / SQ / RQ over everything processed on all ranks (the same result on every rank).

        Returns:
            ``summary``: {All, Things, Stuff: {pq, sq, rq, n}} (fractions; n = categories
            averaged; NaN when n = 0); ``per_class``: {category id (int): {pq, sq, rq, tp, fp, fn}}
            for every category (0.0 where TP + FP + FN = 0, as panopticapi reports);
            ``num_images``.

        Raises:
            EvaluationError: an image id was processed on more than one rank.
        """
        tp, fp, fn = (all_reduce_sum(a) for a in (self.tp, self.fp, self.fn))
        iou = all_reduce_sum(self.iou)
        num_images = int(all_reduce_sum(np.array([self.num_images], dtype=np.int64))[0])
        _check_unique(all_gather_object(self.image_ids))

        per_class: dict[int, dict[str, Any]] = {}
        pq = np.zeros(len(tp))
        sq = np.zeros(len(tp))
        rq = np.zeros(len(tp))
        counted = (tp + fp + fn) > 0
        for i, c in enumerate(self.categories):
            if counted[i]:
                denom = tp[i] + 0.5 * fp[i] + 0.5 * fn[i]
                pq[i] = iou[i] / denom
                sq[i] = iou[i] / tp[i] if tp[i] else 0.0
                rq[i] = tp[i] / denom
            per_class[int(c["id"])] = {
                "pq": float(pq[i]),
                "sq": float(sq[i]),
                "rq": float(rq[i]),
                "tp": int(tp[i]),
                "fp": int(fp[i]),
                "fn": int(fn[i]),
            }
        summary = {}
        for name, sel in (("All", None), ("Things", True), ("Stuff", False)):
            mask = counted if sel is None else counted & (self.isthing == sel)
            n = int(mask.sum())
            # panopticapi sums pq / n in category order; so do we (bit-identical means).
            summary[name] = {
                "pq": _mean(pq, mask),
                "sq": _mean(sq, mask),
                "rq": _mean(rq, mask),
                "n": n,
            }
        return {"summary": summary, "per_class": per_class, "num_images": num_images}


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    n = int(mask.sum())
    if n == 0:
        return float("nan")
    total = 0.0
    for v in values[mask].tolist():
        total += v
    return total / n


def _short(items: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _check_unique(per_rank: list[list[Any]]) -> None:
    seen: dict[Any, int] = {}
    for rank, ids in enumerate(per_rank):
        for i in ids:
            if i in seen and seen[i] != rank:
                raise EvaluationError(
                    f"image {i} was evaluated on ranks {seen[i]} and {rank}: shard the set without "
                    "padding (e.g. indices[rank::world_size]) so each image is evaluated once"
                )
            seen[i] = rank


# ---------------------------------------------------------------------------------- files
def _load_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{what} {path} is not valid JSON: {e}") from None


def evaluate_panoptic_files(
    gt_json: str | Path,
    gt_dir: str | Path,
    pred_json: str | Path,
    pred_dir: str | Path,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict[str, Any]:
    """Evaluate COCO-panoptic predictions on disk, one image at a time.

    Args:
        gt_json / gt_dir: COCO panoptic ground truth (json with ``annotations`` and
            ``categories``) and the folder of its PNGs.
        pred_json / pred_dir: predictions in the same format (``segments_info`` needs only
            ``id`` and ``category_id``) and their PNG folder.
        progress: optional wrapper around the image iterator (e.g. ``tqdm``).

    An empty prediction set (no annotations at all) evaluates every image as having no segments:
    all ground truth is FN and PQ is 0 for every class present. Otherwise every ground-truth
    image needs exactly one prediction.

    Raises:
        EvaluationError: a missing file or folder, or images that do not pair up (listed).
    """
    for d, what in ((gt_dir, "ground-truth PNG folder"), (pred_dir, "prediction PNG folder")):
        if not Path(d).is_dir():
            raise EvaluationError(f"{what} not found: {d}")
    gt = _load_json(gt_json, "ground-truth json")
    pr = _load_json(pred_json, "prediction json")
    if not isinstance(gt, dict) or "annotations" not in gt or "categories" not in gt:
        raise EvaluationError(
            f"{gt_json}: expected a COCO panoptic json with 'annotations' and 'categories'"
        )
    pred_anns = pr.get("annotations") if isinstance(pr, dict) else pr
    if not isinstance(pred_anns, list):
        raise EvaluationError(f"{pred_json}: expected {{'annotations': [...]}} or a list")
    try:
        evaluator = PanopticEvaluator(gt["categories"])
    except EvaluationError as e:
        raise EvaluationError(f"{gt_json}: {e}") from None
    for path, anns in ((gt_json, gt["annotations"]), (pred_json, pred_anns)):
        for k, a in enumerate(anns):
            lacking = [f for f in ("image_id", "file_name", "segments_info") if f not in a]
            if lacking:
                raise EvaluationError(f"{path}: annotation {k} has no {', '.join(lacking)}")
    gt_by_id = {a["image_id"]: a for a in gt["annotations"]}
    pred_by_id: dict[Any, dict] = {}
    for a in pred_anns:
        if a["image_id"] in pred_by_id:
            raise EvaluationError(f"{pred_json}: image {a['image_id']} has two predictions")
        pred_by_id[a["image_id"]] = a
    empty = not pred_by_id
    if not empty:
        missing = [i for i in gt_by_id if i not in pred_by_id]
        extra = [i for i in pred_by_id if i not in gt_by_id]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"no prediction for image(s) {_short(missing)}")
            if extra:
                parts.append(f"prediction(s) for image(s) {_short(extra)} not in the ground truth")
            raise EvaluationError(f"predictions do not pair up with {gt_json}: " + "; ".join(parts))
    items = list(gt_by_id.items())
    for image_id, g in progress(items) if progress else items:
        gt_ids = read_panoptic_png(Path(gt_dir) / g["file_name"])
        if empty:
            pred_ids, pred_segments = np.zeros_like(gt_ids), []
        else:
            p = pred_by_id[image_id]
            pred_ids = read_panoptic_png(Path(pred_dir) / p["file_name"])
            pred_segments = p["segments_info"]
        evaluator.process(gt_ids, g["segments_info"], pred_ids, pred_segments, image_id=image_id)
    return evaluator.evaluate()
