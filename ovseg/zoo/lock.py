"""An inter-process, inter-thread file lock (stdlib only).

POSIX: ``fcntl.flock`` on ``PATH`` (the kernel drops the lock when its holder dies, so a crashed
download never leaves a stale lock). Elsewhere: the lock file is created with ``O_EXCL`` and holds
the owner's pid, host and start time; a lock whose owner is gone (same host, dead pid) or that is
older than ``stale_after_s`` is broken.

Threads of one process are serialised by an in-process lock per path first, so two threads never
even race for the file.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


class LockTimeout(TimeoutError):
    """The lock was not acquired within the timeout."""


def _thread_lock(path: Path) -> threading.Lock:
    key = os.path.abspath(path)
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


class FileLock:
    """Exclusive lock on a lock file; a context manager.

    Args:
        path: the lock file, e.g. ``FILE.lock``; created if needed, removed on release.
        timeout_s: give up after this many seconds (None: wait forever).
        poll_s: how often to retry while another holder has the lock.
        stale_after_s: (non-POSIX only) age after which a lock is considered abandoned.
        on_wait: called once with the lock path when the lock is busy (e.g. to print
            "waiting for another download").
    """

    def __init__(
        self,
        path: str | Path,
        timeout_s: float | None = None,
        poll_s: float = 0.1,
        stale_after_s: float = 24 * 3600.0,
        on_wait: Callable[[Path], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.stale_after_s = stale_after_s
        self.on_wait = on_wait
        self._fd: int | None = None
        self._tlock = _thread_lock(self.path)
        self._held_thread = False

    # -- public ------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Block until the lock is held.

        Raises:
            LockTimeout: ``timeout_s`` passed; the message names the lock file.
        """
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        waited = False
        if not self._tlock.acquire(blocking=False):
            waited = self._notify_wait(waited)
            remaining = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._tlock.acquire(timeout=remaining):
                raise self._timeout()
        self._held_thread = True
        try:
            while not self._try_acquire_file():
                waited = self._notify_wait(waited)
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timeout()
                time.sleep(self.poll_s)
        except BaseException:
            self._held_thread = False
            self._tlock.release()
            raise

    def release(self) -> None:
        """Release the lock and remove the lock file."""
        try:
            if self._fd is not None:
                # Unlink while still holding the lock: a waiter that opened the old inode notices
                # (its fstat no longer matches the path) and retries on a fresh file.
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                if fcntl is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
        finally:
            if self._held_thread:
                self._held_thread = False
                self._tlock.release()

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

    # -- internals ---------------------------------------------------------------------------
    def _notify_wait(self, waited: bool) -> bool:
        if not waited and self.on_wait is not None:
            self.on_wait(self.path)
        return True

    def _timeout(self) -> LockTimeout:
        return LockTimeout(
            f"could not lock {self.path} within {self.timeout_s} s: another process is using it. "
            f"If no other ovseg process runs, delete {self.path} and try again."
        )

    def _try_acquire_file(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is not None:
            return self._try_flock()
        return self._try_excl()

    def _try_flock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            os.close(fd)
            return False
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder unlinked it between our open and flock
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return False
        self._write_owner(fd)
        self._fd = fd
        return True

    def _try_excl(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if self._is_stale():
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            return False
        self._write_owner(fd)
        self._fd = fd
        return True

    def _write_owner(self, fd: int) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())

    def _is_stale(self) -> bool:
        try:
            owner = json.loads(self.path.read_text())
            age = time.time() - float(owner["time"])
        except (OSError, ValueError, KeyError, TypeError):
            # Unreadable (being written, or garbage): judge by the file's age alone.
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return False
            return age > max(self.stale_after_s, 60.0)
        if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner["pid"])):
            return True
        return age > self.stale_after_s


def lock_path(path: str | Path) -> Path:
    """The lock file that guards ``path``: ``path`` + ``.lock``."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


__all__ = ["FileLock", "LockTimeout", "lock_path"]
