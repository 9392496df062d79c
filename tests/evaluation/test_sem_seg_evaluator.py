"""SemSegEvaluator against mmseg IoUMetric / detectron2 SemSegEvaluator reference numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.evaluation import EvaluationError, SemSegEvaluator, evaluate_semantic_dirs
from ovseg.evaluation.sem_seg import pair_label_files

CASES = ["c20", "c150", "c150_reduce_zero_label"]
TOL = 1e-6


def _expected(metrics_dir, case):
    return json.loads((metrics_dir / "semantic" / "expected.json").read_text())["cases"][case]


def _reference(e, convention):
    """Fixture numbers under the evaluator's key names."""
    if convention == "mmseg":
        return e["summary_percent"], e["per_class_percent"]
    d2 = e["detectron2_SemSegEvaluator"]
    summary = {"aAcc": d2["pACC"], "mIoU": d2["mIoU"], "mAcc": d2["mACC"], "fwIoU": d2["fwIoU"]}
    return summary, {"IoU": d2["per_class_IoU"], "Acc": d2["per_class_ACC"]}


def _assert_per_class(got, ref):
    for key in ("IoU", "Acc"):
        assert len(got[key]) == len(ref[key])
        for c, (a, b) in enumerate(zip(got[key], ref[key])):
            assert (a is None) == (b is None), f"{key}[{c}]: {a} vs {b}"
            if a is not None:
                assert a == pytest.approx(b, abs=TOL), f"{key}[{c}]"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("convention", ["mmseg", "detectron2"])
def test_fixture_numbers(metrics_dir, case, convention):
    e = _expected(metrics_dir, case)
    root = metrics_dir / "semantic"
    result = evaluate_semantic_dirs(
        root / e["gt_dir"],
        root / e["pred_dir"],
        e["num_classes"],
        ignore_index=e["ignore_index"],
        reduce_zero_label=e["reduce_zero_label"],
        convention=convention,
    )
    summary, per_class = _reference(e, convention)
    assert result["num_images"] == len(e["images"])
    for key, value in summary.items():
        assert result["summary_percent"][key] == pytest.approx(value, abs=TOL), key
    _assert_per_class(result["per_class_percent"], per_class)
    if convention == "detectron2":
        n = sum(v is not None for v in result["per_class_percent"]["IoU"])
        assert n == e["detectron2_SemSegEvaluator"]["n_classes_in_mIoU"]
    else:
        n = sum(v is not None for v in result["per_class_percent"]["IoU"])
        assert n == e["class_status"]["n_classes_in_mIoU"]


@pytest.mark.parametrize("case", CASES)
def test_total_area_is_exact(metrics_dir, case):
    e = _expected(metrics_dir, case)
    root = metrics_dir / "semantic" / case
    ev = SemSegEvaluator(e["num_classes"], reduce_zero_label=e["reduce_zero_label"])
    for name in e["images"]:
        gt = torch.from_numpy(np.array(Image.open(root / "gt" / name)))  # tensors are accepted
        pred = np.array(Image.open(root / "pred" / name))
        ev.process(pred, gt, name)
    assert ev.total_area() == e["total_area"]
    # mmseg's fwIoU is not reported by mmseg; ours uses detectron2's definition in both.
    d2 = e["detectron2_SemSegEvaluator"]
    assert ev.evaluate()["summary_percent"]["fwIoU"] == pytest.approx(d2["fwIoU"], abs=TOL)


def test_conventions_differ_on_predicted_only_class():
    # class 0 everywhere in GT; class 1 only predicted; class 2 absent.
    gt = np.zeros((2, 2), dtype=np.uint8)
    pred = np.array([[0, 0], [0, 1]], dtype=np.uint8)
    mm = SemSegEvaluator(3, convention="mmseg")
    d2 = SemSegEvaluator(3, convention="detectron2")
    for ev in (mm, d2):
        ev.process(pred, gt)
    r_mm, r_d2 = mm.evaluate(), d2.evaluate()
    assert r_mm["per_class_percent"]["IoU"] == [75.0, 0.0, None]
    assert r_d2["per_class_percent"]["IoU"] == [75.0, None, None]
    assert r_mm["summary_percent"]["mIoU"] == pytest.approx(37.5)
    assert r_d2["summary_percent"]["mIoU"] == pytest.approx(75.0)
    for r in (r_mm, r_d2):
        assert r["per_class_percent"]["Acc"] == [75.0, None, None]
        assert r["summary_percent"]["aAcc"] == pytest.approx(75.0)
        assert r["summary_percent"]["fwIoU"] == pytest.approx(75.0)


