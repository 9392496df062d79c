"""tools/train.py with OneFormer's option: SIGKILLed mid-run and resumed, it ends bitwise equal
to a straight run (the task draws come from the samples' stream seeds, the contrastive
temperature and the task MLP are checkpointed), and the model then predicts new classes."""

from __future__ import annotations

import json

import numpy as np
import torch
from ovseg_testing import REPO
from test_train_cli import run, straight_and_resumed, synth  # noqa: F401 (synth: a fixture)

from ovseg import Segmenter

CFG = str(REPO / "ovseg/configs/tests/fcclip_tiny_train_oneformer.yaml")


def test_oneformer_option_resumes_exactly_after_a_kill_and_predicts_new_classes(tmp_path, synth):  # noqa: F811
    vocab = synth / "annotations" / "synthetic_vocabulary.txt"
    common = [
        "schedule.max_iter=6",
        "schedule.checkpoint_period=2",
        "schedule.log_period=1",
        f"data.train.vocabulary={vocab}",
    ]
    straight, resumed = straight_and_resumed(tmp_path, synth, CFG, common)
    a = torch.load(straight / "model_final.pth", weights_only=True)["model"]
    b = torch.load(resumed / "model_final.pth", weights_only=True)["model"]
    learned = [k for k in a if k.startswith("oneformer.")]
    assert {"oneformer.logit_scale", "oneformer.task_text"} <= set(learned)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"weights differ at {k}"
    first = torch.load(straight / "checkpoint_0000004.pth", weights_only=True)["model"]
    for k in ("oneformer.logit_scale", "oneformer.task_mlp.layers.0.weight"):
        assert not torch.equal(first[k], a[k]), f"{k} trains"
    assert torch.equal(first["oneformer.task_text"], a["oneformer.task_text"])  # frozen

    def losses(wd):
        rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
        return {
            r["iteration"]: (r["total_loss"], r["loss_contrastive"])
            for r in rows
            if "total_loss" in r
        }

    la, lb = losses(straight), losses(resumed)
    assert [la[i] for i in (5, 6)] == [lb[i] for i in (5, 6)]
    assert all(v[1] > 0 for v in la.values())
    seg = Segmenter.from_pretrained(straight / "model_final.pth")
    assert seg.model.oneformer.task_conditioning
    image = np.zeros((96, 96, 3), np.uint8)
    pred = seg.predict(image, "zebra; kite; grass [stuff]", task="all")
    assert pred.panoptic_seg.shape == (96, 96) and tuple(pred.sem_seg.shape) == (3, 96, 96)
    sem = seg.predict(image, "zebra; kite; grass [stuff]", task="semantic")
    assert not torch.equal(sem.sem_seg, pred.sem_seg)  # another task token, other scores
