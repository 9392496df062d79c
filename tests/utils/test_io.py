import errno
import os
import stat

import pytest

from ovseg.utils import io
from ovseg.utils.io import AtomicWriteError, atomic_write, atomic_write_json, atomic_write_text
from ovseg.utils.paths import data_root, ovseg_home


def test_atomic_write_replaces_and_gets_the_umask_mode(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    mode = stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]  # no temporary left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_disk_full_says_so(tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(AtomicWriteError, match=r"cannot write .*a\.bin: No space left on device"):
        io.atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_json_is_strict(tmp_path):
    import json
    import math

    atomic_write_json(tmp_path / "r.json", {"a": math.nan, "b": [1, 2.5]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": [1, 2.5]}


def test_one_rule_for_an_empty_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("OVSEG_HOME", "")
    monkeypatch.setenv("OVSEG_DATA", "  ")
    assert ovseg_home() == ovseg_home().home() / ".cache" / "ovseg"
    assert str(data_root()) == "data"
    monkeypatch.setenv("OVSEG_HOME", str(tmp_path))
    assert ovseg_home() == tmp_path
    assert data_root(tmp_path / "x") == tmp_path / "x"


def test_text_cache_and_zoo_share_one_home(monkeypatch, tmp_path):
    from ovseg import zoo
    from ovseg.text import classifier

    monkeypatch.setenv("OVSEG_HOME", str(tmp_path))
    assert zoo.checkpoint_dir() == tmp_path / "checkpoints"
    assert classifier.ovseg_home() == tmp_path
