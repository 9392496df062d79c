"""FileLock (filelock underneath): mutual exclusion across threads and processes, timeouts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from ovseg.zoo.lock import FileLock, LockTimeout


def test_threads_are_serialised(tmp_path):
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
    path = tmp_path / "sub" / "g.lock"
    with FileLock(path):
        waited = []
        with pytest.raises(LockTimeout, match="g.lock"):
            FileLock(path, timeout_s=0.2, on_wait=waited.append).acquire()
        assert waited == [path]
    with FileLock(path, timeout_s=0.2):  # released: free again
        pass


def test_another_process_holds_it_and_dies(tmp_path):
    path = tmp_path / "h.lock"
    code = (
        "import sys, time; from ovseg.zoo.lock import FileLock\n"
        f"l = FileLock({str(path)!r}); l.acquire(); print('held', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout):
            FileLock(path, timeout_s=0.2).acquire()
        proc.kill()
        proc.wait(timeout=10)
        with FileLock(path, timeout_s=5):  # the kernel dropped the dead holder's lock
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
