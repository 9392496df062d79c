"""An inter-process, inter-thread file lock: the ``filelock`` package behind the zoo's small API.

``filelock.FileLock`` is ``fcntl.flock`` on POSIX (the kernel drops the lock when its holder dies,
so a crashed download never leaves a stale lock) and ``msvcrt.locking`` on Windows. What this
module adds: a ``LockTimeout`` whose message names the lock file and says what to do, and an
``on_wait`` callback called once when the lock is busy (to print "waiting for another download"),
and removal of the lock file on release.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import filelock


class LockTimeout(TimeoutError):
    """The lock was not acquired within the timeout."""


class FileLock:
    """Exclusive lock on a lock file; a context manager.

    Args:
        path: the lock file, e.g. ``FILE.lock``; created (with its folder) if needed.
        timeout_s: give up after this many seconds (None: wait forever).
        poll_s: how often to retry while another holder has the lock.
        on_wait: called once with the lock path when the lock is busy.
    """

    def __init__(
        self,
        path: str | Path,
        timeout_s: float | None = None,
        poll_s: float = 0.05,
        on_wait: Callable[[Path], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.on_wait = on_wait
        # thread_local=False: one instance is one holder, whatever thread releases it.
        self._lock = filelock.FileLock(str(self.path), thread_local=False)

    def acquire(self) -> None:
        """Block until the lock is held.

        Raises:
            LockTimeout: ``timeout_s`` passed; the message names the lock file.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        try:
            self._lock.acquire(timeout=0, poll_interval=self.poll_s)
            return
        except filelock.Timeout:
            pass
        if self.on_wait is not None:
            self.on_wait(self.path)
        remaining = (
            -1 if self.timeout_s is None else max(0.0, start + self.timeout_s - time.monotonic())
        )
        try:
            self._lock.acquire(timeout=remaining, poll_interval=self.poll_s)
        except filelock.Timeout:
            raise LockTimeout(
                f"could not lock {self.path} within {self.timeout_s} s: another process is "
                "using it. If no other ovseg process runs, delete it and try again."
            ) from None

    def release(self) -> None:
        """Release the lock and remove the lock file.

        The file is unlinked while still held: a waiter that opened the old file finds it
        unlinked once it gets the lock and retries on a fresh one (filelock checks this).
        """
        if self._lock.is_locked:
            with contextlib.suppress(OSError):  # gone already, or Windows keeps it while open
                os.unlink(self.path)
        self._lock.release()

    @property
    def is_locked(self) -> bool:
        return self._lock.is_locked

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def lock_path(path: str | Path) -> Path:
    """The lock file that guards ``path``: ``path`` + ``.lock``."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


__all__ = ["FileLock", "LockTimeout", "lock_path"]
