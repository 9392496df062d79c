"""OVCamo class-aware camouflaged-object metrics, equal to the official evaluator.

OVCamo (Pang et al., "Open-Vocabulary Camouflaged Object Segmentation", ECCV 2024;
github.com/lartpang/OVCamo) judges one class and one soft mask per image. The official
``evaluate.py`` + ``utils/recorder/ovcos_metricer.py`` wrap pysodmetrics' S-measure, weighted
F-measure, MAE, F-measure, E-measure and an IoU curve so that a wrong class (exact string compare)
gets the worst value of every metric and every curve point (sm 0, wfm 0, mae 1, curves 0) while the
image still counts. We call the same pysodmetrics ``cal_*`` functions and aggregate the same way:

* GT read as grey, binarised ``> 0``; prediction read as grey uint8, ``/ 255`` and min-max
  normalised per image unless constant (pysodmetrics ``prepare_data``).
* adaptive threshold ``min(2 * mean, 1)``; curves at 256 thresholds of ``(pred * 255).uint8``.
* ``adp*`` = mean of per-image adaptive values; ``avg*`` / ``max*`` = mean / max of the
  dataset-mean 256-point curve; sm, wfm, mae = plain means over prediction files.

Where we differ, on purpose and loudly: a prediction whose size differs from its GT mask (the
official code asserts and stops) is resized to the GT size with ``cv2.INTER_LINEAR``, as OVCamo's
own inference script does before saving, and counted in ``num_resized``; a GT mask with no
prediction is skipped as in the official code but listed in ``missing`` and warned about.

Tested against ``fixtures/ovcamo_metrics`` (official numbers on pysodmetrics 1.4.2) to 1e-9.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.ovcamo import (
    OVCamoInfo,
    OVCamoLayoutError,
    OVCamoSample,
    load_ovcamo_info,
)
from ovseg.evaluation.errors import EvaluationError

METRIC_KEYS = (
    "sm",
    "wfm",
    "mae",
    "adpfm",
    "avgfm",
    "maxfm",
    "adpem",
    "avgem",
    "maxem",
    "adpiou",
    "avgiou",
    "maxiou",
)
_PRED_NAME = re.compile(r"^\[(.*?)\](.*?)$")


def parse_prediction_name(name: str) -> tuple[str, str]:
    """``"[<class>]<mask name>"`` -> ``(class, mask name)``, as OVCamo's evaluate.py parses it.

    Raises:
        EvaluationError: the name does not start with ``[<class>]``.
    """
    m = _PRED_NAME.findall(os.path.basename(name))
    if not m:
        raise EvaluationError(
            f"prediction file {name}: name must be '[<class>]<unique_id>.png' (OVCamo format)"
        )
    return m[0]


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """A file read as OVCamo reads it: ``cv2.imread(path, IMREAD_GRAYSCALE)`` -> (H, W) uint8.

    Raises:
        EvaluationError: missing, unreadable or not an image (the message names the file).
    """
    import cv2

    arr = None
    if os.path.isfile(path):
        arr = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise EvaluationError(f"cannot read mask file {path}: missing, unreadable or not an image")
    return arr


def _sod():
    try:
        import py_sod_metrics
    except ImportError:  # pragma: no cover - a dependency
        raise EvaluationError(
            "OVCamo metrics need pysodmetrics: pip install pysodmetrics"
        ) from None
    return py_sod_metrics


def _changeable_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU at 256 thresholds ``>= 255 .. >= 0`` of ``(pred * 255).uint8`` (OVCamo's IOU curve)."""
    fg = np.count_nonzero(gt)
    q = (pred * 255).astype(np.uint8)
    bins = np.linspace(0, 256, 257)
    tp = np.cumsum(np.flip(np.histogram(q[gt], bins=bins)[0]))
    fp = np.cumsum(np.flip(np.histogram(q[~gt], bins=bins)[0]))
    denom = np.array(fg + fp, dtype=np.float64)  # TP + FN + FP
    return np.divide(tp, denom, out=denom, where=denom != 0)


