"""Semantic segmentation metrics: per-class IoU / accuracy, mIoU, mAcc, aAcc, fwIoU.

Two conventions, because published numbers differ by them:

* ``"mmseg"`` — mmsegmentation's ``IoUMetric``: a class absent from both ground truth and
  prediction is NaN and left out of the means; a class that is only predicted counts as IoU 0
  (Acc NaN).
* ``"detectron2"`` — detectron2's ``SemSegEvaluator`` (FC-CLIP's tables): a class without
  ground-truth pixels is NaN for IoU and Acc and left out, even if it was predicted.

Both accumulate one confusion matrix over the whole dataset (ratios are taken once, at the end),
drop pixels whose ground truth is ``ignore_index``, and give identical aAcc (detectron2's pACC) and
mAcc (mACC). fwIoU (frequency-weighted IoU, detectron2's definition) is reported under both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ovseg.evaluation.errors import EvaluationError
from ovseg.utils.dist import all_reduce_sum

CONVENTIONS = ("mmseg", "detectron2")


def _as_int_array(x: np.ndarray | torch.Tensor, what: str, name: str | None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    where = f" ({name})" if name else ""
    if x.ndim != 2:
        raise EvaluationError(
            f"{what}{where} must be a (H, W) label map, got shape {tuple(x.shape)}"
        )
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise EvaluationError(
            f"{what}{where} must hold integer class indices, got dtype {x.dtype}; "
            "take argmax over the class scores first"
        )
    return x.astype(np.int64, copy=False)


def _bad_values(values: np.ndarray, limit: int = 5) -> str:
    uniq = np.unique(values)
    shown = ", ".join(str(int(v)) for v in uniq[:limit])
    return shown + (f", ... ({len(uniq)} distinct)" if len(uniq) > limit else "")


def _nanmean(x: np.ndarray) -> float:
    valid = ~np.isnan(x)
    return float(x[valid].sum() / valid.sum()) if valid.any() else float("nan")


class SemSegEvaluator:
    """Streaming semantic-segmentation evaluator over a confusion matrix.

    Args:
        num_classes: C, the number of classes; labels are 0..C-1.
        ignore_index: ground-truth value whose pixels are not evaluated (255).
        reduce_zero_label: mmseg's ADE20K convention, applied to the ground truth only: 0 becomes
            ignore, k becomes k-1, ``ignore_index`` stays ignore. Predictions are never shifted.
        convention: ``"mmseg"`` or ``"detectron2"`` (see the module docstring).
        class_names: optional C names, copied into the results.

    ``process`` is called once per image on each rank; ``evaluate`` sums the per-rank matrices when
    ``torch.distributed`` is initialised, so sharded evaluation equals one process as long as every
    image is processed exactly once (shard without padding, e.g. ``indices[rank::world_size]``).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
        convention: str = "mmseg",
        class_names: Sequence[str] | None = None,
    ) -> None:
        if num_classes < 1:
            raise EvaluationError(f"num_classes must be >= 1, got {num_classes}")
        if convention not in CONVENTIONS:
            raise EvaluationError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if 0 <= ignore_index < num_classes:
            raise EvaluationError(
                f"ignore_index {ignore_index} is a valid class index (num_classes={num_classes}); "
                "choose a value outside 0..num_classes-1, e.g. 255"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise EvaluationError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.convention = convention
        self.class_names = list(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget every processed image."""
        # conf[gt, pred]: pixel counts over non-ignored ground truth (int64: no overflow at scale).
        self.conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.num_images = 0

    def process(
        self,
        pred: np.ndarray | torch.Tensor,
        gt: np.ndarray | torch.Tensor,
        name: str | None = None,
        gt_name: str | None = None,
    ) -> None:
        """Accumulate one image.

        Args:
            pred: (H, W) integer class indices in 0..C-1 (numpy array or tensor, any device).
            gt: (H, W) integer ground truth: 0..C-1 or ``ignore_index`` (raw values before
                ``reduce_zero_label``, which this method applies).
            name: image or prediction file named in error messages.
            gt_name: ground-truth file named in messages about ground-truth values (default name).

        Raises:
            EvaluationError: shapes differ, or a label lies outside the class range.
        """
        gt_name = gt_name or name
        pred = _as_int_array(pred, "prediction", name)
        gt = _as_int_array(gt, "ground truth", gt_name)
        where = f" in {name}" if name else ""
        gt_where = f" in {gt_name}" if gt_name else ""
        if pred.shape != gt.shape:
            raise EvaluationError(
                f"image size mismatch{where}: prediction is {pred.shape[0]}x{pred.shape[1]} but "
                f"ground truth is {gt.shape[0]}x{gt.shape[1]} (HxW); resize the prediction to the "
                "ground-truth size"
            )
        C = self.num_classes
        raw = gt
        if self.reduce_zero_label:
            ignored = (raw == 0) | (raw == self.ignore_index)
            gt = raw - 1
        else:
            ignored = raw == self.ignore_index
        # Masked full-array arithmetic (no boolean compaction): ignored pixels go to an extra bin.
        gt = np.where(ignored, 0, gt)
        if gt.size and (gt.min() < 0 or gt.max() >= C):
            bad = raw[~ignored & ((gt < 0) | (gt >= C))]
            valid_raw = f"1..{C}" if self.reduce_zero_label else f"0..{C - 1}"
            raise EvaluationError(
                f"ground-truth label value(s) {_bad_values(bad)}{gt_where} outside the class range "
                f"{valid_raw} (ignore_index={self.ignore_index}"
                f"{', reduce_zero_label: 0 is ignored too' if self.reduce_zero_label else ''}); "
                "check --num-classes, --ignore-index and --reduce-zero-label"
            )
        if pred.size and (pred.min() < 0 or pred.max() >= C):
            bad = pred[(pred < 0) | (pred >= C)]
            raise EvaluationError(
                f"predicted label value(s) {_bad_values(bad)}{where} outside the class range "
                f"0..{C - 1}; predictions must be class indices of the evaluated vocabulary"
            )
        index = np.where(ignored, C * C, gt * C + pred)
        self.conf += np.bincount(index.ravel(), minlength=C * C + 1)[: C * C].reshape(C, C)
        self.num_images += 1

    def total_area(self) -> dict[str, list[int]]:
        """Per-class pixel counts summed over images and ranks, as mmseg's ``total_area_*``.

        Returns:
            ``intersect``, ``union``, ``pred_label``, ``label``: C ints each.
        """
        conf = all_reduce_sum(self.conf)
        intersect = np.diag(conf)
        label = conf.sum(axis=1)
        pred = conf.sum(axis=0)
        return {
            "intersect": intersect.tolist(),
            "union": (label + pred - intersect).tolist(),
            "pred_label": pred.tolist(),
            "label": label.tolist(),
        }

    def evaluate(self) -> dict[str, Any]:
        """Metrics over everything processed on all ranks (every rank gets the same result).

        Returns:
            ``summary_percent``: {aAcc, mIoU, mAcc, fwIoU} floats in percent (NaN when undefined,
            e.g. nothing evaluated); ``per_class_percent``: {IoU, Acc} lists of C floats in percent,
            None where NaN; plus ``convention``, ``num_classes``, ``num_images`` and, when given,
            ``class_names``.
        """
        conf = all_reduce_sum(self.conf).astype(np.float64)
        num_images = int(all_reduce_sum(np.array([self.num_images], dtype=np.int64))[0])
        tp = np.diag(conf)
        pos_gt = conf.sum(axis=1)
        pos_pred = conf.sum(axis=0)
        union = pos_gt + pos_pred - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.convention == "mmseg":
                iou = np.where(union > 0, tp / union, np.nan)
            else:
                iou = np.where((pos_gt > 0) & (union > 0), tp / union, np.nan)
            acc = np.where(pos_gt > 0, tp / pos_gt, np.nan)
        total = pos_gt.sum()
        has_gt = pos_gt > 0
        # fwIoU as detectron2 computes it: classes with ground truth, weighted by their pixel share.
        fwiou = float(np.sum(iou[has_gt] * (pos_gt[has_gt] / total))) if total > 0 else np.nan
        aacc = float(tp.sum() / total) if total > 0 else np.nan
        out: dict[str, Any] = {
            "convention": self.convention,
            "num_classes": self.num_classes,
            "num_images": num_images,
            "summary_percent": {
                "aAcc": 100.0 * aacc,
                "mIoU": 100.0 * _nanmean(iou),
                "mAcc": 100.0 * _nanmean(acc),
                "fwIoU": 100.0 * fwiou,
            },
            "per_class_percent": {
                "IoU": [None if np.isnan(v) else 100.0 * float(v) for v in iou],
                "Acc": [None if np.isnan(v) else 100.0 * float(v) for v in acc],
            },
        }
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        return out


# ---------------------------------------------------------------------------------- files
def read_label_png(path: str | Path) -> np.ndarray:
    """Read a single-channel label map (8/16-bit grayscale or palette PNG) as (H, W) int64.

    Raises:
        EvaluationError: the file is missing or has colour channels.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"label map not found: {path}")
    with Image.open(path) as img:
        arr = np.asarray(img)
    if arr.ndim != 2:
        raise EvaluationError(
            f"{path}: expected a single-channel label map (class index per pixel), got an image "
            f"of shape {arr.shape}"
        )
    return arr.astype(np.int64)


def pair_label_files(
    gt_dir: str | Path,
    pred_dir: str | Path,
    gt_suffix: str = ".png",
    pred_suffix: str = ".png",
) -> list[tuple[str, Path, Path]]:
    """Pair ground-truth and prediction files by relative path minus suffix.

    Returns:
        ``(key, gt_path, pred_path)`` sorted by key; empty when the prediction folder holds no
        files (an empty prediction set).

    Raises:
        EvaluationError: a folder is missing, the ground-truth folder holds no files, or the two
            sets differ (the unpaired files are listed).
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for d, what in ((gt_dir, "ground-truth folder"), (pred_dir, "prediction folder")):
        if not d.is_dir():
            raise EvaluationError(f"{what} not found: {d}")

    def index(root: Path, suffix: str) -> dict[str, Path]:
        return {
            p.relative_to(root).as_posix()[: -len(suffix)]: p
            for p in sorted(root.rglob(f"*{suffix}"))
            if p.is_file()
        }

    gts = index(gt_dir, gt_suffix)
    preds = index(pred_dir, pred_suffix)
    if not gts:
        raise EvaluationError(f"no ground-truth files matching *{gt_suffix} under {gt_dir}")
    if not preds:
        return []
    missing = sorted(set(gts) - set(preds))
    extra = sorted(set(preds) - set(gts))
    if missing or extra:
        parts = []
        if missing:
            names = [gts[k].name for k in missing]
            parts.append(
                f"{len(missing)} ground-truth file(s) without a prediction: {_list(names)}"
            )
        if extra:
            names = [preds[k].name for k in extra]
            parts.append(f"{len(extra)} prediction(s) without ground truth: {_list(names)}")
        raise EvaluationError(
            f"prediction files in {pred_dir} do not pair up with {gt_dir}: " + "; ".join(parts)
        )
    return [(k, gts[k], preds[k]) for k in sorted(gts)]


def _list(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")


def evaluate_semantic_dirs(
    gt_dir: str | Path,
    pred_dir: str | Path,
    num_classes: int,
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    convention: str = "mmseg",
    class_names: Sequence[str] | None = None,
    gt_suffix: str = ".png",
    pred_suffix: str = ".png",
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict[str, Any]:
    """Evaluate a folder of predicted label maps against a folder of ground truth, one image at a
    time (see :class:`SemSegEvaluator` for the arguments and :func:`pair_label_files` for pairing).

    An empty prediction folder evaluates nothing: every metric is NaN (as mmseg's ``nanmean`` over
    no classes) and ``num_images`` is 0.
    """
    evaluator = SemSegEvaluator(
        num_classes, ignore_index, reduce_zero_label, convention, class_names
    )
    pairs = pair_label_files(gt_dir, pred_dir, gt_suffix, pred_suffix)
    for _, gt_path, pred_path in progress(pairs) if progress else pairs:
        evaluator.process(
            read_label_png(pred_path), read_label_png(gt_path), str(pred_path), str(gt_path)
        )
    return evaluator.evaluate()
