"""Cityscapes instance-level AP as the official ``cityscapesscripts`` evaluator computes it
(``evaluation/evalInstanceLevelSemanticLabeling.py``, the number FC-CLIP reports via detectron2's
``CityscapesInstanceEvaluator``), streaming and distributed-aware.

The official rules differ from COCO mask AP in ways that move the number:

* ground truth comes from ``gtFine_instanceIds`` PNGs (``label id * 1000 + k``; a bare label id
  is a *group* region, e.g. 26 = a crowd of cars); the 8 classes with instances that are not
  ignored in evaluation are scored (person, rider, car, truck, bus, train, motorcycle, bicycle);
* an instance smaller than 100 pixels and every group is left out of the ground truth, and a
  prediction is matched when its IoU with an instance of its class is *above* the threshold
  (0.5, 0.55, ..., 0.95; the highest-scoring match is the true positive, others false positives);
* an unmatched prediction is a false positive only if at most ``threshold`` of its pixels lie on
  void labels, groups or too-small instances; otherwise it is ignored;
* per class and threshold, AP integrates the precision/recall curve at every distinct score
  (step-wise, with an artificial point at precision 1, recall 0); a class without ground truth is
  NaN and left out of the mean; a class with ground truth but no prediction is 0.

Per image only the pixel counts and the prediction/instance intersections are kept (a few numbers
per prediction), so memory does not grow with the image size; ``evaluate`` gathers them from all
ranks. The output uses the official JSON names: ``averages`` {``allAp``, ``allAp50%``,
``classes`` {name: {``ap``, ``ap50%``}}}, ``overlaps``, ``minRegionSizes``, ``instLabels`` and
``resultApMatrix`` (1 x classes x overlaps), fractions in [0, 1], null for NaN.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ovseg.data.catalog.cityscapes_labels import INSTANCE_LABELS, VOID_LABEL_IDS
from ovseg.evaluation.distributed import gather_per_image
from ovseg.evaluation.errors import EvaluationError

# cityscapesscripts' labels.py (one home: the catalog): label id -> name of the evaluated classes
# with instances, and the label ids whose pixels are void in evaluation (ignoreInEval).
OVERLAPS = np.arange(0.5, 1.0, 0.05)  # the official thresholds, float values included
MIN_REGION_SIZE = 100


@dataclass
class _ImageStats:
    """What one image contributes: its scored ground truth and its predictions' overlaps.

    Ground-truth segments are every instance *and group* region of the 8 classes (groups and small
    instances still turn predictions on them into ignored ones). ``pairs`` lists each
    (prediction, segment of the same class, intersection) with a non-zero intersection.
    """

    gt_label: np.ndarray  # (G,) label id
    gt_is_group: np.ndarray  # (G,) bool: value < 1000
    gt_pixels: np.ndarray  # (G,) int64
    pred_label: np.ndarray  # (P,) label id
    pred_score: np.ndarray  # (P,) float64
    pred_pixels: np.ndarray  # (P,) int64
    pred_void: np.ndarray  # (P,) int64 pixels on void labels
    pair_pred: np.ndarray  # (M,) prediction index
    pair_gt: np.ndarray  # (M,) segment index
    pair_inter: np.ndarray  # (M,) int64


class CityscapesInstanceEvaluator:
    """Streaming official Cityscapes instance AP.

    Args:
        min_region_size: instances smaller than this many pixels are not scored (100).

    ``process`` is called once per image (on any rank), ``evaluate`` combines all ranks.
    """

    def __init__(self, min_region_size: int = MIN_REGION_SIZE) -> None:
        self.min_region_size = int(min_region_size)
        self.reset()

    def reset(self) -> None:
        """Forget every processed image."""
        self.images: dict[Any, _ImageStats] = {}

    def process(
        self,
        image_id: Any,
        gt_instance_ids: np.ndarray,
        masks: np.ndarray | torch.Tensor,
        label_ids: Sequence[int] | np.ndarray | torch.Tensor,
        scores: Sequence[float] | np.ndarray | torch.Tensor,
    ) -> None:
        """Accumulate one image.

        Args:
            image_id: any hashable, unique per image.
            gt_instance_ids: (H, W) the ``gtFine_instanceIds`` values.
            masks: (N, H, W) bool predicted instance masks (any non-zero value is the mask).
            label_ids: (N,) Cityscapes label ids (26 = car), not train ids; predictions of
                classes that are not scored are dropped, as the official tool does.
            scores: (N,) confidences.

        Raises:
            EvaluationError: an image processed twice, masks whose size differs from the ground
                truth's, or lengths that disagree.
        """
        if image_id in self.images:
            raise EvaluationError(f"image {image_id} was processed twice")
        gt = np.asarray(gt_instance_ids).astype(np.int64, copy=False)
        if gt.ndim != 2:
            raise EvaluationError(f"image {image_id}: instanceIds must be (H, W), got {gt.shape}")
        masks_t = torch.as_tensor(masks)
        labels = torch.as_tensor(label_ids).reshape(-1).long().cpu().numpy()
        conf = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).cpu().numpy()
        if masks_t.ndim != 3 or len(masks_t) != len(labels) or len(labels) != len(conf):
            raise EvaluationError(
                f"image {image_id}: expected (N, H, W) masks with N labels and N scores; got "
                f"masks {tuple(masks_t.shape)}, {len(labels)} labels, {len(conf)} scores"
            )
        if len(masks_t) and tuple(masks_t.shape[1:]) != gt.shape:
            raise EvaluationError(
                f"image size mismatch in image {image_id}: prediction masks are "
                f"{masks_t.shape[1]}x{masks_t.shape[2]} but the ground truth is "
                f"{gt.shape[0]}x{gt.shape[1]} (HxW)"
            )

        values, inverse = _segments(gt)
        seg_pixels = np.bincount(inverse, minlength=len(values)).astype(np.int64)
        seg_label = np.where(values >= 1000, values // 1000, values)
        scored_seg = np.isin(seg_label, list(INSTANCE_LABELS))
        void_seg = np.isin(values, VOID_LABEL_IDS)

        sel = np.flatnonzero(np.isin(labels, list(INSTANCE_LABELS)))
        flat = masks_t.reshape(len(masks_t), gt.size)
        if len(sel) < len(masks_t):
            flat = flat[torch.as_tensor(sel, dtype=torch.long)]
        flat = flat if flat.dtype == torch.bool else flat != 0
        # intersections of every prediction with every segment: one bincount over masked pixels
        k = len(values)
        pred_idx, pix = (t.cpu().numpy() for t in flat.nonzero(as_tuple=True))
        inter = np.bincount(pred_idx * k + inverse[pix], minlength=len(sel) * k).reshape(-1, k)
        pixels = inter.sum(1)  # every pixel lies in exactly one segment
        nonempty = pixels > 0  # empty masks are skipped, as the official tool does
        sel, inter, pixels = sel[nonempty], inter[nonempty], pixels[nonempty]

        gt_index = np.flatnonzero(scored_seg)  # segment -> scored segment position
        position = np.full(k, -1)
        position[gt_index] = np.arange(len(gt_index))
        pred_label = labels[sel]
        same = (inter[:, gt_index] > 0) & (pred_label[:, None] == seg_label[gt_index][None, :])
        pair_pred, pair_col = np.nonzero(same)
        self.images[image_id] = _ImageStats(
            gt_label=seg_label[gt_index],
            gt_is_group=values[gt_index] < 1000,
            gt_pixels=seg_pixels[gt_index],
            pred_label=pred_label,
            pred_score=conf[sel],
            pred_pixels=pixels,
            pred_void=inter[:, void_seg].sum(1).astype(np.int64),
            pair_pred=pair_pred,
            pair_gt=position[gt_index[pair_col]],
            pair_inter=inter[pair_pred, gt_index[pair_col]].astype(np.int64),
        )

    def evaluate(self) -> dict[str, Any]:
        """The official averages over all processed images of all ranks.

        Returns:
            ``averages`` (``allAp``, ``allAp50%``, per-class ``ap`` / ``ap50%``), ``overlaps``,
            ``minRegionSizes``, ``instLabels``, ``resultApMatrix`` (1 x 8 x 10), ``num_images``.
            Without any ground truth every number is NaN; classes with ground truth but no
            prediction score 0.
        """
        merged: dict[Any, _ImageStats] = gather_per_image(self.images)
        images = list(merged.values())
        labels = list(INSTANCE_LABELS)
        ap = np.zeros((1, len(labels), len(OVERLAPS)))
        for li, label in enumerate(labels):
            for oi, threshold in enumerate(OVERLAPS):
                ap[0, li, oi] = self._class_ap(images, label, float(threshold))
        o50 = np.isclose(OVERLAPS, 0.5)
        averages: dict[str, Any] = {
            "allAp": _nanmean(ap[0]),
            "allAp50%": _nanmean(ap[0][:, o50]),
            "classes": {
                INSTANCE_LABELS[label]: {
                    "ap": float(np.average(ap[0, li])),
                    "ap50%": float(np.average(ap[0, li, o50])),
                }
                for li, label in enumerate(labels)
            },
        }
        return {
            "averages": averages,
            "overlaps": OVERLAPS.tolist(),
            "minRegionSizes": [self.min_region_size],
            "instLabels": [INSTANCE_LABELS[label] for label in labels],
            "resultApMatrix": ap.tolist(),
            "num_images": len(merged),
        }

    def _class_ap(self, images: Sequence[_ImageStats], label: int, threshold: float) -> float:
        """AP of one class at one IoU threshold (``evaluateMatches`` of cityscapesscripts)."""
        y_true: list[np.ndarray] = []
        y_score: list[np.ndarray] = []
        hard_fns = 0
        have_gt = have_pred = False
        for im in images:
            preds = np.flatnonzero(im.pred_label == label)
            gt_cls = im.gt_label == label
            scored = gt_cls & ~im.gt_is_group & (im.gt_pixels >= self.min_region_size)
            have_gt |= bool(scored.any())
            have_pred |= len(preds) > 0
            if not len(preds):
                hard_fns += int(scored.sum())
                continue
            pp, pg, pi = im.pair_pred, im.pair_gt, im.pair_inter
            in_class = im.pred_label[pp] == label
            pp, pg, pi = pp[in_class], pg[in_class], pi[in_class]
            iou = pi / (im.gt_pixels[pg] + im.pred_pixels[pp] - pi)
            hit = iou > threshold
            # Scored instances: the best-scoring matching prediction is a true positive, every
            # other matching prediction a false positive with its own score.
            on_scored = hit & scored[pg]
            matched_gt = np.unique(pg[on_scored])
            hard_fns += int(scored.sum()) - len(matched_gt)
            scores = im.pred_score[pp[on_scored]]
            best = np.full(len(im.gt_pixels), -np.inf)
            np.maximum.at(best, pg[on_scored], scores)
            y_true.append(np.ones(len(matched_gt)))
            y_score.append(best[matched_gt])
            # Every matching prediction except the one best score per instance is a duplicate.
            dup = np.ones(len(scores), dtype=bool)
            for g in matched_gt:  # few instances per image and class
                idx = np.flatnonzero(pg[on_scored] == g)
                dup[idx[np.argmax(scores[idx])]] = False
            y_true.append(np.zeros(int(dup.sum())))
            y_score.append(scores[dup])
            # Predictions matching no segment of the class (groups and small ones included) are
            # false positives unless mostly on void, group or too-small ground truth.
            found = np.zeros(len(im.pred_label), dtype=bool)
            found[pp[hit]] = True
            ignored_gt = im.gt_is_group.astype(np.int64) + (
                im.gt_pixels < self.min_region_size
            ).astype(np.int64)
            ignore = im.pred_void.copy()
            np.add.at(ignore, pp, pi * ignored_gt[pg])
            fp = preds[~found[preds]]
            fp = fp[ignore[fp] / im.pred_pixels[fp] <= threshold]
            y_true.append(np.zeros(len(fp)))
            y_score.append(im.pred_score[fp])
        if not have_gt:
            return math.nan
        if not have_pred:
            return 0.0
        return _average_precision(np.concatenate(y_true), np.concatenate(y_score), hard_fns)


def _segments(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of an id map and each pixel's index into them (``np.unique`` with
    ``return_inverse``, by counting when the ids are small non-negative integers, as in PNGs)."""
    flat = gt.reshape(-1)
    if flat.size and 0 <= flat.min() and flat.max() < 1 << 20:
        values = np.flatnonzero(np.bincount(flat))
        lut = np.zeros(int(values[-1]) + 1, dtype=np.int64)
        lut[values] = np.arange(len(values))
        return values, lut[flat]
    values, inverse = np.unique(flat, return_inverse=True)
    return values, inverse.reshape(-1)


