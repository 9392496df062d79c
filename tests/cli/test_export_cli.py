"""``tools/export.py`` / ``ovseg-export``: main([...]) on the tiny config; bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from ovseg import Segmenter  # noqa: E402
from ovseg.cli.export import main  # noqa: E402
from ovseg.cli.test import main as evaluate_main  # noqa: E402
from ovseg.data import make_synthetic_coco_panoptic  # noqa: E402

CONFIG = "configs/tests/fcclip_tiny.yaml"
SMALL = ["model.test.min_size=64", "model.test.max_size=96"]


def test_export_then_predict_and_evaluate(tmp_path, capsys):
    """Export, then the folder runs in the Python API and as tools/test.py's --weights."""
    out = tmp_path / "exp"
    assert main([CONFIG, "--size", "64x96", "--out", str(out), *SMALL]) == 0
    assert "image graph(s) 64x96" in capsys.readouterr().out
    meta = json.loads((out / "ovseg_export.json").read_text())
    assert [g["size"] for g in meta["image_graphs"]] == [[64, 96]]
    assert meta["test_size"] == {"min_size": 64, "max_size": 96}
    seg = Segmenter.from_pretrained(out)
    pred = seg.predict(np.zeros((48, 64, 3), np.uint8), "cat; grass [stuff]", task="panoptic")
    assert pred.panoptic_seg.shape == (48, 64)

    syn = make_synthetic_coco_panoptic(tmp_path / "coco", num_images=2, size=(48, 64))
    data = [
        "data.test.type=coco_panoptic",
        f"data.test.image_root={syn.image_root}",
        f"data.test.panoptic_json={syn.panoptic_json}",
        f"data.test.panoptic_root={syn.panoptic_root}",
    ]
    res = tmp_path / "res"
    argv = [CONFIG, "--weights", str(out), "--out", str(res), "--task", "semantic", "--no-progress"]
    assert evaluate_main([*argv, *data]) == 0
    metrics = json.loads((res / "metrics.json").read_text())
    assert metrics["semantic"]["num_images"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "100x224"], "multiples of 32"),
        (["--size", "abc"], None),
        (["--opset", "16"], "opset >= 18"),
    ],
)
def test_bad_arguments(tmp_path, capsys, args, message):
    argv = [CONFIG, "--output", str(tmp_path / "x"), *args]
    if message is None:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "expected HxW" in capsys.readouterr().err
        return
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
