"""Exact resume: a run SIGKILLed mid-way and resumed equals an uninterrupted run, bitwise (CPU)."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest
import torch

from ovseg.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
)

from . import toy


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the killed child runs with one thread as well
    yield
    torch.set_num_threads(before)


def _metrics(work_dir: Path) -> list[dict]:
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _kill_midway(work_dir: Path, kwargs: dict, kill_at_call: int) -> None:
    # fork: no second torch import (seconds); make_trainer re-seeds everything anyway.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    proc = ctx.Process(
        target=toy.train_until_killed,
        args=(str(work_dir), {**kwargs, "kill_at_call": kill_at_call}),
    )
    proc.start()
    # Poll the exit code rather than join(): join() waits on a pipe that the dead child's orphaned
    # DataLoader workers still hold until their watchdog notices (seconds).
    deadline = time.monotonic() + 120
    while proc.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.exitcode == -9, f"child should have been SIGKILLed, exit code {proc.exitcode}"


CASES = {
    # dropout + a random crop drawn from the global RNG in the main process, accumulation 2
    "fp32-accum-randomcrop": {"grad_accum_steps": 2, "num_workers": 0, "random_crop": True},
    # two DataLoader workers prefetch ahead of the loop: the saved position must not
    "bf16-workers": {"amp": "bf16", "num_workers": 2, "random_crop": False},
    # the data pipeline's TrainingSampler: per-sample augmentation seeds, workers prefetching
    "datasampler-workers": {"num_workers": 2, "random_crop": True, "data_sampler": True},
    # fp16 autocast with a GradScaler whose state must come back
    "fp16-scaler": {"amp": "fp16", "num_workers": 0, "random_crop": True},
}


@pytest.mark.parametrize("case", list(CASES))
def test_killed_and_resumed_run_equals_straight_run(tmp_path, one_thread, case):
    kwargs = dict(max_iter=8, checkpoint_period=2, keep_last=2, **CASES[case])
    accum = kwargs.get("grad_accum_steps", 1)

    straight_dir = tmp_path / "straight"
    straight = toy.make_trainer(straight_dir, **kwargs)
    straight.train()

    resumed_dir = tmp_path / "resumed"
    # Killed during iteration 6, i.e. after the checkpoint of iteration 4 and the log of 5.
    _kill_midway(resumed_dir, kwargs, kill_at_call=5 * accum + 1)
    assert [it for it, _ in list_checkpoints(resumed_dir)] == [2, 4]  # keep_last=2
    assert not (resumed_dir / "model_final.pth").exists()
    assert max(r["iteration"] for r in _metrics(resumed_dir)) == 5

    trainer = toy.make_trainer(resumed_dir, **kwargs)
    assert trainer.resume() is True
    assert trainer.iteration == 4
    trainer.train()

    want, got = _metrics(straight_dir), _metrics(resumed_dir)
    assert [r["iteration"] for r in got] == list(range(1, 9))
    for a, b in zip(want, got):
        for key in ("total_loss", "loss_ce", "loss_reg", "lr", "grad_norm"):
            assert a[key] == b[key], f"iteration {a['iteration']}: {key} {a[key]} != {b[key]}"
    if kwargs.get("amp") == "fp16":
        assert all(a["loss_scale"] == b["loss_scale"] for a, b in zip(want, got))

    final_a = load_checkpoint(straight_dir / "model_final.pth")
    final_b = load_checkpoint(resumed_dir / "model_final.pth")
    assert set(final_a) == {"format", "version", "config", "model", "meta"}
    assert final_a["model"].keys() == final_b["model"].keys()
    for key in final_a["model"]:
        assert torch.equal(final_a["model"][key], final_b["model"][key]), key
    last_a = load_checkpoint(straight_dir / "checkpoint_0000008.pth")
    last_b = load_checkpoint(resumed_dir / "checkpoint_0000008.pth")
    for pid, st in last_a["optimizer"]["state"].items():
        for key, value in st.items():
            assert torch.equal(value, last_b["optimizer"]["state"][pid][key])
    assert last_a["sampler"]["ranks"][0]["position"] == 8 * accum * 2
    assert last_a["sampler"] == last_b["sampler"]
    assert last_a["scaler"] == last_b["scaler"]
    assert torch.equal(last_a["rng"]["ranks"][0]["torch"], last_b["rng"]["ranks"][0]["torch"])


def test_resume_into_other_architecture_fails_before_touching_anything(tmp_path):
    toy.make_trainer(tmp_path, max_iter=2, checkpoint_period=2).train()
    wide = toy.make_trainer(tmp_path, max_iter=4, width=16)
    before = {k: v.clone() for k, v in wide.model.state_dict().items()}
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint_0000002\.pth does not fit this model: "
        r"'conv\.weight' has shape \(8, 3, 3, 3\) in the checkpoint but "
        r"\(16, 3, 3, 3\) in the model",
    ):
        wide.resume()
    assert wide.iteration == 0
    assert not wide.optimizer.state
    for key, value in wide.model.state_dict().items():
        assert torch.equal(value, before[key])


def test_resume_needs_a_resumable_checkpoint(tmp_path):
    toy.make_trainer(tmp_path, max_iter=2, checkpoint_period=0).train()
    fresh = toy.make_trainer(tmp_path, max_iter=4)
    with pytest.warns(UserWarning, match="no checkpoint_\\*.pth"):
        assert fresh.resume() is False
    with pytest.raises(CheckpointError, match="not resumable: it has no 'optimizer'.*--load-from"):
        fresh.resume(tmp_path / "model_final.pth")


def test_resume_refuses_a_changed_config_and_applies_run_control_keys(tmp_path):
    """Issue 18, case 5: a changed lr would be silently overridden by the restored optimizer
    state, so the resume is refused with the differences listed; a longer run or another log
    period is applied (and said)."""
    toy.make_trainer(tmp_path, max_iter=2, checkpoint_period=2).train()
    trainer = toy.make_trainer(tmp_path, max_iter=4)
    trainer.config_yaml = "optim:\n  lr: 0.01\nschedule:\n  max_iter: 4\n"
    saved = "optim:\n  lr: 0.0001\nschedule:\n  max_iter: 2\n"
    for path in tmp_path.glob("checkpoint_*.pth"):
        ckpt = torch.load(path, weights_only=True)
        ckpt["config"] = saved
        torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"another config: optim.lr: 0.0001 -> 0.01\. "):
        trainer.resume()
    assert trainer.iteration == 0  # nothing restored
    trainer.config_yaml = "optim:\n  lr: 0.0001\nschedule:\n  max_iter: 4\n"
    with pytest.warns(UserWarning, match=r"applying schedule.max_iter: 2 -> 4"):
        assert trainer.resume() is True
    assert trainer.iteration == 2


def test_resume_without_resumable_sampler_warns(tmp_path):
    toy.make_trainer(tmp_path, max_iter=2, checkpoint_period=2).train()
    trainer = toy.make_trainer(tmp_path, max_iter=4)
    trainer.sampler = None  # e.g. a plain DataLoader over a RandomSampler
    with pytest.warns(UserWarning, match="no resumable sampler.*data order restarts"):
        trainer.resume()
    trainer.train()
    assert trainer.iteration == 4


def test_resume_skips_an_empty_newest_checkpoint(tmp_path):
    """Issue 18, case 9: a 0-byte (or garbage) newest checkpoint, as a crash mid-write on a
    filesystem without atomic rename leaves it, falls back to the newest readable one."""
    toy.make_trainer(tmp_path, max_iter=4, checkpoint_period=2).train()
    (tmp_path / "checkpoint_0000006.pth").write_bytes(b"")
    (tmp_path / "checkpoint_0000008.pth").write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    trainer = toy.make_trainer(tmp_path, max_iter=6)
    with pytest.warns(UserWarning) as record:
        assert trainer.resume() is True
    messages = [str(w.message) for w in record]
    assert any("skipping unreadable" in m and "checkpoint_0000008.pth" in m for m in messages)
    assert any("skipping unreadable" in m and "checkpoint_0000006.pth" in m for m in messages)
    assert trainer.iteration == 4
    # none readable: one error naming each file
    for p in list_checkpoints(tmp_path):
        p[1].write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no readable checkpoint"):
        toy.make_trainer(tmp_path, max_iter=6).resume()


def test_truncated_checkpoint_error_has_a_message(tmp_path):
    path = tmp_path / "checkpoint_0000002.pth"
    path.write_bytes(b"\x80")  # a pickle whose error message is empty
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*checkpoint_0000002"):
        load_checkpoint(path)
