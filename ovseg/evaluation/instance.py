"""Instance segmentation mask AP through pycocotools' ``COCOeval(iouType="segm")``.

Detections are stored per image as compressed RLE (a few hundred bytes per mask), so memory grows
with the number of detections, not with the image size. ``evaluate`` gathers them from all ranks
and runs pycocotools unchanged; its 12 ``stats`` are the official numbers by construction.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovseg.evaluation.distributed import gather_per_image
from ovseg.evaluation.errors import EvaluationError
from ovseg.utils.masks import encode_mask

STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


def _to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """Polygons, uncompressed or compressed RLE -> compressed RLE (as ``COCO.annToRLE``)."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def load_coco_gt(gt: str | Path | Mapping[str, Any] | COCO) -> COCO:
    """A pycocotools ``COCO`` from a path, a dict or a ``COCO``; quietly (no prints).

    Ground-truth annotations without ``area`` get the mask pixel count and without ``iscrowd``
    get 0 (COCOeval needs both). The input dict is not modified.

    Raises:
        EvaluationError: a missing or malformed file.
    """
    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        data = _read_json(path, "ground-truth json")
        where = str(path)
    else:
        data = copy.deepcopy(dict(gt))
        where = "ground truth"
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise EvaluationError(f"{where}: a COCO instances json needs {key!r}")
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            h, w = sizes[ann["image_id"]]
            ann["area"] = float(mask_utils.area(_to_rle(ann["segmentation"], h, w)))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class InstanceEvaluator:
    """Streaming COCO mask AP.

    Args:
        gt: the COCO instances ground truth (path, dict or ``COCO``); its images and categories
            define the evaluation (``imgIds`` = all images, ``catIds`` = all categories).
        max_dets: COCOeval's ``maxDets`` ([1, 10, 100]).

    ``process`` is called once per image on each rank; ``evaluate`` gathers the detections of
    all ranks, so sharded evaluation equals one process (each image on exactly one rank).
    """

    def __init__(
        self,
        gt: str | Path | Mapping[str, Any] | COCO,
        max_dets: Sequence[int] = (1, 10, 100),
    ) -> None:
        self.coco_gt = load_coco_gt(gt)
        self.max_dets = list(max_dets)
        self.reset()

    def reset(self) -> None:
        """Forget every processed image."""
        self.detections: dict[Any, list[dict[str, Any]]] = {}

    def process(self, image_id: Any, detections: Sequence[Mapping[str, Any]]) -> None:
        """Accumulate the detections of one image.

        Args:
            image_id: a ground-truth image id.
            detections: ``{"category_id", "segmentation", "score"}`` each, with ``segmentation``
                a COCO RLE (compressed or not), COCO polygons or an (H, W) bool mask (array or
                tensor); an optional ``bbox`` is
                kept (pycocotools then takes detection areas from the boxes, as it always does).

        Raises:
            EvaluationError: unknown image or category, an image processed twice, a mask whose
                size differs from the image's, a missing or non-finite (NaN, inf) score.
        """
        if image_id not in self.coco_gt.imgs:
            raise EvaluationError(
                f"image_id {image_id!r} is not in the ground truth "
                f"({len(self.coco_gt.imgs)} images)"
            )
        if image_id in self.detections:
            raise EvaluationError(f"image {image_id} was processed twice")
        info = self.coco_gt.imgs[image_id]
        hw = [info["height"], info["width"]]
        out = []
        for k, det in enumerate(detections):
            cid = det.get("category_id")
            if cid not in self.coco_gt.cats:
                raise EvaluationError(
                    f"detection {k} of image {image_id} has category_id {cid!r}, which is not "
                    f"among the ground-truth categories {sorted(self.coco_gt.cats)}"
                )
            seg = det["segmentation"]
            if isinstance(seg, (Mapping, list)):
                seg = dict(_to_rle(seg if isinstance(seg, list) else dict(seg), *hw))
                if isinstance(seg["counts"], bytes):
                    seg["counts"] = seg["counts"].decode("ascii")
                seg["size"] = [int(v) for v in seg["size"]]
            else:
                seg = encode_mask(seg)
            if list(seg["size"]) != hw:
                raise EvaluationError(
                    f"image size mismatch in image {image_id}: detection {k} mask is "
                    f"{seg['size'][0]}x{seg['size'][1]} but the image is {hw[0]}x{hw[1]} (HxW)"
                )
            try:
                score = float(det["score"])
            except (KeyError, TypeError, ValueError):
                raise EvaluationError(
                    f"detection {k} of image {image_id} has no numeric score ({det.get('score')!r})"
                ) from None
            if not math.isfinite(score):
                # COCOeval sorts by score: a NaN would silently scramble the ranking.
                raise EvaluationError(
                    f"detection {k} of image {image_id} has score {score}: scores must be finite"
                )
            d = {"image_id": image_id, "category_id": cid, "segmentation": seg, "score": score}
            if "bbox" in det:
                d["bbox"] = [float(v) for v in det["bbox"]]
            out.append(d)
        self.detections[image_id] = out

    def process_masks(
        self,
        image_id: Any,
        masks: np.ndarray | torch.Tensor,
        scores: Sequence[float] | np.ndarray | torch.Tensor,
        category_ids: Sequence[int] | np.ndarray | torch.Tensor,
    ) -> None:
        """Accumulate one image from dense outputs.

        Args:
            masks: (N, H, W) bool; scores: (N,) float; category_ids: (N,) int dataset ids.
        """
        if isinstance(masks, torch.Tensor):
            masks = masks.detach().cpu().numpy()
        scores = torch.as_tensor(scores).tolist()
        category_ids = torch.as_tensor(category_ids).tolist()
        dets = [
            {"category_id": int(c), "segmentation": encode_mask(m), "score": float(s)}
            for m, s, c in zip(masks, scores, category_ids)
        ]
        self.process(image_id, dets)

    def evaluate(self) -> dict[str, Any]:
        """COCOeval over all processed images of all ranks.

        Returns:
            ``stats``: COCOeval's 12 numbers (fractions; -1 where a bucket has no ground truth),
            ``stats_named``: the same by name, ``per_category``: {category id: {AP, AP50, AR100}}
            (area all, maxDets 100; -1 without ground truth), ``num_images``,
            ``num_detections``. An empty detection set gives 0 (or -1) everywhere.
        """
        merged: dict[Any, list[dict[str, Any]]] = gather_per_image(self.detections)
        # Ground-truth image order: the same list in one process and sharded.
        results = [d for i in self.coco_gt.imgs if i in merged for d in merged[i]]
        coco_dt = self._load_results(copy.deepcopy(results))
        evaluator = COCOeval(self.coco_gt, coco_dt, iouType="segm")
        evaluator.params.maxDets = self.max_dets
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [float(s) for s in evaluator.stats]
        return {
            "stats": stats,
            "stats_named": dict(zip(STAT_NAMES, stats)),
            "per_category": _per_category(evaluator),
            "num_images": len(merged),
            "num_detections": len(results),
        }

    def _load_results(self, results: list[dict[str, Any]]) -> COCO:
        if results:
            with contextlib.redirect_stdout(io.StringIO()):
                return self.coco_gt.loadRes(results)
        # pycocotools' loadRes indexes results[0]: build the empty result set by hand.
        coco_dt = COCO()
        coco_dt.dataset["images"] = list(self.coco_gt.dataset["images"])
        coco_dt.dataset["categories"] = copy.deepcopy(self.coco_gt.dataset["categories"])
        coco_dt.dataset["annotations"] = []
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt.createIndex()
        return coco_dt