class OVCamoEvaluator:
    """Accumulates per-image class-aware metrics; :meth:`results` aggregates like the official
    ``OVCOSMetricer._get_raw_results`` (raw, unrounded)."""

    def __init__(self) -> None:
        sod = _sod()
        with warnings.catch_warnings():  # Fmeasure's "use FmeasureV2" notice
            warnings.simplefilter("ignore")
            self._sm = sod.Smeasure(alpha=0.5)
            self._wfm = sod.WeightedFmeasure(beta=1)
            self._mae = sod.MAE()
            self._fm = sod.Fmeasure(beta=0.3)
            self._em = sod.Emeasure()
        self._get_threshold = sod.utils.get_adaptive_threshold
        self.per_image: list[dict[str, float]] = []
        self._curves: dict[str, list[np.ndarray]] = {"fm": [], "em": [], "iou": []}

    def step(self, pred: np.ndarray, gt: np.ndarray, pred_class: str, gt_class: str) -> dict:
        """Add one image.

        Args:
            pred: (H, W) uint8 grey soft mask, 0..255.
            gt: (H, W) bool or uint8 mask (foreground ``> 0``), same size as ``pred``.
            pred_class / gt_class: compared as exact strings; unequal -> worst values.

        Returns:
            this image's values (sm, wfm, mae, adp*, curve means / maxima).
        """
        if pred.shape != gt.shape:
            raise EvaluationError(f"prediction {pred.shape} and GT {gt.shape} differ in size")
        gt = gt > 0
        p = pred.astype(np.float64) / 255
        if p.max() != p.min():
            p = (p - p.min()) / (p.max() - p.min())
        ok = pred_class == gt_class
        em = self._em
        em.gt_fg_numel = np.count_nonzero(gt)
        em.gt_size = gt.shape[0] * gt.shape[1]
        if ok:
            sm = float(self._sm.cal_sm(p, gt))
            wfm = 0.0 if not gt.any() else float(self._wfm.cal_wfm(p, gt))
            mae = float(self._mae.cal_mae(p, gt))
            adpfm = float(self._fm.cal_adaptive_fm(pred=p, gt=gt))
            fm_curve = np.asarray(self._fm.cal_pr(pred=p, gt=gt)[2], dtype=np.float64)
            adpem = float(em.cal_adaptive_em(p, gt))
            em_curve = np.asarray(em.cal_changeable_em(p, gt), dtype=np.float64).reshape(-1)
            binary = p >= self._get_threshold(p, max_value=1)
            union = np.count_nonzero(binary | gt)
            adpiou = 0.0 if union == 0 else np.count_nonzero(binary & gt) / union
            iou_curve = _changeable_iou(p, gt)
        else:
            sm, wfm, mae, adpfm, adpem, adpiou = 0.0, 0.0, 1.0, 0.0, 0.0, 0.0
            fm_curve = em_curve = iou_curve = np.zeros(256)
        row = {"sm": sm, "wfm": wfm, "mae": mae, "adpfm": adpfm, "adpem": adpem, "adpiou": adpiou}
        for k, c in (("fm", fm_curve), ("em", em_curve), ("iou", iou_curve)):
            self._curves[k].append(c)
            row[f"{k}_curve_mean"] = float(c.mean())
            row[f"{k}_curve_max"] = float(c.max())
        self.per_image.append(row)
        return row

    def results(self) -> dict[str, float]:
        """The 12 raw values (``METRIC_KEYS``); NaN when no image was added."""
        if not self.per_image:
            return {k: float("nan") for k in METRIC_KEYS}
        out = {k: float(np.mean([r[k] for r in self.per_image])) for k in ("sm", "wfm", "mae")}
        for k in ("fm", "em", "iou"):
            curve = np.stack(self._curves[k]).mean(axis=0)
            out[f"adp{k}"] = float(np.mean([r[f"adp{k}"] for r in self.per_image]))
            out[f"avg{k}"] = float(curve.mean())
            out[f"max{k}"] = float(curve.max())
        return {k: out[k] for k in METRIC_KEYS}

    def mean_curves(self) -> dict[str, list[float]]:
        """The dataset-mean 256-point curves (thresholds 255 .. 0 for fm / iou, as official)."""
        return {k: np.stack(v).mean(axis=0).tolist() for k, v in self._curves.items() if v}


