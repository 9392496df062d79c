"""tools/test.py's main([...]) end to end on the tiny config: a config dataset (task all, exports
cross-checked with the offline evaluators), a benchmark via --dataset, the --suite table, and the
one-line errors for missing weights and data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.cli.test import SUITE_COLUMNS, main, resolve_test_size
from ovseg.data import make_synthetic_coco_panoptic
from ovseg.data.benchmarks import load_benchmark
from ovseg.evaluation import (
    evaluate_instance_files,
    evaluate_panoptic_files,
    evaluate_semantic_dirs,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "ovseg" / "configs" / "tests" / "fcclip_tiny.yaml")
SMALL = ["model.test.min_size=64", "model.test.max_size=96"]


def _finite_percent(v) -> bool:
    return v is not None and math.isfinite(v) and 0.0 <= v <= 100.0


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    syn = make_synthetic_coco_panoptic(root, num_images=3, size=(48, 64), split="val2017")
    return syn, [
        "data.test.type=coco_panoptic",
        f"data.test.image_root={syn.image_root}",
        f"data.test.panoptic_json={syn.panoptic_json}",
        f"data.test.panoptic_root={syn.panoptic_root}",
    ]


def test_config_dataset_all_tasks(coco, tmp_path, capsys):
    syn, data = coco
    out = tmp_path / "out"
    argv = [TINY, "--out", str(out), "--save-predictions", "--visualize", "--no-progress",
            "--per-class", *SMALL, *data]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "RANDOMLY initialised" in captured.err
    assert "panoptic" in captured.out and "mIoU" in captured.out
    assert "circle" in captured.out and "Things" in captured.out  # per-class tables
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in captured.out

    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"semantic", "panoptic", "instance", "meta"}
    sem = m["semantic"]
    assert sem["convention"] == "detectron2" and sem["num_images"] == 3 and sem["num_classes"] == 6
    assert all(_finite_percent(sem["summary_percent"][k]) for k in ("aAcc", "mAcc", "fwIoU"))
    assert len(sem["per_class_percent"]["IoU"]) == 6
    pan = m["panoptic"]
    assert set(pan["summary"]) == {"All", "Things", "Stuff"} and pan["num_images"] == 3
    assert set(pan["per_class"]) == {"1", "2", "3", "21", "22", "23"}  # dataset ids
    assert all(0.0 <= pan["summary"][k]["pq"] <= 1.0 for k in ("All", "Things", "Stuff"))
    ins = m["instance"]
    assert len(ins["stats"]) == 12 and ins["num_images"] == 3
    assert all(-1.0 <= v <= 1.0 for v in ins["stats"])
    meta = m["meta"]
    assert meta["test_size"] == [64, 96] and meta["num_images"] == 3
    assert meta["test_mode"] == "whole" and "crop_size" not in meta
    assert meta["weights"] is None and meta["config"] == TINY
    assert meta["seconds"] > 0 and meta["images_per_second"] > 0

    # the exported predictions re-evaluate offline to the same numbers
    pred = out / "predictions"
    offline = evaluate_panoptic_files(
        syn.panoptic_json, syn.panoptic_root, pred / "panoptic.json", pred / "panoptic"
    )
    assert offline["summary"] == pan["summary"]
    inst = evaluate_instance_files(pred / "instances_gt.json", pred / "instances_results.json")
    assert inst["stats"] == ins["stats"]
    labels = np.asarray(Image.open(pred / "semantic" / "000000000001.png"))
    assert labels.shape == (48, 64) and labels.max() < 6
    overlays = sorted(p.name for p in (out / "visualizations").iterdir())
    assert len(overlays) == 9 and overlays[0] == "000000000001_instance.png"
    assert Image.open(out / "visualizations" / overlays[0]).height >= 48


def _voc(root: Path, n: int = 2) -> None:
    base = root / "pascal_voc_d2"
    for k in range(n):
        stem = f"2007_{k:06d}"
        img = base / "images" / "validation" / f"{stem}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 56, 3), 60 * k + 30, np.uint8)).save(img)
        label21 = np.zeros((40, 56), np.uint8)
        label21[10:30, 10 + k : 40] = 15  # person
        label21[0, :] = 255
        for folder, label in (
            ("annotations_pascal21", label21),
            (
                "annotations_pascal20",
                np.where(label21 % 255 == 0, 255, label21 - 1).astype(np.uint8),
            ),
        ):
            path = base / folder / "validation" / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label).save(path)


def test_benchmark_dataset_and_suite(tmp_path, monkeypatch, capsys):
    _voc(tmp_path / "data")
    monkeypatch.setenv("OVSEG_DATA", str(tmp_path / "data"))
    out = tmp_path / "voc"
    argv = [TINY, "--dataset", "pascal-voc-21", "--out", str(out), "--no-progress", *SMALL]
    assert main([*argv, "--save-predictions"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # the exported label maps re-evaluate offline (python -m ovseg.evaluation semantic) the same
    offline = evaluate_semantic_dirs(
        tmp_path / "data/pascal_voc_d2/annotations_pascal21/validation",
        out / "predictions" / "semantic",
        21,
        convention="detectron2",
    )
    assert offline["summary_percent"] == m["semantic"]["summary_percent"]
    assert set(m) == {"semantic", "meta"}
    assert m["meta"]["dataset"] == "pascal-voc-21" and m["meta"]["test_size"] == [64, 96]
    assert m["semantic"]["num_classes"] == 21 and m["semantic"]["num_images"] == 2
    iou = m["semantic"]["per_class_percent"]["IoU"]
    # detectron2 convention: only background (0) and person (15) have ground truth
    assert [i for i, v in enumerate(iou) if v is not None] == [0, 15]
    assert _finite_percent(m["semantic"]["summary_percent"]["mIoU"])

    # without a size override the benchmark's FC-CLIP test size is used
    bench = load_benchmark("pascal-voc-20")
    assert resolve_test_size(bench, (64, 96), overridden=False) == (800, 1333)
    assert resolve_test_size(bench, (64, 96), overridden=True) == (64, 96)

    # the suite: VOC 21 and 20 are prepared, every other benchmark is reported and skipped
    capsys.readouterr()
    suite = tmp_path / "suite"
    argv = [TINY, "--suite", "fcclip", "--out", str(suite), "--no-progress", *SMALL]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipping ade20k-150" in captured.err and "prepare_data.py" in captured.err
    s = json.loads((suite / "suite.json").read_text())
    expected_cols = [f"{label} {m}" for label, _, metrics in SUITE_COLUMNS for m in metrics]
    assert list(s["table"]) == expected_cols
    assert _finite_percent(s["table"]["PAS-21 mIoU"]) and _finite_percent(s["table"]["PAS-20 mIoU"])
    assert s["table"]["ADE20K PQ"] is None and s["table"]["COCO mIoU"] is None
    assert set(s["missing"]) == {n for _, n, _ in SUITE_COLUMNS} - {
        "pascal-voc-21",
        "pascal-voc-20",
    }
    assert (
        json.loads((suite / "pascal-voc-20" / "metrics.json").read_text())["semantic"][
            "num_classes"
        ]
        == 20
    )
    md = (suite / "suite.md").read_text().splitlines()
    assert md[0].startswith("| ADE20K PQ | ADE20K AP | ADE20K mIoU | A-847 mIoU")
    assert md[2].count("|") == len(expected_cols) + 1
    assert f"{s['table']['PAS-21 mIoU']:.1f}" in md[2]


def test_sliding_window_mode_is_recorded(tmp_path, monkeypatch, capsys):
    """``model.test.mode=slide`` from the command line: semantic only, recorded in ``meta``."""
    _voc(tmp_path / "data")
    monkeypatch.setenv("OVSEG_DATA", str(tmp_path / "data"))
    out = tmp_path / "slide"
    slide = ["model.test.mode=slide", "model.test.crop_size=[48,48]", "model.test.stride=[32,32]"]
    argv = [TINY, "--dataset", "pascal-voc-21", "--no-progress", *SMALL, *slide]
    assert main([*argv, "--task", "semantic", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "test size [64, 96], slide [48, 48] stride [32, 32]," in captured.out
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"semantic", "meta"} and m["semantic"]["num_images"] == 2
    assert _finite_percent(m["semantic"]["summary_percent"]["mIoU"])
    meta = m["meta"]
    assert meta["test_mode"] == "slide" and meta["test_size"] == [64, 96]
    assert meta["crop_size"] == [48, 48] and meta["stride"] == [32, 32]

    # other tasks (the default --task all) and bad settings: one line, exit 2, nothing run
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the random-weights warning
    assert err == (
        "test.py: error: model.test.mode=slide (sliding windows) computes the semantic task "
        "only; got --task all: ask for the semantic task, or use model.test.mode=whole"
    )
    assert main([*argv, "--task", "semantic", "model.test.stride=[64,32]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("test.py: error: model.test.stride [64, 32] must not exceed")


def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    assert main([TINY, "--weights", str(tmp_path / "nope.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"test.py: error: weights file not found: {tmp_path / 'nope.pth'}"

    monkeypatch.setenv("OVSEG_DATA", str(tmp_path / "empty"))
    assert main([TINY, "--dataset", "ade20k-150", *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ade20k-150" in err and "ADEChallengeData2016" in err and "prepare_data.py" in err

    assert main([TINY, "--dataset", "ade20k-15O"]) == 2
    assert "did you mean" in capsys.readouterr().err

    assert main([TINY, "--suite", "fcclip"]) == 2  # nothing prepared at all
    assert "no benchmark of the fcclip suite" in capsys.readouterr().err.splitlines()[-1]

    assert main([TINY, "--save-predictions"]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(coco, tmp_path, request):
    """``torchrun --nproc-per-node 2 tools/test.py`` (gloo) writes the single-process metrics."""
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("opt-in (about 25 s): run with -m slow")
    import os
    import subprocess
    import sys

    _, data = coco
    args = [TINY, "--no-progress", *SMALL, *data]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tools" / "test.py"), *args, "--out", str(tmp_path / "two")]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, cwd=tmp_path, capture_output=True, timeout=180)
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["meta"]["world_size"] == 2 and two["meta"]["num_images"] == 3
    for task in ("semantic", "panoptic", "instance"):
        assert two[task] == one[task], task


def test_descriptions_flag_is_checked_before_the_model_is_built(tmp_path, capsys):
    bad = tmp_path / "cupl.json"
    bad.write_text('{"cat": "not a list"}')
    assert main(["ovseg/configs/tests/fcclip_tiny.yaml", "--descriptions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--descriptions" in err and "key 'cat': expected a list" in err