def _average_precision(y_true: np.ndarray, y_score: np.ndarray, hard_fns: int) -> float:
    """Step-wise area under the precision/recall curve, thresholded at every distinct score."""
    if not len(y_true):  # every prediction ignored, no instance matched (the official tool fails)
        return 0.0
    order = np.argsort(y_score)
    scores, true = y_score[order], y_true[order]
    cum = np.cumsum(true)
    _, first = np.unique(scores, return_index=True)
    below = np.append(cum, 0.0)[first - 1]  # true examples scored below each threshold
    tp = cum[-1] - below
    fp = len(scores) - first - tp
    fn = below + hard_fns
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    widths = np.convolve(np.concatenate([recall[:1], recall, [0.0]]), [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, widths))


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else math.nan


# ---------------------------------------------------------------------------------- files
GT_SUFFIX = "_gtFine_instanceIds.png"
_FRAME = re.compile(r"^([a-z_]+_\d+_\d+)")


def write_cityscapes_predictions(
    out_dir: str | Path,
    stem: str,
    masks: np.ndarray | torch.Tensor,
    label_ids: Sequence[int],
    scores: Sequence[float],
) -> Path:
    """Write one image's instances in the official submission format: ``<stem>_pred.txt`` with
    one ``<mask png> <label id> <score>`` line per instance and the masks as 0/255 PNGs beside
    it, readable by cityscapesscripts and :func:`evaluate_cityscapes_instance_dirs`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    masks_np = torch.as_tensor(masks).cpu().numpy().astype(bool)
    lines = []
    for i, (mask, label, score) in enumerate(zip(masks_np, label_ids, scores)):
        name = f"{stem}_{i}_{INSTANCE_LABELS.get(int(label), int(label))}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / name)
        lines.append(f"{name} {int(label)} {float(score)!r}\n")
    txt = out / f"{stem}_pred.txt"
    txt.write_text("".join(lines), encoding="utf-8")
    return txt


def read_cityscapes_predictions(
    txt: str | Path,
) -> tuple[np.ndarray | None, list[int], list[float]]:
    """(N, H, W) bool masks (None when empty), label ids and scores of one ``*_pred.txt``.

    Raises:
        EvaluationError: a malformed line (named by file and line) or a missing mask file.
    """
    path = Path(txt)
    masks, labels, scores = [], [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 3:
            raise EvaluationError(
                f"{path}:{n}: expected '<relative mask path> <label id> <confidence>', got {line!r}"
            )
        mask_path = path.parent / parts[0]
        if Path(parts[0]).is_absolute() or not mask_path.is_file():
            raise EvaluationError(f"{path}:{n}: mask {parts[0]!r} not found beside the file")
        try:
            labels.append(int(float(parts[1])))
            scores.append(float(parts[2]))
        except ValueError:
            raise EvaluationError(f"{path}:{n}: label id and confidence must be numbers") from None
        with Image.open(mask_path) as im:
            masks.append(np.asarray(im.convert("L")) != 0)
    if not masks:
        return None, [], []
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise EvaluationError(f"{path}: masks of different sizes {sorted(shapes)}")
    return np.stack(masks), labels, scores


def evaluate_cityscapes_instance_dirs(
    gt_dir: str | Path, pred_dir: str | Path, min_region_size: int = MIN_REGION_SIZE,
    progress: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Score a folder of official-format predictions against ``gtFine/val``.

    Args:
        gt_dir: a folder searched recursively for ``*_gtFine_instanceIds.png``.
        pred_dir: a folder searched recursively for ``<city>_<seq>_<frame>*.txt`` files (one per
            ground-truth image, as cityscapesscripts requires) and the masks they name.
        progress: optional wrapper around the image iterator (e.g. tqdm).

    Raises:
        EvaluationError: no ground truth, images without a prediction file or with several
            (listed), malformed prediction files.
    """
    for what, folder in (("ground-truth", gt_dir), ("prediction", pred_dir)):
        if not Path(folder).is_dir():
            raise EvaluationError(f"{what} folder not found: {folder}")
    gt_files = sorted(Path(gt_dir).rglob(f"*{GT_SUFFIX}"))
    if not gt_files:
        raise EvaluationError(f"no *{GT_SUFFIX} files under {gt_dir}")
    by_frame: dict[str, list[Path]] = {}
    for txt in sorted(Path(pred_dir).rglob("*.txt")):
        m = _FRAME.match(txt.name)
        if m:
            by_frame.setdefault(m.group(1), []).append(txt)
    frames = [f.name[: -len(GT_SUFFIX)] for f in gt_files]
    missing = [f for f in frames if f not in by_frame]
    several = [f for f in frames if len(by_frame.get(f, ())) > 1]
    if missing or several:
        parts = []
        if missing:
            parts.append(f"{len(missing)} image(s) without a prediction file: "
                         f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")  # fmt: skip
        if several:
            parts.append(f"several prediction files for {', '.join(several[:10])}")
        raise EvaluationError(f"{pred_dir}: " + "; ".join(parts))
    evaluator = CityscapesInstanceEvaluator(min_region_size)
    pairs: Any = list(zip(frames, gt_files))
    for frame, gt_file in progress(pairs) if progress else pairs:
        with Image.open(gt_file) as im:
            gt = np.asarray(im)
        masks, labels, scores = read_cityscapes_predictions(by_frame[frame][0])
        if masks is None:
            masks = np.zeros((0, *gt.shape), dtype=bool)
        evaluator.process(frame, gt, masks, labels, scores)
    return evaluator.evaluate()


def format_cityscapes_instance(result: Mapping[str, Any]) -> str:
    """cityscapesscripts' table: AP and AP 50% per class and on average (fractions)."""
    avg = result["averages"]

    def num(v: Any) -> str:
        return f"{'nan':>15}" if v is None or math.isnan(v) else f"{v:>15.3f}"

    lines = [f"{'what':<15}:{'AP':>15}{'AP_50%':>15}", "#" * 45]
    for name, v in avg["classes"].items():
        lines.append(f"{name:<15}:{num(v['ap'])}{num(v['ap50%'])}")
    lines += ["-" * 45, f"{'average':<15}:{num(avg['allAp'])}{num(avg['allAp50%'])}"]
    return "\n".join(lines)