def evaluate_ovcamo(
    info: OVCamoInfo | str | os.PathLike,
    pred_dir: str | os.PathLike,
    *,
    progress: Callable[[Iterable], Iterable] | None = None,
    strict_classes: bool = False,
) -> dict[str, Any]:
    """Evaluate a folder of ``[<class>]<unique_id>.png`` predictions on OVCamo's test split.

    Returns:
        ``{"metrics": {12 raw values}, "num_evaluated", "num_test_samples", "num_classes",
        "num_wrong_class", "resized": [file names], "missing": [mask names], "per_image"}``.

    Raises:
        EvaluationError: bad info file, a prediction name without ``[<class>]``, (with
            ``strict_classes``) a class not in the test vocabulary, a prediction for a mask outside the test set, an unreadable
            file; the message names the file.
    """
    import cv2

    if not isinstance(info, OVCamoInfo):
        try:
            info = load_ovcamo_info(info)
        except OVCamoLayoutError as e:
            raise EvaluationError(str(e)) from None
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise EvaluationError(f"prediction folder {pred_dir} does not exist")
    gts = {s.mask_name: s for s in info.test_samples}
    classes = set(info.test_classes)
    files = sorted(p for p in pred_dir.iterdir() if p.is_file())
    ev = OVCamoEvaluator()
    resized: list[str] = []
    seen: set[str] = set()
    per_image: dict[str, dict] = {}
    wrong = 0
    unknown: list[str] = []
    for path in progress(files) if progress else files:
        pred_cls, mask_name = parse_prediction_name(path.name)
        if pred_cls not in classes:
            msg = (
                f"prediction file {path}: class {pred_cls!r} is not one of the "
                f"{len(classes)} OVCamo test classes"
            )
            if strict_classes:
                raise EvaluationError(msg)
            # The official evaluator scores it as a wrong class (worst values); so do we.
            warnings.warn(msg + "; scored as a wrong class", stacklevel=2)
            unknown.append(path.name)
        if mask_name not in gts:
            raise EvaluationError(f"prediction file {path}: no test-set mask named {mask_name!r}")
        sample = gts[mask_name]
        pred = read_gray(path)
        gt = read_gray(sample.mask_path)
        if pred.shape != gt.shape:
            # OVCamo's inference script resizes to the GT size with INTER_LINEAR before saving.
            pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
            resized.append(path.name)
        seen.add(mask_name)
        wrong += pred_cls != sample.base_class
        row = ev.step(pred, gt, pred_cls, sample.base_class)
        per_image[path.name] = {"gt_class": sample.base_class, "pred_class": pred_cls, **row}
    missing = sorted(set(gts) - seen)
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(gts)} OVCamo test masks have no prediction in {pred_dir} "
            f"(first: {missing[0]}); skipped, as the official evaluator does",
            stacklevel=2,
        )
    if resized:
        warnings.warn(
            f"{len(resized)} predictions in {pred_dir} differ in size from their GT mask "
            f"(first: {resized[0]}); resized with cv2 INTER_LINEAR",
            stacklevel=2,
        )
    return {
        "metrics": ev.results(),
        "num_evaluated": len(files),
        "num_test_samples": len(gts),
        "num_classes": len(info.test_classes),
        "num_wrong_class": int(wrong),
        "resized": resized,
        "unknown_class": unknown,
        "missing": missing,
        "mean_curves": ev.mean_curves(),
        "per_image": per_image,
    }


def format_ovcamo(result: dict[str, Any]) -> str:
    """One header line and the 12 metrics (3 decimals, as OVCamo prints them)."""
    m = result["metrics"]
    head = (
        f"OVCamo: {result['num_evaluated']} predictions, {result['num_test_samples']} test "
        f"samples, {result['num_classes']} classes, {result['num_wrong_class']} wrong class"
    )
    return head + "\n" + "  ".join(f"{k} {m[k]:.3f}" for k in METRIC_KEYS)


def run_ovcamo(
    segmenter: Any,
    info: OVCamoInfo | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    strategy: str = "semantic-sum",
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment OVCamo's test images into its test classes, reduce each prediction to one object
    (:mod:`ovseg.inference.single_object`), write ``out_dir/predictions/[<class>]<id>.png`` and
    score them with :func:`evaluate_ovcamo`. ``out_dir/metrics.json`` holds the 12 raw values
    under ``"ovcamo"``.

    Raises:
        EvaluationError: bad info file, an unreadable test image (the message names the file).
    """
    from ovseg.inference.single_object import save_single_object, single_object
    from ovseg.text.vocabulary import Vocabulary
    from ovseg.utils.image import ImageLoadError, load_image
    from ovseg.utils.io import atomic_write_json

    if not isinstance(info, OVCamoInfo):
        try:
            info = load_ovcamo_info(info)
        except OVCamoLayoutError as e:
            raise EvaluationError(str(e)) from None
    if not info.test_samples:
        raise EvaluationError(f"{info.yaml_path}: no test samples (no class with split 'test')")
    vocab = Vocabulary(info.test_classes)
    pred_dir = Path(out_dir) / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    samples = info.test_samples[:limit] if limit else info.test_samples
    it: Iterable[OVCamoSample] = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc="ovcamo", unit="img", disable=None, leave=False)
    intermediates = strategy == "best-query"
    for s in it:
        try:
            image = load_image(s.image_path)
        except ImageLoadError as e:
            raise EvaluationError(str(e)) from None
        pred = segmenter.predict(image, vocab, task="semantic", return_intermediates=intermediates)
        save_single_object(single_object(pred, strategy), pred_dir, s.unique_id)
    with warnings.catch_warnings():
        if limit:  # the masks left out on purpose are not "missing"
            warnings.filterwarnings("ignore", message=".*have no prediction.*")
        result = evaluate_ovcamo(info, pred_dir)
    out = {
        "dataset": "ovcamo",
        "strategy": strategy,
        "ovcamo": result["metrics"],
        **{k: result[k] for k in ("num_evaluated", "num_test_samples", "num_classes")},
        "num_wrong_class": result["num_wrong_class"],
        "per_image": result["per_image"],
    }
    atomic_write_json(Path(out_dir) / "metrics.json", out)
    return out
