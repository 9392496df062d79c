"""OVCamo metrics against the official evaluator's numbers (fixtures/ovcamo_metrics) and the
bad-input lines of ``python -m ovseg.evaluation ovcamo``."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from ovseg.evaluation import cli
from ovseg.evaluation.errors import EvaluationError
from ovseg.evaluation.ovcamo import (
    METRIC_KEYS,
    OVCamoEvaluator,
    evaluate_ovcamo,
    load_ovcamo_info,
    parse_prediction_name,
)

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "ovcamo_metrics"


@pytest.fixture
def ovcamo_dir() -> Path:
    if not (FIXTURE / "expected.json").is_file():
        pytest.skip(f"OVCamo fixture not found at {FIXTURE}")
    return FIXTURE


@pytest.mark.parametrize(
    "pred_dir, key", [("predictions", "official"), ("predictions_mixed_res", "mixed_res_resized")]
)
def test_matches_official_evaluator(ovcamo_dir, pred_dir, key):
    expected = json.loads((ovcamo_dir / "expected.json").read_text())[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_ovcamo(ovcamo_dir / "splitted_ovcamo.yaml", ovcamo_dir / pred_dir)
    assert result["num_evaluated"] == expected["num_evaluated"] == 30
    assert set(result["metrics"]) == set(METRIC_KEYS) == set(expected["raw"])
    for k, v in expected["raw"].items():
        assert result["metrics"][k] == pytest.approx(v, abs=1e-9), k
    # e.g. official sm 0.5448045845290069, maxem 0.61373..., mixed-res sm 0.5450494417585002
    for name, row in expected["per_image"].items():
        for k in ("sm", "wfm", "mae", "adpfm", "adpem", "adpiou"):
            assert result["per_image"][name][k] == pytest.approx(row[k], abs=1e-9), (name, k)
    for k in ("fm", "em", "iou"):
        ref = expected["mean_curves"].get(k) or expected["mean_curves"].get(f"{k}_curve")
        if ref is not None:
            np.testing.assert_allclose(result["mean_curves"][k], ref, atol=1e-9)
    assert len(result["resized"]) == (6 if key == "mixed_res_resized" else 0)


def test_wrong_class_gets_worst_values():
    ev = OVCamoEvaluator()
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    pred = (gt * 255).astype(np.uint8)
    good = ev.step(pred, gt, "crab", "crab")
    bad = ev.step(pred, gt, "Crab", "crab")  # exact, case-sensitive compare
    assert good["sm"] == pytest.approx(1.0) and good["mae"] == 0.0
    assert (bad["sm"], bad["wfm"], bad["mae"], bad["adpiou"]) == (0.0, 0.0, 1.0, 0.0)
    assert bad["fm_curve_max"] == bad["em_curve_max"] == bad["iou_curve_max"] == 0.0
    assert ev.results()["mae"] == pytest.approx(0.5)


def test_cli_prints_and_writes_json(ovcamo_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative yaml paths resolve beside the yaml too
    out = tmp_path / "m.json"
    rc = cli.main(
        ["ovcamo", "--info", str(ovcamo_dir / "splitted_ovcamo.yaml"),
         "--pred-dir", str(ovcamo_dir / "predictions"), "--json", str(out)]
    )  # fmt: skip
    assert rc == 0
    got = json.loads(out.read_text())["metrics"]
    assert got["sm"] == pytest.approx(0.5448045845290069, abs=1e-9)
    text = capsys.readouterr()
    assert "sm 0.545" in text.out and "not one of the 8 OVCamo test classes" in text.err


def _copy(ovcamo_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ovc"
    shutil.copytree(ovcamo_dir, dst)
    return dst


def _one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ovseg.evaluation ovcamo: error:")
    return err


def test_bad_inputs_one_line(ovcamo_dir, tmp_path, capsys):
    d = _copy(ovcamo_dir, tmp_path)
    yaml_path = d / "splitted_ovcamo.yaml"
    argv = ["ovcamo", "--info", str(yaml_path), "--pred-dir", str(d / "predictions")]
    # missing yaml key
    text = yaml_path.read_text()
    yaml_path.write_text("\n".join(x for x in text.splitlines() if "CLASS_JSON" not in x) + "\n")
    err = _one_line_error(capsys, argv)
    assert "splitted_ovcamo.yaml" in err and "OVCamo_CLASS_JSON_PATH" in err
    yaml_path.write_text(text)
    # unknown class with --strict-classes
    err = _one_line_error(capsys, [*argv, "--strict-classes"])
    assert "[Leaf-Tailed Gecko]ovc_te_0009.png" in err or "ovc_te_00" in err
    # prediction for a mask not in the test set
    (d / "predictions" / "[crab]nope.png").write_bytes(
        (d / "predictions" / "[crab]ovc_te_0001.png").read_bytes()
    )
    err = _one_line_error(capsys, argv)
    assert "[crab]nope.png" in err
    (d / "predictions" / "[crab]nope.png").unlink()
    # unreadable GT mask
    (d / "dataset" / "test" / "mask" / "ovc_te_0001.png").write_bytes(b"not a png")
    err = _one_line_error(capsys, argv)
    assert "ovc_te_0001.png" in err and "cannot read mask file" in err
    # a name without [<class>]
    with pytest.raises(EvaluationError, match="ovc_te_0001.png"):
        parse_prediction_name("ovc_te_0001.png")


def test_missing_prediction_is_warned(ovcamo_dir, tmp_path):
    d = _copy(ovcamo_dir, tmp_path)
    (d / "predictions" / "[crab]ovc_te_0001.png").unlink()
    with pytest.warns(UserWarning, match="1 of 30 OVCamo test masks have no prediction"):
        r = evaluate_ovcamo(d / "splitted_ovcamo.yaml", d / "predictions")
    assert r["missing"] == ["ovc_te_0001.png"] and r["num_evaluated"] == 29


def test_info_lists_classes(ovcamo_dir):
    info = load_ovcamo_info(ovcamo_dir / "splitted_ovcamo.yaml")
    assert len(info.test_classes) == 8 and len(info.test_samples) == 30
