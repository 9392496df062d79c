"""``tools/export.py`` / ``ovseg-export``: main([...]) on the tiny config; bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from ovseg import Segmenter  # noqa: E402
from ovseg.cli.export import main  # noqa: E402

CONFIG = "configs/tests/fcclip_tiny.yaml"


def test_export_then_predict(tmp_path, capsys):
    out = tmp_path / "exp"
    assert main([CONFIG, "--size", "224x224", "--out", str(out)]) == 0
    assert "image graph(s) 224x224" in capsys.readouterr().out
    meta = json.loads((out / "ovseg_export.json").read_text())
    assert [g["size"] for g in meta["image_graphs"]] == [[224, 224]]
    seg = Segmenter.from_pretrained(out)
    pred = seg.predict(np.zeros((200, 200, 3), np.uint8), "cat; grass [stuff]", task="panoptic")
    assert pred.panoptic_seg.shape == (200, 200)


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
