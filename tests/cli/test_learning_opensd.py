"""OpenSD's decoupled thing / stuff decoder (ovseg/configs/tests/fcclip_tiny_train_opensd.yaml)
through tools/train.py and tools/test.py: it learns the synthetic shapes (classes with synonyms)
and resumes bitwise exactly after a SIGKILL."""

from __future__ import annotations

import json

import numpy as np
import torch
from ovseg_testing import REPO
from test_learning import learn
from test_train_cli import run, straight_and_resumed, synth  # noqa: F401 (synth: a fixture)

from ovseg import Segmenter

CFG = REPO / "ovseg/configs/tests/fcclip_tiny_train_opensd.yaml"


def test_decoupled_decoder_learns_synthetic_shapes_with_synonyms(tmp_path):
    """Trained on the synonym vocabulary the synthetic set writes ("circle, circles, disc", ...):
    the plain config's bars. Measured: see docs/opensd.md."""
    cfg = tmp_path / "opensd_synonyms.yaml"
    vocab = tmp_path / "synthetic_coco" / "annotations" / "synthetic_vocabulary.txt"
    cfg.write_text(f"_base_: {CFG}\ndata:\n  train:\n    vocabulary: {vocab}\n")
    pq, miou = learn(tmp_path, str(cfg))
    assert pq > 40 and miou > 45, (pq, miou)


def test_decoupled_decoder_resumes_exactly_after_a_kill_and_predicts_new_classes(
    tmp_path,
    synth,  # noqa: F811
):
    """SIGKILLed during step 5 (after the step-4 checkpoint), resumed, the run ends bitwise
    equal to a straight run, the stuff queries' own layers included; the model then segments
    into a vocabulary it never saw."""

    cfg = str(CFG)
    common = [
        "schedule.max_iter=6",
        "schedule.checkpoint_period=2",
        "schedule.log_period=1",
        f"data.train.vocabulary={synth}/annotations/synthetic_vocabulary.txt",
    ]
    straight, resumed = straight_and_resumed(tmp_path, synth, cfg, common)
    a = torch.load(straight / "model_final.pth", weights_only=True)["model"]
    b = torch.load(resumed / "model_final.pth", weights_only=True)["model"]
    stuff = [k for k in a if k.startswith("predictor.stuff_")]
    assert stuff, "the stuff queries' cross-attention / FFN layers are checkpointed"
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"weights differ at {k}"
    first = torch.load(straight / "checkpoint_0000004.pth", weights_only=True)["model"]
    assert any(not torch.equal(first[k], a[k]) for k in stuff), "the stuff layers train"

    def losses(wd):
        rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
        return {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}

    la, lb = losses(straight), losses(resumed)
    assert [la[i] for i in (5, 6)] == [lb[i] for i in (5, 6)]
    seg = Segmenter.from_pretrained(straight / "model_final.pth")
    assert type(seg.model.predictor).__name__ == "DecoupledTransformerDecoder"
    pred = seg.predict(np.zeros((96, 96, 3), np.uint8), "zebra; kite; grass [stuff]", task="all")
    assert pred.panoptic_seg.shape == (96, 96) and tuple(pred.sem_seg.shape) == (3, 96, 96)


def test_a_query_split_that_does_not_add_up_is_one_line(tmp_path, synth, capsys):  # noqa: F811
    rc = run(tmp_path / "bad", synth, "model.decoder.num_stuff_queries=8", cfg=str(CFG))
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: model.decoder.num_queries=32 must equal num_thing_queries + " in err
    assert "Traceback" not in err
