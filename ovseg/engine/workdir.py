"""One training per work dir: an exclusive lock (``filelock``) held for the whole run.

Two runs in one work dir would interleave their checkpoints and metrics (issue 18, case 6). The
lock is an OS file lock, so a killed run (even SIGKILL) releases it and ``--resume`` can take
over; beside it a small JSON names the holder for the second run's error message.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from ovseg.utils.io import atomic_write_json

LOCK_NAME = ".ovseg-train.lock"
HOLDER_NAME = ".ovseg-train.holder.json"


class WorkDirBusyError(RuntimeError):
    """Another process holds the work dir; the message names it."""


class WorkDirLock:
    """``with WorkDirLock(work_dir):`` -- raises :class:`WorkDirBusyError` at once if taken."""

    def __init__(self, work_dir: str | Path) -> None:
        self.work_dir = Path(work_dir)
        self._lock = FileLock(str(self.work_dir / LOCK_NAME), timeout=0)

    def acquire(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise WorkDirBusyError(
                f"work dir {self.work_dir} is in use by another training ({self._holder()}); "
                "wait for it to finish or choose another --work-dir"
            ) from None
        atomic_write_json(
            self.work_dir / HOLDER_NAME,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "argv": sys.argv,
            },
        )

    def release(self) -> None:
        if self._lock.is_locked:
            (self.work_dir / HOLDER_NAME).unlink(missing_ok=True)
            self._lock.release()

    def _holder(self) -> str:
        try:
            info = json.loads((self.work_dir / HOLDER_NAME).read_text(encoding="utf-8"))
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def __enter__(self) -> WorkDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
