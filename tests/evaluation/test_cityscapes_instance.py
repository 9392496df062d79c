"""CityscapesInstanceEvaluator against the official cityscapesscripts evaluator, run on the same
files (synthetic ground truth and predictions in the official formats)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.evaluation import EvaluationError
from ovseg.evaluation.cityscapes_instance import (
    GT_SUFFIX,
    CityscapesInstanceEvaluator,
    evaluate_cityscapes_instance_dirs,
    read_cityscapes_predictions,
    write_cityscapes_predictions,
)

H, W = 48, 64
THINGS = (24, 25, 26, 27, 28, 31, 32, 33)


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[np.ndarray, int, float]]]:
    """One instanceIds image and its predictions, covering the official rules' corner cases:
    void labels, group regions, caravan instances (ignored class), instances below 100 pixels,
    duplicates, tied and repeated scores, predictions of unscored classes and empty masks."""
    gt = rng.choice([7, 8, 21, 0, 4, 9], size=(H // 8, W // 8)).repeat(8, 0).repeat(8, 1)
    gt = gt.astype(np.int32)
    n_inst = {c: 0 for c in (*THINGS, 29)}
    for _ in range(rng.integers(3, 9)):
        label = int(rng.choice([*THINGS, 26, 26, 24, 29]))
        h, w = int(rng.integers(4, 24)), int(rng.integers(4, 30))
        y, x = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
        if rng.random() < 0.2:
            gt[y : y + h, x : x + w] = label  # a group region (crowd)
        else:
            n_inst[label] += 1
            gt[y : y + h, x : x + w] = label * 1000 + n_inst[label]
    preds: list[tuple[np.ndarray, int, float]] = []
    score_pool = [0.9, 0.5, 0.5, 0.3]
    for value in np.unique(gt):
        label = value // 1000 if value >= 1000 else value
        if label not in (*THINGS, 29) or rng.random() < 0.15:
            continue
        mask = gt == value
        for _ in range(int(rng.choice([1, 1, 2]))):  # sometimes a duplicate
            m = np.roll(mask, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), (0, 1))
            if rng.random() < 0.3:
                m = m | np.roll(m, int(rng.integers(1, 6)), 1)
            plabel = label if rng.random() < 0.85 else int(rng.choice(THINGS))
            score = float(rng.choice(score_pool)) if rng.random() < 0.3 else float(rng.random())
            preds.append((m, int(plabel), score))
    for _ in range(rng.integers(0, 4)):  # false positives anywhere, some on void
        h, w = int(rng.integers(3, 20)), int(rng.integers(3, 20))
        y, x = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
        m = np.zeros((H, W), dtype=bool)
        m[y : y + h, x : x + w] = True
        preds.append((m, int(rng.choice([*THINGS, 7, 29])), float(rng.random())))
    if rng.random() < 0.3:
        preds.append((np.zeros((H, W), dtype=bool), 26, 0.7))
    return gt, preds


def _write_set(root: Path, seed: int, n_images: int = 12) -> tuple[Path, Path, list]:
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = root / "gtFine" / "val" / "testcity", root / "results"
    gt_dir.mkdir(parents=True)
    scenes = []
    for i in range(n_images):
        gt, preds = _scene(rng)
        frame = f"testcity_{i:06d}_000019"
        Image.fromarray(gt.astype(np.uint16)).save(gt_dir / f"{frame}{GT_SUFFIX}")
        masks = np.stack([m for m, _, _ in preds]) if preds else np.zeros((0, H, W), bool)
        write_cityscapes_predictions(pred_dir, frame, masks, [p[1] for p in preds],
                                     [p[2] for p in preds])  # fmt: skip
        scenes.append((frame, gt, masks, [p[1] for p in preds], [p[2] for p in preds]))
    return gt_dir.parent, pred_dir, scenes


def _official(gt_root: Path, pred_dir: Path, tmp_path: Path, monkeypatch) -> dict:
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling")
    monkeypatch.chdir(tmp_path)  # the official tool writes matches.json into the working folder
    if not hasattr(np, "in1d"):  # removed in numpy 2.4; the official tool still calls it
        monkeypatch.setattr(np, "in1d", lambda a, b: np.isin(np.ravel(a), b), raising=False)
    # Its debug dump of the matches fails on numpy scalars under numpy 2: same dump, numpy-aware.
    monkeypatch.setattr(ev, "writeDict2JSON", _write_json_numpy_aware)
    for key, value in {
        "predictionPath": str(pred_dir.resolve()),
        "predictionWalk": None,
        "gtInstancesFile": str(tmp_path / "gtInstances.json"),
        "JSONOutput": False,
        "quiet": True,
        "colorized": False,
        "distanceAvailable": False,
    }.items():
        monkeypatch.setattr(ev.args, key, value, raising=False)
    gts = sorted(str(p) for p in gt_root.rglob(f"*{GT_SUFFIX}"))
    preds = [ev.getPrediction(g, ev.args) for g in gts]
    return ev.evaluateImgLists(preds, gts, ev.args)


def _write_json_numpy_aware(obj, path) -> None:
    def default(o):
        return o.item() if hasattr(o, "item") else o.__dict__

    Path(path).write_text(json.dumps(obj, default=default, sort_keys=True, indent=4))


def _same(a, b) -> bool:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return abs(a - b) <= 1e-12


@pytest.mark.parametrize("seed", range(6))
def test_equals_official_cityscapesscripts(tmp_path, monkeypatch, seed):
    gt_root, pred_dir, scenes = _write_set(tmp_path / "data", seed)
    official = _official(gt_root, pred_dir, tmp_path, monkeypatch)
    ours_files = evaluate_cityscapes_instance_dirs(gt_root, pred_dir)
    ev = CityscapesInstanceEvaluator()
    for frame, gt, masks, labels, scores in scenes:
        ev.process(frame, gt, masks, labels, scores)
    ours = ev.evaluate()
    for result in (ours, ours_files):
        ref = np.asarray(official["resultApMatrix"], dtype=float)
        got = np.asarray(result["resultApMatrix"], dtype=float)
        assert got.shape == ref.shape == (1, 8, 10)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12, equal_nan=True)
        avg, ref_avg = result["averages"], official["averages"]
        assert _same(avg["allAp"], ref_avg["allAp"]) and _same(avg["allAp50%"], ref_avg["allAp50%"])
        for name, v in ref_avg["classes"].items():
            assert _same(avg["classes"][name]["ap"], v["ap"])
            assert _same(avg["classes"][name]["ap50%"], v["ap50%"])
        assert result["instLabels"] == official["instLabels"]
    # the scenes are not degenerate: some classes are scored, some AP is neither 0 nor 1
    aps = np.asarray(ours["resultApMatrix"], dtype=float)[0]
    assert np.isfinite(aps).any() and ((aps > 0.01) & (aps < 0.99)).any()


def test_perfect_and_empty_predictions():
    gt = np.full((H, W), 7, dtype=np.int32)
    gt[2:20, 2:20] = 26001  # 324 px car
    gt[25:40, 30:50] = 24001  # 300 px person
    gt[40:45, 0:5] = 26002  # 25 px car: too small to be scored
    masks = np.stack([gt == 26001, gt == 24001])
    ev = CityscapesInstanceEvaluator()
    ev.process("a", gt, masks, [26, 24], [0.9, 0.8])
    r = ev.evaluate()
    assert r["averages"]["classes"]["car"]["ap"] == pytest.approx(1.0)
    assert r["averages"]["classes"]["person"]["ap"] == pytest.approx(1.0)
    assert r["averages"]["classes"]["bus"]["ap"] is None or math.isnan(
        r["averages"]["classes"]["bus"]["ap"]
    )
    assert r["averages"]["allAp"] == pytest.approx(1.0)  # classes without ground truth left out
    ev = CityscapesInstanceEvaluator()
    ev.process("a", gt, np.zeros((0, H, W), bool), [], [])
    r = ev.evaluate()
    assert r["averages"]["allAp"] == 0.0  # ground truth but no prediction: 0, not a crash
    assert CityscapesInstanceEvaluator().evaluate()["num_images"] == 0


def test_prediction_mostly_on_void_is_ignored_not_false_positive():
    gt = np.full((H, W), 7, dtype=np.int32)
    gt[0:20, 0:20] = 26001
    gt[30:48, 40:64] = 4  # 'static': void in evaluation
    on_void = np.zeros((H, W), bool)
    on_void[30:48, 40:64] = True
    good = gt == 26001
    ev = CityscapesInstanceEvaluator()
    ev.process("a", gt, np.stack([good, on_void]), [26, 26], [0.5, 0.9])
    assert ev.evaluate()["averages"]["classes"]["car"]["ap"] == pytest.approx(1.0)
    on_road = np.roll(on_void, -30, 1)  # same size, on a scored label: a false positive first
    ev = CityscapesInstanceEvaluator()
    ev.process("a", gt, np.stack([good, on_road]), [26, 26], [0.5, 0.9])
    assert ev.evaluate()["averages"]["classes"]["car"]["ap"] < 0.75


def test_bad_input_is_named(tmp_path):
    ev = CityscapesInstanceEvaluator()
    gt = np.zeros((H, W), np.int32)
    with pytest.raises(EvaluationError, match="size mismatch"):
        ev.process("a", gt, np.zeros((1, H + 1, W), bool), [26], [0.5])
    ev.process("a", gt, np.zeros((0, H, W), bool), [], [])
    with pytest.raises(EvaluationError, match="processed twice"):
        ev.process("a", gt, np.zeros((0, H, W), bool), [], [])
    gt_root, pred_dir, _ = _write_set(tmp_path / "data", 0, n_images=3)
    (pred_dir / "testcity_000001_000019_pred.txt").unlink()
    with pytest.raises(EvaluationError, match="testcity_000001_000019"):
        evaluate_cityscapes_instance_dirs(gt_root, pred_dir)
    bad = pred_dir / "testcity_000001_000019_pred.txt"
    bad.write_text("mask.png 26\n")
    with pytest.raises(EvaluationError, match=r"_pred.txt:1: expected"):
        read_cityscapes_predictions(bad)


def test_command_line(tmp_path, capsys):
    from ovseg.evaluation.cli import main

    gt_root, pred_dir, scenes = _write_set(tmp_path / "data", 3, n_images=4)
    out = tmp_path / "cs.json"
    argv = ["cityscapes-instance", "--gt-dir", str(gt_root), "--pred-dir", str(pred_dir)]
    assert main([*argv, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "average" in table and "car" in table
    written = json.loads(out.read_text())
    ev = CityscapesInstanceEvaluator()
    for frame, gt, masks, labels, scores in scenes:
        ev.process(frame, gt, masks, labels, scores)
    ref = ev.evaluate()["averages"]["allAp"]
    assert written["averages"]["allAp"] == pytest.approx(ref, abs=1e-12)
    assert main(["cityscapes-instance", "--gt-dir", str(gt_root), "--pred-dir", "nowhere"]) == 1
    assert "prediction folder not found: nowhere" in capsys.readouterr().err
    assert (
        main(["cityscapes-instance", "--gt-dir", str(pred_dir), "--pred-dir", str(pred_dir)]) == 1
    )
    assert "no *_gtFine_instanceIds.png files under" in capsys.readouterr().err
