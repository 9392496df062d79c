"""FileLock: mutual exclusion across threads, cleanup, stale locks of the O_EXCL fallback."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from ovseg.zoo import lock as lockmod
from ovseg.zoo.lock import FileLock, LockTimeout


def test_threads_are_serialised_and_lock_file_removed(tmp_path):
    path = tmp_path / "f.lock"
    inside = []
    overlap = []

    def work(i: int) -> None:
        with FileLock(path):
            inside.append(i)
            if len(inside) > 1:
                overlap.append(tuple(inside))
            time.sleep(0.02)
            inside.remove(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert overlap == []
    assert not path.exists()


def test_timeout_names_the_lock(tmp_path):
    path = tmp_path / "g.lock"
    with FileLock(path):
        waited = []
        with pytest.raises(LockTimeout, match="g.lock"):
            FileLock(path, timeout_s=0.2, on_wait=waited.append).acquire()
        assert waited == [path]


def test_excl_fallback_breaks_stale_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(lockmod, "fcntl", None)  # the non-POSIX path
    path = tmp_path / "h.lock"
    # a lock left by a process that no longer exists
    path.write_text(
        json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "time": time.time()})
    )
    with FileLock(path, timeout_s=5):
        assert json.loads(path.read_text())["pid"] > 0
    assert not path.exists()
    # a live owner's lock (this process) is respected
    with FileLock(path):
        assert FileLock(path)._try_acquire_file() is False
