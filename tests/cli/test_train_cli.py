"""tools/train.py end to end on the tiny config and synthetic COCO-panoptic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ovseg_testing import REPO

from ovseg import Segmenter
from ovseg.cli.train import main
from ovseg.data import make_synthetic_coco_panoptic

CFG = str(REPO / "ovseg/configs/tests/fcclip_tiny_train.yaml")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_coco")
    make_synthetic_coco_panoptic(root, num_images=8, size=(96, 96), seed=0, split="train2017")
    make_synthetic_coco_panoptic(root, num_images=2, size=(96, 96), seed=1, split="val2017")
    return root


def data_overrides(root) -> list[str]:
    out = []
    for split, key in (("train2017", "train"), ("val2017", "test")):
        out += [
            f"data.{key}.image_root={root}/{split}",
            f"data.{key}.panoptic_json={root}/annotations/panoptic_{split}.json",
            f"data.{key}.panoptic_root={root}/annotations/panoptic_{split}",
        ]
    return out + ["data.aug.crop_size=96", "data.batch_size=2", "model.loss.train_num_points=256"]


def run(work_dir, root, *extra, cfg: str = CFG) -> int:
    return main([cfg, "--work-dir", str(work_dir), "--no-progress", *data_overrides(root), *extra])


def test_short_run_writes_a_complete_work_dir(tmp_path, synth):
    wd = tmp_path / "run"
    assert (
        run(
            wd,
            synth,
            "schedule.max_iter=4",
            "schedule.checkpoint_period=2",
            "schedule.log_period=2",
        )
        == 0
    )
    assert (wd / "config.yaml").read_text().startswith("model:")
    assert json.loads((wd / "env.json").read_text())["torch"] == torch.__version__
    lines = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    logged = [x for x in lines if "loss_ce" in x or "total_loss" in x]
    assert logged and all(np.isfinite(x.get("total_loss", x.get("loss_ce"))) for x in logged)
    assert sorted(p.name for p in wd.glob("checkpoint_*.pth"))
    final = torch.load(wd / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["format"] == "ovseg" and "optimizer" not in final
    # The frozen CLIP is random here (no named source), so it travels with the weights.
    assert any(k.startswith("backbone.clip_model.") for k in final["model"])
    seg = Segmenter.from_pretrained(wd / "model_final.pth")
    pred = seg.predict(
        np.zeros((96, 96, 3), np.uint8), "circle; square; sky [stuff]", task="panoptic"
    )
    assert pred.panoptic_seg.shape == (96, 96)


def test_resume_follows_the_straight_trajectory(tmp_path, synth):
    common = ["schedule.checkpoint_period=3", "schedule.log_period=1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run(straight, synth, "schedule.max_iter=6", *common) == 0
    # "Killed" after 3 steps: the run ends with its step-3 checkpoint, then resumes to 6.
    assert run(resumed, synth, "schedule.max_iter=3", *common) == 0
    # Activation checkpointing is switched on for the second half: a run-control key (it
    # recomputes, changes no value), so the trajectory stays the straight one, bitwise.
    ckpt = "model.pixel_decoder.activation_checkpointing=true"
    with pytest.warns(UserWarning, match="applying .*schedule.max_iter: 3 -> 6") as caught:
        assert run(resumed, synth, "--resume", "schedule.max_iter=6", ckpt, *common) == 0
    assert any("activation_checkpointing: False -> True" in str(w.message) for w in caught)
    a = torch.load(straight / "model_final.pth", weights_only=True)["model"]
    b = torch.load(resumed / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"weights differ at {k}"

    def losses(wd):
        rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
        return {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}

    la, lb = losses(straight), losses(resumed)
    assert [la[i] for i in (4, 5, 6)] == [lb[i] for i in (4, 5, 6)]


def test_resume_with_a_changed_lr_is_refused_and_keeps_config_yaml(tmp_path, synth, capsys):
    """Issue 18, case 5: the restored optimizer would keep the old lr; refuse, list the
    difference, and leave the work dir's config.yaml as the run that wrote it."""
    wd = tmp_path / "run"
    common = ["schedule.max_iter=2", "schedule.checkpoint_period=2"]
    assert run(wd, synth, *common) == 0
    before = (wd / "config.yaml").read_text()
    capsys.readouterr()
    assert run(wd, synth, "--resume", "optim.lr=0.01", *common) == 2
    err = capsys.readouterr().err
    assert "another config: optim.lr: 0.001 -> 0.01" in err and "--load-from" in err
    assert (wd / "config.yaml").read_text() == before


