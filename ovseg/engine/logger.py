"""Training logs: console progress bar, ``metrics.jsonl`` and TensorBoard, on rank 0 only."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ovseg.utils.io import atomic_write_text

__all__ = ["TrainLogger", "memory_mb", "truncate_metrics"]

_log = logging.getLogger("ovseg.engine")
# Deep-supervision terms of intermediate decoder layers ("loss_ce_0", ...): in metrics.jsonl and
# TensorBoard, left off the console line to keep it readable.
_AUX = re.compile(r"_\d+$")


def memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device`` (MiB), or the process's resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        try:
            import resource  # POSIX only: not on Windows
        except ImportError:
            return float("nan")
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def truncate_metrics(path: str | os.PathLike, max_iteration: int) -> None:
    """Drop lines of a metrics.jsonl whose ``iteration`` exceeds ``max_iteration``.

    Used on resume, so the file does not hold two histories for the iterations an interrupted
    run logged after its last checkpoint. Unparseable lines (a line cut by a crash) go too.
    """
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(rec.get("iteration", 0)) <= max_iteration:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)
    elif torch.is_tensor(value) and value.numel() == 1:
        out[prefix] = float(value.item())


class TrainLogger:
    """Progress bar + metrics.jsonl + TensorBoard for one training run.

    Only the process constructed with ``enabled=True`` (rank 0) writes anything; on other ranks
    every method is a no-op.

    Args:
        work_dir: ``metrics.jsonl`` and the TensorBoard event files go here.
        max_iter: the run's last iteration (for the bar and the ETA).
        start_iter: iterations already done (resume).
        enabled: write anything at all.
        tensorboard: write TensorBoard event files.
        progress: draw a tqdm bar; default when stderr is a terminal. Without a bar a plain line
            is logged every log period (``logging`` logger ``ovseg.engine``), better in files.
    """

    def __init__(
        self,
        work_dir: str | os.PathLike,
        *,
        max_iter: int,
        start_iter: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool | None = None,
    ) -> None:
        self.enabled = enabled
        self.max_iter = max_iter
        self.work_dir = Path(work_dir)
        self.metrics_path = self.work_dir / "metrics.jsonl"
        self._bar: tqdm | None = None
        self._tb = None
        self._file = None
        self._t_last = time.perf_counter()
        self._it_last = start_iter
        self._t_start = self._t_last
        self._it_start = start_iter
        if not enabled:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.metrics_path, start_iter)
        self._file = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 - run-long
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(
                log_dir=str(self.work_dir / "tensorboard"), purge_step=start_iter + 1
            )
        if progress is None:
            progress = sys.stderr.isatty()
        if progress:
            self._bar = tqdm(total=max_iter, initial=start_iter, desc="train", dynamic_ncols=True)

    def step(self, n: int = 1) -> None:
        """Advance the progress bar by ``n`` iterations."""
        if self._bar is not None:
            self._bar.update(n)

    def log(
        self,
        iteration: int,
        losses: dict[str, float],
        *,
        lr: float,
        device: torch.device,
        data_time: float | None = None,
        extra: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """Record one log period ending at ``iteration`` (1-based optimizer steps done).

        Args:
            iteration: optimizer steps completed.
            losses: name -> value averaged over ranks and micro-batches; ``total_loss`` is added.
            lr: current learning rate of the first parameter group.
            device: for the memory figure.
            data_time: mean seconds per iteration spent waiting for data.
            extra: further scalars (e.g. ``grad_norm``).

        Returns:
            The record written to metrics.jsonl (empty on non-main ranks).
        """
        if not self.enabled:
            return {}
        now = time.perf_counter()
        done = iteration - self._it_last
        sec_per_it = (now - self._t_last) / done if done > 0 else float("nan")
        avg = (now - self._t_start) / max(1, iteration - self._it_start)
        eta_s = avg * (self.max_iter - iteration)
        self._t_last, self._it_last = now, iteration
        total = float(sum(losses.values()))
        rec: dict[str, Any] = {"iteration": iteration, "total_loss": total}
        rec.update({k: float(v) for k, v in losses.items()})
        rec["lr"] = float(lr)
        rec["time"] = sec_per_it
        if data_time is not None:
            rec["data_time"] = float(data_time)
        rec["eta_s"] = eta_s
        rec["memory_mb"] = memory_mb(device)
        if extra:
            rec.update({k: float(v) for k, v in extra.items()})
        self._write(rec)
        if self._tb is not None:
            for key, value in rec.items():
                if key != "iteration" and isinstance(value, float) and math.isfinite(value):
                    group = "loss" if key.startswith(("loss", "total_loss")) else "train"
                    self._tb.add_scalar(f"{group}/{key}", value, iteration)
        it_s = 1.0 / sec_per_it if sec_per_it > 0 else float("nan")
        main_terms = {k: v for k, v in losses.items() if not _AUX.search(k)}
        if self._bar is not None:
            terms = " ".join(f"{k}={v:.3g}" for k, v in main_terms.items())
            self._bar.set_postfix_str(
                f"loss={total:.4g} {terms} lr={lr:.3g} {it_s:.2f}it/s mem={rec['memory_mb']:.0f}MB",
                refresh=True,
            )
        else:
            terms = "  ".join(f"{k}: {v:.4g}" for k, v in main_terms.items())
            _log.info(
                "iter %d/%d  eta %s  total_loss: %.4g  %s  lr: %.3g  %.2f it/s  mem: %.0f MB",
                iteration,
                self.max_iter,
                _fmt_eta(eta_s),
                total,
                terms,
                lr,
                it_s,
                rec["memory_mb"],
            )
        return rec

    def log_eval(self, iteration: int, results: dict[str, Any]) -> None:
        """Record evaluation results (nested dicts of numbers) at ``iteration``."""
        if not self.enabled:
            return
        flat: dict[str, float] = {}
        _flatten("", results, flat)
        self._write({"iteration": iteration, "eval": flat})
        if self._tb is not None:
            for key, value in flat.items():
                self._tb.add_scalar(f"eval/{key}", value, iteration)
        msg = "  ".join(f"{k}: {v:.4g}" for k, v in flat.items())
        if self._bar is not None:
            self._bar.write(f"eval @ {iteration}: {msg}")
        else:
            _log.info("eval @ %d: %s", iteration, msg)

    def info(self, msg: str) -> None:
        """A message that does not break the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(msg)
        else:
            _log.info(msg)

    def _write(self, rec: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(rec, allow_nan=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Flush and close the bar, the JSONL file and the TensorBoard writer."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"
