"""tools/train.py with GKC on (ovseg/configs/tests/fcclip_tiny_train_gkc.yaml): a run SIGKILLed
mid-training resumes to the straight run's weights bitwise, the synonym draws included."""

from __future__ import annotations

import json

import numpy as np
import torch
from ovseg_testing import REPO
from test_train_cli import run, straight_and_resumed, synth  # noqa: F401 (synth: a fixture)

from ovseg import Segmenter

CFG = str(REPO / "ovseg/configs/tests/fcclip_tiny_train_gkc.yaml")


def test_gkc_resumes_exactly_after_a_kill(tmp_path, synth):  # noqa: F811
    """SIGKILLed during step 5 (after the step-4 checkpoint), resumed: bitwise equal to a
    straight run (the projection, the structure scale and the draw counter included), with the
    same GKC losses at steps 5 and 6."""
    vocab = f"data.train.vocabulary={synth}/annotations/synthetic_vocabulary.txt"
    common = [vocab, "schedule.max_iter=6", "schedule.checkpoint_period=2", "schedule.log_period=1"]
    straight, resumed = straight_and_resumed(tmp_path, synth, CFG, common)
    a = torch.load(straight / "model_final.pth", weights_only=True)["model"]
    b = torch.load(resumed / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"weights differ at {k}"
    assert int(a["criterion.draw_step"]) == 6
    first = torch.load(straight / "checkpoint_0000004.pth", weights_only=True)["model"]
    assert not torch.equal(
        first["criterion.distill_proj.weight"], a["criterion.distill_proj.weight"]
    )

    def losses(wd):
        rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
        return {r["iteration"]: r for r in rows if "total_loss" in r}

    la, lb = losses(straight), losses(resumed)
    for i in (5, 6):
        for key in ("total_loss", "loss_gkc_ce", "loss_gkc_distill", "loss_gkc_structure"):
            assert la[i][key] == lb[i][key], (i, key)
    seg = Segmenter.from_pretrained(straight / "model_final.pth")
    pred = seg.predict(np.zeros((96, 96, 3), np.uint8), "zebra; kite; grass [stuff]", task="all")
    assert pred.panoptic_seg.shape == (96, 96)


def test_gkc_with_one_row_per_class_is_one_line_naming_the_keys(tmp_path, synth, capsys):  # noqa: F811
    vocab = f"data.train.vocabulary={synth}/annotations/synthetic_vocabulary.txt"
    code = run(tmp_path / "mean", synth, vocab, "model.text.synonym_combination=mean", cfg=CFG)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "error: model.loss.gkc needs one text-classifier row per synonym (14); the text encoder "
        "gives 6 (use model.text.synonym_combination=max and no class descriptions)"
    )
