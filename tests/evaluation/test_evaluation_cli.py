"""``python -m ovseg.evaluation`` through ``main([...])``: tables, --out JSON, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ovseg.evaluation.cli import main

TOL = 1e-6


def test_semantic_out_json(metrics_dir, tmp_path, capsys):
    root = metrics_dir / "semantic"
    e = json.loads((root / "expected.json").read_text())["cases"]["c150_reduce_zero_label"]
    out = tmp_path / "sem.json"
    rc = main([
        "semantic", "--gt-dir", str(root / e["gt_dir"]), "--pred-dir", str(root / e["pred_dir"]),
        "--num-classes", "150", "--reduce-zero-label", "--convention", "detectron2",
        "--vocabulary", "ade20k-150", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "detectron2 convention, 12 images" in printed and "windowpane" in printed
    data = json.loads(out.read_text())
    assert set(data["summary_percent"]) == {"aAcc", "mIoU", "mAcc", "fwIoU"}
    assert set(data["per_class_percent"]) == {"IoU", "Acc"}
    d2 = e["detectron2_SemSegEvaluator"]
    assert data["summary_percent"]["mIoU"] == pytest.approx(d2["mIoU"], abs=TOL)
    assert data["summary_percent"]["fwIoU"] == pytest.approx(d2["fwIoU"], abs=TOL)
    assert data["per_class_percent"]["IoU"] == [
        None if v is None else pytest.approx(v, abs=TOL) for v in d2["per_class_IoU"]
    ]
    assert len(data["class_names"]) == 150


def test_panoptic_out_json(metrics_dir, tmp_path, capsys):
    d = metrics_dir / "panoptic"
    out = tmp_path / "pq.json"
    rc = main([
        "panoptic", "--gt-json", str(d / "panoptic_gt.json"), "--gt-dir", str(d / "panoptic_gt"),
        "--pred-json", str(d / "panoptic_pred.json"), "--pred-dir", str(d / "panoptic_pred"),
        "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    assert "All       |  57.90  79.22  67.66    12" in capsys.readouterr().out
    data = json.loads(out.read_text())
    ref = json.loads((d / "expected.json").read_text())
    for group in ("All", "Things", "Stuff"):
        assert set(data["summary"][group]) == {"pq", "sq", "rq", "n"}
        assert data["summary"][group]["pq"] == pytest.approx(ref["summary"][group]["pq"], abs=TOL)
    assert set(data["per_class"]) == set(ref["per_class"])  # category ids as JSON keys
    assert set(data["per_class"]["1"]) == {"pq", "sq", "rq", "tp", "fp", "fn"}


def test_instance_out_json(metrics_dir, tmp_path, capsys):
    d = metrics_dir / "instance"
    out = tmp_path / "ap.json"
    rc = main([
        "instance", "--gt-json", str(d / "instances_gt.json"),
        "--pred-json", str(d / "detections_with_bbox.json"), "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    assert "maxDets=100 ] = 0.279" in capsys.readouterr().out
    ref = json.loads((d / "expected.json").read_text())["variant_det_bbox_field"]["stats"]
    assert json.loads(out.read_text())["stats"] == pytest.approx(ref, abs=TOL)


def _labels(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint8)).save(path)


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing_dir", "ground-truth folder not found: {tmp}/nope"),
        (
            "bad_value",
            "ground-truth label value(s) 40 in {tmp}/gt/a.png outside the class range 0..2",
        ),
        ("unpaired", "1 ground-truth file(s) without a prediction: b.png"),
        (
            "size",
            "image size mismatch in {tmp}/pred/a.png: prediction is 1x3 but ground truth is 1x2",
        ),
    ],
)
def test_semantic_bad_input_is_one_line(tmp_path, capsys, setup, message):
    gt_dir = tmp_path / ("nope" if setup == "missing_dir" else "gt")
    _labels(tmp_path / "gt" / "a.png", [[0, 40 if setup == "bad_value" else 1]])
    _labels(tmp_path / "pred" / "a.png", [[0, 1, 2]] if setup == "size" else [[0, 1]])
    if setup == "unpaired":
        _labels(tmp_path / "gt" / "b.png", [[0, 1]])
    out = tmp_path / "m.json"
    rc = main(["semantic", "--gt-dir", str(gt_dir), "--pred-dir", str(tmp_path / "pred"),
               "--num-classes", "3", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.count("\n") == 0 and err.startswith("ovseg.evaluation semantic: error: ")
    assert message.format(tmp=tmp_path) in err
    assert not out.exists()


def test_semantic_empty_prediction_set_writes_nulls(tmp_path, capsys):
    _labels(tmp_path / "gt" / "a.png", [[0, 1]])
    (tmp_path / "pred").mkdir()
    out = tmp_path / "m.json"
    rc = main(["semantic", "--gt-dir", str(tmp_path / "gt"), "--pred-dir", str(tmp_path / "pred"),
               "--num-classes", "3", "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert "no predictions" in capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["summary_percent"] == {"aAcc": None, "mIoU": None, "mAcc": None, "fwIoU": None}
    assert data["num_images"] == 0


def test_instance_missing_file_is_one_line(tmp_path, capsys):
    rc = main(["instance", "--gt-json", str(tmp_path / "gt.json"), "--pred-json", "x.json"])
    assert rc == 1
    assert capsys.readouterr().err.strip() == (
        f"ovseg.evaluation instance: error: ground-truth json not found: {tmp_path / 'gt.json'}"
    )


def test_module_entry_point_exit_status(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ovseg.evaluation", "panoptic",
         "--gt-json", str(tmp_path / "g.json"), "--gt-dir", str(tmp_path),
         "--pred-json", "p.json", "--pred-dir", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"ovseg.evaluation panoptic: error: ground-truth json not found: {tmp_path / 'g.json'}"
    )


def test_semantic_vocabulary_errors_are_one_line(metrics_dir, tmp_path, capsys):
    root = metrics_dir / "semantic"
    e = json.loads((root / "expected.json").read_text())["cases"]["c150_reduce_zero_label"]
    argv = ["semantic", "--gt-dir", str(root / e["gt_dir"]), "--pred-dir",
            str(root / e["pred_dir"]), "--num-classes", "150", "--vocabulary"]  # fmt: skip
    bad = tmp_path / "classes.json"
    bad.write_text("{not json")
    assert main([*argv, str(bad)]) == 1
    assert f"{bad}: not valid JSON" in capsys.readouterr().err
    assert main([*argv, "ade20k-15"]) == 1
    assert "neither a file nor a built-in vocabulary" in capsys.readouterr().err
    assert main([*argv, "pascal-voc-21"]) == 1
    assert "has 21 classes but --num-classes is 150" in capsys.readouterr().err
