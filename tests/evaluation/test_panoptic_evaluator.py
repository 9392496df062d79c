"""PanopticEvaluator against panopticapi ``pq_compute`` reference numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from ovseg.evaluation import (
    EvaluationError,
    PanopticEvaluator,
    evaluate_panoptic_files,
    id2rgb,
    read_panoptic_png,
    rgb2id,
)

TOL = 1e-6


def _files(metrics_dir):
    d = metrics_dir / "panoptic"
    return d / "panoptic_gt.json", d / "panoptic_gt", d / "panoptic_pred.json", d / "panoptic_pred"


def test_fixture_summary_and_per_class(metrics_dir):
    expected = json.loads((metrics_dir / "panoptic" / "expected.json").read_text())
    result = evaluate_panoptic_files(*_files(metrics_dir))
    assert result["num_images"] == 12
    for group in ("All", "Things", "Stuff"):
        got, ref = result["summary"][group], expected["summary"][group]
        assert got["n"] == ref["n"]
        for key in ("pq", "sq", "rq"):
            assert got[key] == pytest.approx(ref[key], abs=TOL), (group, key)
        # the percent numbers panopticapi users quote
        assert 100 * got["pq"] == pytest.approx(expected["summary_percent"][group]["PQ"], abs=TOL)
    assert set(result["per_class"]) == {int(k) for k in expected["per_class"]}
    for cid, ref in expected["per_class"].items():
        got = result["per_class"][int(cid)]
        assert (got["tp"], got["fp"], got["fn"]) == (ref["tp"], ref["fp"], ref["fn"]), cid
        for key in ("pq", "sq", "rq"):
            assert got[key] == pytest.approx(ref[key], abs=TOL), (cid, key)


def test_fixture_per_image(metrics_dir):
    """Each image alone, including the hand-made edge cases of image 204."""
    gt_json, gt_dir, pred_json, pred_dir = _files(metrics_dir)
    expected = json.loads((metrics_dir / "panoptic" / "expected.json").read_text())["per_image"]
    gt = json.loads(gt_json.read_text())
    preds = {a["image_id"]: a for a in json.loads(pred_json.read_text())["annotations"]}
    for ann in gt["annotations"]:
        ev = PanopticEvaluator(gt["categories"])
        p = preds[ann["image_id"]]
        ev.process(
            read_panoptic_png(gt_dir / ann["file_name"]),
            ann["segments_info"],
            read_panoptic_png(pred_dir / p["file_name"]),
            p["segments_info"],
            image_id=ann["image_id"],
        )
        got = {
            str(cid): {"tp": v["tp"], "fp": v["fp"], "fn": v["fn"]}
            for cid, v in ev.evaluate()["per_class"].items()
            if v["tp"] or v["fp"] or v["fn"]
        }
        ref = {
            cid: {k: v[k] for k in ("tp", "fp", "fn")}
            for cid, v in expected[str(ann["image_id"])].items()
        }
        assert got == ref, ann["image_id"]
        # iou sums per class
        for cid, v in expected[str(ann["image_id"])].items():
            assert ev.iou[ev.cat_index[int(cid)]] == pytest.approx(v["iou_sum"], abs=1e-12)


CATS = [
    {"id": 1, "isthing": 1, "name": "cat"},
    {"id": 2, "isthing": 1, "name": "dog"},
    {"id": 10, "isthing": 0, "name": "sky"},
]


def _toy():
    gt = np.zeros((4, 6), np.int64)
    gt[:2, :] = 5  # sky
    gt[2:, :3] = 7  # cat
    gt[2:, 3:] = 9  # dog crowd
    gt_segs = [
        {"id": 5, "category_id": 10, "iscrowd": 0},
        {"id": 7, "category_id": 1, "iscrowd": 0},
        {"id": 9, "category_id": 2, "iscrowd": 1},
    ]
    return gt, gt_segs


def test_toy_matching_rules():
    gt, gt_segs = _toy()
    pred = np.zeros_like(gt)
    pred[:2, :] = 1  # sky, exact
    pred[2:, :2] = 2  # cat, IoU 4/6 -> TP
    pred[2:, 3:] = 3  # dog on its own crowd -> ignored
    pred[2:, 2] = 4  # cat on the cat's last column: unmatched second cat segment -> FP
    pred_segs = [
        {"id": 1, "category_id": 10},
        {"id": 2, "category_id": 1},
        {"id": 3, "category_id": 2},
        {"id": 4, "category_id": 1},
    ]
    ev = PanopticEvaluator(CATS)
    ev.process(gt, gt_segs, pred, pred_segs, image_id=1)
    r = ev.evaluate()
    assert r["per_class"][10] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}
    cat = r["per_class"][1]
    assert (cat["tp"], cat["fp"], cat["fn"]) == (1, 1, 0)
    assert cat["sq"] == pytest.approx(4 / 6) and cat["rq"] == pytest.approx(1 / 1.5)
    assert r["per_class"][2]["tp"] + r["per_class"][2]["fp"] + r["per_class"][2]["fn"] == 0
    assert r["summary"]["All"]["n"] == 2 and r["summary"]["Things"]["n"] == 1
    assert r["summary"]["All"]["pq"] == pytest.approx((1.0 + (4 / 6) / 1.5) / 2)


def test_empty_prediction_counts_false_negatives():
    gt, gt_segs = _toy()
    ev = PanopticEvaluator(CATS)
    ev.process(gt, gt_segs, np.zeros_like(gt), [])
    r = ev.evaluate()
    assert r["summary"]["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2}
    assert r["per_class"][1]["fn"] == 1 and r["per_class"][10]["fn"] == 1


def test_nothing_processed_gives_nan():
    r = PanopticEvaluator(CATS).evaluate()
    assert r["summary"]["All"]["n"] == 0 and math.isnan(r["summary"]["All"]["pq"])


@pytest.mark.parametrize(
    "pred_segs, pred_value, match",
    [
        ([], 3, r"segment id\(s\) 3 with no entry in segments_info"),
        (
            [{"id": 3, "category_id": 1}, {"id": 4, "category_id": 1}],
            3,
            r"segment id\(s\) 4 that do not occur",
        ),
        ([{"id": 3, "category_id": 99}], 3, "category_id 99, which is not among"),
    ],
)
def test_png_and_segments_must_agree(pred_segs, pred_value, match):
    gt, gt_segs = _toy()
    with pytest.raises(EvaluationError, match=match):
        PanopticEvaluator(CATS).process(gt, gt_segs, np.full_like(gt, pred_value), pred_segs, 42)


def test_size_mismatch_and_duplicates():
    gt, gt_segs = _toy()
    ev = PanopticEvaluator(CATS)
    with pytest.raises(EvaluationError, match=r"size mismatch of image 3: .*4x5.*4x6"):
        ev.process(gt, gt_segs, np.zeros((4, 5), np.int64), [], image_id=3)
    ev.process(gt, gt_segs, np.zeros_like(gt), [], image_id=3)
    with pytest.raises(EvaluationError, match="image 3 was processed twice"):
        ev.process(gt, gt_segs, np.zeros_like(gt), [], image_id=3)


def test_rgb_id_round_trip(tmp_path):
    ids = np.array([[0, 1, 255], [256, 65536, 256**3 - 1]], dtype=np.int64)
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    assert np.array_equal(read_panoptic_png(tmp_path / "p.png"), ids)
    assert np.array_equal(rgb2id(rgb), ids)


def _write_set(root, pred_annotations):
    gt, gt_segs = _toy()
    (root / "gt").mkdir(parents=True)
    (root / "pred").mkdir()
    Image.fromarray(id2rgb(gt)).save(root / "gt" / "1.png")
    gt_json = {
        "images": [{"id": 1, "file_name": "1.jpg", "height": 4, "width": 6}],
        "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": gt_segs}],
        "categories": CATS,
    }
    (root / "gt.json").write_text(json.dumps(gt_json))
    Image.fromarray(id2rgb(gt)).save(root / "pred" / "1.png")
    (root / "pred.json").write_text(json.dumps({"annotations": pred_annotations}))
    return root / "gt.json", root / "gt", root / "pred.json", root / "pred"


def test_files_perfect_prediction(tmp_path):
    _, segs = _toy()
    files = _write_set(tmp_path, [{"image_id": 1, "file_name": "1.png", "segments_info": segs}])
    r = evaluate_panoptic_files(*files)
    assert r["summary"]["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}


def test_files_empty_prediction_set_is_zero_not_a_crash(tmp_path):
    r = evaluate_panoptic_files(*_write_set(tmp_path, []))
    assert r["summary"]["All"]["pq"] == 0.0 and r["summary"]["All"]["n"] == 2


def test_files_that_do_not_pair_up_are_listed(tmp_path):
    files = _write_set(tmp_path, [{"image_id": 2, "file_name": "1.png", "segments_info": []}])
    with pytest.raises(
        EvaluationError, match=r"no prediction for image\(s\) 1; .*image\(s\) 2 not in"
    ):
        evaluate_panoptic_files(*files)


def test_files_missing_png_is_named(tmp_path):
    _, segs = _toy()
    files = _write_set(tmp_path, [{"image_id": 1, "file_name": "x.png", "segments_info": segs}])
    with pytest.raises(
        EvaluationError, match=f"panoptic PNG not found: {tmp_path / 'pred' / 'x.png'}"
    ):
        evaluate_panoptic_files(*files)


def test_files_malformed_json_is_named(tmp_path):
    files = _write_set(tmp_path, [{"image_id": 1, "segments_info": []}])
    with pytest.raises(EvaluationError, match=r"pred\.json: annotation 0 has no file_name"):
        evaluate_panoptic_files(*files)
    gt = json.loads(files[0].read_text())
    gt["categories"].append(dict(CATS[0]))
    files[0].write_text(json.dumps(gt))
    with pytest.raises(EvaluationError, match=r"gt\.json: category id 1 is listed twice"):
        evaluate_panoptic_files(*files)
