"""Trainer behaviour: NaN stop, evaluation isolation, logs, output contract."""

from __future__ import annotations

import json

import pytest
import torch

from ovseg.checkpoint import list_checkpoints, load_checkpoint
from ovseg.config.engine import OptimConfig, ScheduleConfig
from ovseg.engine import Trainer, build_lr_scheduler, build_optimizer

from . import toy


def test_nan_loss_stops_naming_iteration_and_keeps_last_checkpoint(tmp_path):
    # Sequential stream, batch 2: iteration 5 reads samples 8 and 9.
    trainer = toy.make_trainer(
        tmp_path,
        max_iter=8,
        shuffle=False,
        nan_indices=frozenset({9}),
        checkpoint_period=2,
        keep_last=0,
    )
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite loss at iteration 5: loss_ce=nan, "
        r"loss_reg=nan.*checkpoint_0000004\.pth",
    ) as info:
        trainer.train()
    assert "lower the lr" in str(info.value).lower()
    assert trainer.iteration == 4
    assert [it for it, _ in list_checkpoints(tmp_path)] == [2, 4]
    assert not (tmp_path / "model_final.pth").exists()
    last = load_checkpoint(tmp_path / "checkpoint_0000004.pth")
    assert last["iteration"] == 4
    # No optimizer step happened at iteration 5: the weights in memory are the checkpoint's.
    for key, value in last["model"].items():
        assert torch.equal(value, trainer.model.state_dict()[key])
        assert torch.isfinite(value).all()


def test_evaluation_never_changes_the_trajectory(tmp_path):
    calls = []

    def eval_fn(model):
        assert not model.training
        torch.rand(100)  # consumes the RNG that dropout and the crop also use
        calls.append(1)
        return {"sem_seg": {"mIoU": 12.5}, "n": len(calls)}

    plain = toy.make_trainer(tmp_path / "plain", max_iter=6)
    plain.train()
    model_eval = toy.make_trainer(
        tmp_path / "eval", max_iter=6, eval_fn=_eval_mode(eval_fn), eval_period=4
    )
    out = model_eval.train()
    assert len(calls) == 2  # at 4 and at the end (6)
    assert out["eval"] == {"sem_seg": {"mIoU": 12.5}, "n": 2}
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, model_eval.model.state_dict()[key]), key
    records = [
        json.loads(x) for x in (tmp_path / "eval" / "metrics.jsonl").read_text().split("\n") if x
    ]
    evals = [r for r in records if "eval" in r]
    assert [(r["iteration"], r["eval"]["sem_seg/mIoU"]) for r in evals] == [(4, 12.5), (6, 12.5)]


def _eval_mode(fn):
    def run(model):
        model.eval()
        with torch.no_grad():
            return fn(model)

    return run


def test_logs_jsonl_tensorboard_and_final_weights(tmp_path):
    trainer = toy.make_trainer(tmp_path, max_iter=5, log_period=2, checkpoint_period=0)
    trainer.tensorboard = True
    trainer.progress = True  # tqdm bar path
    out = trainer.train()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().split("\n") if x]
    assert [r["iteration"] for r in records] == [2, 4, 5]
    # lr of the step logged: 1e-2 with a 3-iteration linear warm-up from 0.1 (step index 1: 0.4)
    assert [r["lr"] for r in records] == pytest.approx([4e-3, 1e-2, 1e-2])
    for r in records:
        assert r["total_loss"] == pytest.approx(r["loss_ce"] + r["loss_reg"])
        assert r["memory_mb"] > 0 and r["time"] > 0 and r["eta_s"] >= 0
        assert {"lr", "grad_norm", "data_time"} <= set(r)
    assert records[-1]["eta_s"] == 0
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert out["iteration"] == 5 and out["final_weights"].endswith("model_final.pth")
    final = load_checkpoint(tmp_path / "model_final.pth")
    assert final["format"] == "ovseg" and final["config"] == "model: toy\n"
    assert final["meta"]["iteration"] == 5
    assert not any(k.startswith("clip.") for k in final["model"])
    assert list_checkpoints(tmp_path) == []


def test_model_must_return_a_loss_dict(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(model, OptimConfig())
    sched = build_lr_scheduler(opt, ScheduleConfig(max_iter=1))
    loader = [torch.ones(1, 2)] * 2
    trainer = Trainer(
        model, opt, sched, loader, work_dir=tmp_path, max_iter=1, tensorboard=False, progress=False
    )
    with pytest.raises(TypeError, match=r"must return a non-empty dict\[str, Tensor\].*Tensor"):
        trainer.train()


def test_rejects_bad_arguments(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(model, OptimConfig())
    sched = build_lr_scheduler(opt, ScheduleConfig(max_iter=1))
    with pytest.raises(ValueError, match="amp must be 'none', 'bf16' or 'fp16'; got 'fp8'"):
        Trainer(model, opt, sched, [], work_dir=tmp_path, max_iter=1, amp="fp8")
    with pytest.raises(ValueError, match="grad_accum_steps must be >= 1; got 0"):
        Trainer(model, opt, sched, [], work_dir=tmp_path, max_iter=1, grad_accum_steps=0)


def test_releases_freed_host_memory_every_period(tmp_path, monkeypatch):
    """Every ``host_memory.RELEASE_PERIOD`` steps the Trainer hands freed heap pages back
    (bounding what heap fragmentation can hold while reuse is on; a no-op otherwise)."""
    from ovseg.utils import host_memory

    calls = []
    monkeypatch.setattr(host_memory, "RELEASE_PERIOD", 3)
    monkeypatch.setattr(host_memory, "release_freed_host_memory", lambda: calls.append(1))
    toy.make_trainer(tmp_path, max_iter=7, log_period=7, checkpoint_period=0).train()
    assert len(calls) == 2  # after steps 3 and 6
