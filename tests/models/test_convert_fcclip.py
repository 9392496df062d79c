"""tools/convert_fcclip.py: an official checkpoint becomes a self-contained ovseg checkpoint."""

from __future__ import annotations

import numpy as np
import torch
from ovseg_testing import REPO, fixture_dir

from ovseg import Segmenter, Vocabulary
from ovseg.cli.convert_fcclip import main


def test_convert_then_load_without_config(tmp_path):
    fx = fixture_dir("fcclip_tiny")
    out = tmp_path / "tiny_ovseg.pth"
    assert (
        main(
            [
                str(fx / "fcclip_tiny_a.pth"),
                "--config",
                str(REPO / "ovseg/configs/tests/fcclip_tiny.yaml"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert not any(k.startswith(("sem_seg_head.", "criterion.")) for k in ckpt["model"])
    assert any(k.startswith("backbone.clip_model.") for k in ckpt["model"]), (
        "random CLIP travels with the model"
    )
    seg = Segmenter.from_pretrained(out)
    import json

    classes = json.loads((fx / "vocabulary.json").read_text())["classes"]
    vocab = Vocabulary([c["name"] for c in classes], isthing=[c["isthing"] for c in classes])
    pred = seg.predict(fx / "image.png", vocab, task="panoptic")
    np.testing.assert_array_equal(pred.panoptic_seg.numpy(), np.load(fx / "panoptic_seg.npy"))


def test_convert_reports_bad_input(tmp_path, capsys):
    assert (
        main(
            [
                str(tmp_path / "missing.pth"),
                "--config",
                str(REPO / "ovseg/configs/tests/fcclip_tiny.yaml"),
                "--out",
                str(tmp_path / "o.pth"),
            ]
        )
        == 2
    )
    assert "missing.pth" in capsys.readouterr().err
