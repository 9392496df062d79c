"""TrainLogger: metrics.jsonl records, console line, rank gating, resume truncation."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from ovseg.engine.logger import TrainLogger, memory_mb, truncate_metrics


def test_records_and_console_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ovseg.engine")
    log = TrainLogger(tmp_path, max_iter=10, tensorboard=False, progress=False)
    rec = log.log(
        4,
        {"loss_ce": 1.0, "loss_ce_0": 2.0, "loss_dice": 0.5},
        lr=1e-4,
        device=torch.device("cpu"),
        data_time=0.01,
        extra={"grad_norm": 3.0},
    )
    log.log_eval(4, {"panoptic": {"PQ": 41.5}, "skipped": "text"})
    log.close()
    assert rec["total_loss"] == 3.5 and rec["grad_norm"] == 3.0 and rec["lr"] == 1e-4
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["loss_ce_0"] == 2.0 and lines[0]["iteration"] == 4
    assert lines[1] == {"iteration": 4, "eval": {"panoptic/PQ": 41.5}}
    console = "\n".join(r.getMessage() for r in caplog.records)
    assert "iter 4/10" in console and "loss_ce: 1" in console and "loss_dice: 0.5" in console
    assert "loss_ce_0" not in console  # deep-supervision terms stay in the files
    assert "panoptic/PQ: 41.5" in console


def test_disabled_logger_writes_nothing(tmp_path):
    log = TrainLogger(tmp_path / "w", max_iter=10, enabled=False)
    assert log.log(1, {"loss": 1.0}, lr=1.0, device=torch.device("cpu")) == {}
    log.close()
    assert not (tmp_path / "w").exists()


def test_truncate_metrics_drops_lines_after_resume_point(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}\n{"iteration": 3}\n{"iterat')
    truncate_metrics(path, 2)
    assert path.read_text() == '{"iteration": 1}\n{"iteration": 2}\n'


def test_cpu_memory_is_resident_set():
    assert memory_mb(torch.device("cpu")) == pytest.approx(memory_mb(torch.device("cpu")), rel=0.5)
    assert memory_mb(torch.device("cpu")) > 10  # torch alone is tens of MB