def test_reduce_zero_label_and_ignore():
    gt = np.array([[0, 1, 2, 255]], dtype=np.uint8)  # other, class 0, class 1, ignore
    pred = np.array([[1, 0, 0, 1]], dtype=np.uint8)
    ev = SemSegEvaluator(2, reduce_zero_label=True)
    ev.process(pred, gt)
    assert ev.total_area() == {
        "intersect": [1, 0],
        "union": [2, 1],
        "pred_label": [2, 0],
        "label": [1, 1],
    }


def test_nothing_processed_gives_nan():
    r = SemSegEvaluator(4).evaluate()
    assert r["num_images"] == 0
    assert all(math.isnan(v) for v in r["summary_percent"].values())
    assert r["per_class_percent"]["IoU"] == [None] * 4


@pytest.mark.parametrize(
    "pred, gt, match",
    [
        (
            np.zeros((2, 3), np.uint8),
            np.zeros((3, 2), np.uint8),
            r"size mismatch in img_7: .*2x3.*3x2",
        ),
        (
            np.zeros((2, 2), np.uint8),
            np.full((2, 2), 9, np.uint8),
            r"ground-truth label value\(s\) 9 in img_7",
        ),
        (
            np.full((2, 2), 5, np.uint8),
            np.zeros((2, 2), np.uint8),
            r"predicted label value\(s\) 5 in img_7",
        ),
        (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), "integer class indices"),
    ],
)
def test_bad_arrays(pred, gt, match):
    with pytest.raises(EvaluationError, match=match):
        SemSegEvaluator(3).process(pred, gt, "img_7")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="convention"):
        SemSegEvaluator(3, convention="mmsegmentation")
    with pytest.raises(ValueError, match="ignore_index 2 is a valid class"):
        SemSegEvaluator(3, ignore_index=2)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_files_pair_up_or_are_listed(tmp_path):
    for name in ("a", "b", "c"):
        _write(tmp_path / "gt" / f"{name}.png", np.zeros((2, 2)))
    for name in ("a", "b", "d"):
        _write(tmp_path / "pred" / f"{name}.png", np.zeros((2, 2)))
    with pytest.raises(
        EvaluationError, match=r"without a prediction: c\.png.*without ground truth: d\.png"
    ):
        pair_label_files(tmp_path / "gt", tmp_path / "pred")


def test_missing_folder_is_named(tmp_path):
    (tmp_path / "gt").mkdir()
    with pytest.raises(EvaluationError, match=f"prediction folder not found: {tmp_path / 'nope'}"):
        evaluate_semantic_dirs(tmp_path / "gt", tmp_path / "nope", 3)


def test_value_error_names_the_ground_truth_file(tmp_path):
    _write(tmp_path / "gt" / "x.png", [[0, 1], [7, 255]])
    _write(tmp_path / "pred" / "x.png", [[0, 1], [1, 1]])
    with pytest.raises(
        EvaluationError, match=r"value\(s\) 7 in .*gt/x\.png outside the class range 0\.\.2"
    ):
        evaluate_semantic_dirs(tmp_path / "gt", tmp_path / "pred", 3)


def test_suffixes_pair_cityscapes_style_names(tmp_path):
    _write(tmp_path / "gt" / "city" / "f_000_gtFine_labelTrainIds.png", [[0, 1], [2, 255]])
    _write(tmp_path / "pred" / "city" / "f_000_pred.png", [[0, 1], [1, 0]])
    r = evaluate_semantic_dirs(
        tmp_path / "gt", tmp_path / "pred", 3,
        gt_suffix="_gtFine_labelTrainIds.png", pred_suffix="_pred.png",
    )  # fmt: skip
    assert r["num_images"] == 1
    assert r["summary_percent"]["aAcc"] == pytest.approx(200 / 3)


def test_empty_prediction_set_gives_nan(tmp_path):
    _write(tmp_path / "gt" / "x.png", [[0, 1]])
    (tmp_path / "pred").mkdir()
    r = evaluate_semantic_dirs(tmp_path / "gt", tmp_path / "pred", 3)
    assert r["num_images"] == 0
    assert math.isnan(r["summary_percent"]["mIoU"])
