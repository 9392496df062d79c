"""InstanceEvaluator against pycocotools COCOeval(segm) reference numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ovseg.evaluation import EvaluationError, InstanceEvaluator, evaluate_instance_files
from ovseg.evaluation.instance import STAT_NAMES

TOL = 1e-6

VARIANTS = [
    ("instances_gt.json", "detections.json", None),
    ("instances_gt_area_field_variant.json", "detections.json", "variant_gt_area_field"),
    ("instances_gt.json", "detections_with_bbox.json", "variant_det_bbox_field"),
]


@pytest.mark.parametrize("gt_name, det_name, variant", VARIANTS)
def test_fixture_stats(metrics_dir, gt_name, det_name, variant):
    d = metrics_dir / "instance"
    expected = json.loads((d / "expected.json").read_text())
    ref = expected[variant]["stats"] if variant else expected["stats"]
    result = evaluate_instance_files(d / gt_name, d / det_name)
    assert result["stats"] == pytest.approx(ref, abs=TOL)
    assert list(result["stats_named"]) == list(STAT_NAMES)
    assert result["num_detections"] == 188


def test_fixture_per_category(metrics_dir):
    d = metrics_dir / "instance"
    expected = json.loads((d / "expected.json").read_text())["per_category"]
    result = evaluate_instance_files(d / "instances_gt.json", d / "detections.json")
    assert set(result["per_category"]) == {int(k) for k in expected}
    for cid, ref in expected.items():
        for key in ("AP", "AP50", "AR100"):
            assert result["per_category"][int(cid)][key] == pytest.approx(ref[key], abs=TOL)


# pycocotools.mask.decode trips numpy 2's __array__(copy=...) deprecation; harmless here.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dense_masks_equal_rle_input(metrics_dir):
    """process_masks (decoded masks) gives the same stats as the RLE results file."""
    d = metrics_dir / "instance"
    dets = json.loads((d / "detections.json").read_text())
    ev = InstanceEvaluator(d / "instances_gt.json")
    by_image: dict[int, list] = {}
    for det in dets:
        by_image.setdefault(det["image_id"], []).append(det)
    for image_id, image_dets in by_image.items():
        masks = np.stack([mask_utils.decode(x["segmentation"]).astype(bool) for x in image_dets])
        ev.process_masks(
            image_id,
            masks,
            [x["score"] for x in image_dets],
            [x["category_id"] for x in image_dets],
        )
    ref = json.loads((d / "expected.json").read_text())["stats"]
    assert ev.evaluate()["stats"] == pytest.approx(ref, abs=TOL)


def _toy_gt():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    return {
        "images": [{"id": 1, "file_name": "1.jpg", "height": 8, "width": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": rle,
                         "bbox": [2, 2, 4, 4]}],  # no area / iscrowd: filled in
        "categories": [{"id": 3, "name": "car"}],
    }, mask  # fmt: skip


def test_perfect_and_empty_detections():
    gt, mask = _toy_gt()
    ev = InstanceEvaluator(gt)
    ev.process_masks(1, mask[None].astype(bool), [0.9], [3])
    stats = ev.evaluate()["stats"]
    # one small GT found exactly: AP/AR 1 where the bucket has GT, -1 (no GT) for medium/large
    assert stats == pytest.approx([1, 1, 1, 1, -1, -1, 1, 1, 1, 1, -1, -1])
    ev.reset()
    empty = ev.evaluate()
    assert empty["num_detections"] == 0
    assert empty["stats"] == pytest.approx([0, 0, 0, 0, -1, -1, 0, 0, 0, 0, -1, -1])


def test_bad_detections():
    gt, mask = _toy_gt()
    ev = InstanceEvaluator(gt)
    with pytest.raises(EvaluationError, match="image_id 7 is not in the ground truth"):
        ev.process(7, [])
    with pytest.raises(EvaluationError, match=r"category_id 5, which is not among .*\[3\]"):
        ev.process_masks(1, mask[None].astype(bool), [0.5], [5])
    with pytest.raises(
        EvaluationError, match=r"size mismatch in image 1: .*4x4 but the image is 8x8"
    ):
        ev.process_masks(1, np.ones((1, 4, 4), bool), [0.5], [3])
    # Issue 18, case 12: a NaN score would scramble COCOeval's ranking silently
    with pytest.raises(EvaluationError, match="detection 0 of image 1 has score nan"):
        ev.process_masks(1, mask[None].astype(bool), [float("nan")], [3])
    with pytest.raises(EvaluationError, match="has no numeric score"):
        ev.process(1, [{"category_id": 3, "segmentation": mask.astype(bool), "score": "x"}])
    ev.process(1, [])
    with pytest.raises(EvaluationError, match="image 1 was processed twice"):
        ev.process(1, [])


def test_files_errors(tmp_path):
    gt, _ = _toy_gt()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with pytest.raises(EvaluationError, match=f"prediction json not found: {tmp_path / 'no.json'}"):
        evaluate_instance_files(tmp_path / "gt.json", tmp_path / "no.json")
    det = {"image_id": 9, "category_id": 3, "score": 0.3}
    det["segmentation"] = gt["annotations"][0]["segmentation"]
    (tmp_path / "dt.json").write_text(json.dumps([det]))
    with pytest.raises(EvaluationError, match=r"image id\(s\) 9 that are not in"):
        evaluate_instance_files(tmp_path / "gt.json", tmp_path / "dt.json")
    (tmp_path / "empty.json").write_text("[]")
    r = evaluate_instance_files(tmp_path / "gt.json", tmp_path / "empty.json")
    assert r["stats"][0] == 0.0