def test_a_second_training_in_a_busy_work_dir_fails_naming_the_holder(tmp_path, synth, capsys):
    """Issue 18, case 6: the work dir is locked for the whole run (an OS lock a killed run
    releases); the second run stops at once, before writing anything."""
    import subprocess
    import sys

    wd = tmp_path / "busy"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from ovseg.engine.workdir import WorkDirLock\n"
            "with WorkDirLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(wd),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run(wd, synth, "schedule.max_iter=1") == 2
        err = capsys.readouterr().err
        assert f"work dir {wd} is in use by another training (pid {holder.pid} on " in err
        assert not (wd / "config.yaml").exists() and not list(wd.glob("checkpoint_*"))
    finally:
        holder.kill()
        holder.wait()
    # Killed holder: the OS released its lock; the next run takes the dir.
    assert run(wd, synth, "schedule.max_iter=1", "schedule.checkpoint_period=0") == 0


def test_bad_dataset_path_fails_before_training(tmp_path, synth, capsys):
    wd = tmp_path / "bad"
    code = run(wd, synth, "data.train.panoptic_json=/no/such/panoptic.json")
    assert code == 2
    assert "/no/such/panoptic.json" in capsys.readouterr().err
    assert not (wd / "model_final.pth").exists()


def test_runtime_deterministic_and_cudnn_benchmark_are_applied(tmp_path, synth):
    """The two runtime switches reach torch before any data or model is built (the bad dataset
    stops the run right after)."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    try:
        code = run(
            tmp_path / "det",
            synth,
            "runtime.deterministic=true",
            "runtime.cudnn_benchmark=true",
            "data.train.panoptic_json=/no/such/panoptic.json",
        )
        assert code == 2
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


@pytest.mark.parametrize("reuse", [True, False])
def test_cpu_training_reuses_host_memory_unless_turned_off(tmp_path, synth, monkeypatch, reuse):
    from ovseg.utils import host_memory

    calls = []
    monkeypatch.setattr(host_memory, "reuse_freed_host_memory", lambda: calls.append(1))
    bad = "data.train.panoptic_json=/no/such/panoptic.json"  # stops right after the set-up
    flag = f"runtime.reuse_host_memory={str(reuse).lower()}"
    code = run(tmp_path / "mem", synth, flag, "runtime.device=cpu", bad)
    assert code == 2
    assert len(calls) == (1 if reuse else 0)


def test_a_bad_host_memory_switch_is_one_line_naming_it(
    tmp_path, synth, monkeypatch, capsys, caplog
):
    from ovseg.utils import host_memory

    monkeypatch.setattr(host_memory, "_applied", False)
    monkeypatch.setenv(host_memory.ENV_VAR, "sometimes")
    assert run(tmp_path / "env", synth, "runtime.device=cpu") == 2
    err = capsys.readouterr().err
    assert f"error: environment variable {host_memory.ENV_VAR}='sometimes' is not a switch" in err
    assert "Traceback" not in err

    monkeypatch.setenv(host_memory.ENV_VAR, "0")
    bad = "data.train.panoptic_json=/no/such/panoptic.json"  # stops right after the set-up
    with caplog.at_level("INFO", logger="ovseg.train"):
        assert run(tmp_path / "env2", synth, "runtime.device=cpu", bad) == 2
    assert f"host malloc: {host_memory.host_allocator()} (freed-memory reuse off)" in caplog.text


def test_unknown_override_is_named(tmp_path, synth, capsys):
    assert run(tmp_path / "typo", synth, "schedule.max_iters=3") == 2
    assert "did you mean 'schedule.max_iter'" in capsys.readouterr().err


def _train_until_killed(work_dir, root, cfg, extra, kill_at_call) -> None:
    """Child process: train, SIGKILLed at the ``kill_at_call``-th training forward."""
    import os
    import signal

    from ovseg.models.segmentors.fcclip import FCCLIP

    forward, calls = FCCLIP.forward, [0]

    def dying_forward(self, batch):
        calls[0] += 1
        if calls[0] == kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)
        return forward(self, batch)

    FCCLIP.forward = dying_forward
    run(work_dir, root, *extra, cfg=cfg)


def straight_and_resumed(
    tmp_path: Path, synth: Path, cfg: str, common: list[str], kill_at: int = 5
) -> tuple[Path, Path]:
    """Train ``cfg`` straight, and once more SIGKILLed during step ``kill_at`` then resumed;
    returns the two work dirs (the shared body of every option's exact-resume test)."""
    import multiprocessing as mp
    import time

    cfg = str(cfg)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a forked child must not inherit a busy OpenMP pool
    try:
        straight, resumed = tmp_path / "straight", tmp_path / "resumed"
        assert run(straight, synth, *common, cfg=cfg) == 0
        ctx = mp.get_context("fork")
        proc = ctx.Process(target=_train_until_killed, args=(resumed, synth, cfg, common, kill_at))
        proc.start()
        deadline = time.monotonic() + 300
        while proc.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.exitcode == -9, f"the child should have been SIGKILLed: {proc.exitcode}"
        assert not (resumed / "model_final.pth").exists()
        assert run(resumed, synth, "--resume", *common, cfg=cfg) == 0
    finally:
        torch.set_num_threads(before)
    return straight, resumed


@pytest.mark.parametrize("option", ["prompts", "denseclip"])
def test_prompt_option_resumes_exactly_after_a_kill_and_predicts_new_classes(
    tmp_path, synth, option
):
    """configs/tests/fcclip_tiny_train_<option>.yaml: SIGKILLed during step 5 (after the step-4
    checkpoint), resumed, it ends bitwise equal to a straight run, learned prompt parameters
    included; the trained model then segments into a vocabulary it never saw."""
    cfg = str(REPO / f"ovseg/configs/tests/fcclip_tiny_train_{option}.yaml")
    common = ["schedule.max_iter=6", "schedule.checkpoint_period=2", "schedule.log_period=1"]
    straight, resumed = straight_and_resumed(tmp_path, synth, cfg, common)
    a = torch.load(straight / "model_final.pth", weights_only=True)["model"]
    b = torch.load(resumed / "model_final.pth", weights_only=True)["model"]
    learned = [k for k in a if k.startswith(("text_encoder.", "context_decoder."))]
    assert learned, "the option's parameters are checkpointed"
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"weights differ at {k}"
    first = torch.load(straight / "checkpoint_0000004.pth", weights_only=True)["model"]
    for prefix in ("text_encoder.", "context_decoder."):
        keys = [k for k in learned if k.startswith(prefix)]
        assert not keys or any(not torch.equal(first[k], a[k]) for k in keys), f"{prefix} trains"

    def losses(wd):
        rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
        return {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}

    la, lb = losses(straight), losses(resumed)
    assert [la[i] for i in (5, 6)] == [lb[i] for i in (5, 6)]
    seg = Segmenter.from_pretrained(straight / "model_final.pth")
    pred = seg.predict(np.zeros((96, 96, 3), np.uint8), "zebra; kite; grass [stuff]", task="all")
    assert pred.panoptic_seg.shape == (96, 96) and tuple(pred.sem_seg.shape) == (3, 96, 96)