def _per_category(evaluator: COCOeval) -> dict[int, dict[str, float]]:
    precision = evaluator.eval["precision"]  # (T, R, K, A, M)
    recall = evaluator.eval["recall"]  # (T, K, A, M)
    m = len(evaluator.params.maxDets) - 1
    t50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))

    def mean_valid(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(np.mean(x)) if x.size else -1.0

    out = {}
    for k, cid in enumerate(evaluator.params.catIds):
        out[int(cid)] = {
            "AP": mean_valid(precision[:, :, k, 0, m]),
            "AP50": mean_valid(precision[t50, :, k, 0, m]),
            "AR100": mean_valid(recall[:, k, 0, m]),
        }
    return out


def evaluate_instance_files(gt_json: str | Path, pred_json: str | Path) -> dict[str, Any]:
    """Evaluate a COCO results file (list of ``{image_id, category_id, segmentation, score}``).

    Raises:
        EvaluationError: missing or malformed files, detections for images or categories that
            are not in the ground truth.
    """
    evaluator = InstanceEvaluator(gt_json)
    path = Path(pred_json)
    dets = _read_json(path, "prediction json")
    if isinstance(dets, dict) and "annotations" in dets:
        dets = dets["annotations"]
    if not isinstance(dets, list):
        raise EvaluationError(f"{path}: expected a list of detections")
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for k, d in enumerate(dets):
        missing = [f for f in ("image_id", "category_id", "segmentation", "score") if f not in d]
        if missing:
            raise EvaluationError(f"{path}: detection {k} has no {', '.join(missing)}")
        by_image.setdefault(d["image_id"], []).append(d)
    unknown = [i for i in by_image if i not in evaluator.coco_gt.imgs]
    if unknown:
        raise EvaluationError(
            f"{path}: detections for image id(s) {', '.join(map(str, unknown[:10]))}"
            f"{' ...' if len(unknown) > 10 else ''} that are not in {gt_json}"
        )
    for image_id, image_dets in by_image.items():
        evaluator.process(image_id, image_dets)
    return evaluator.evaluate()


def _read_json(path: Path, what: str) -> Any:
    """The parsed JSON at ``path``; ``what`` names the file in the error."""
    if not path.is_file():
        raise EvaluationError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{what} {path} is not valid JSON: {e}") from None
