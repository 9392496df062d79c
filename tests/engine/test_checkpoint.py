"""Checkpoint files: weights-only round trip, atomic writes, keep-last-K, RNG capture."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch

from ovseg.checkpoint import (
    CheckpointError,
    checkpoint_path,
    get_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    model_state_dict,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)

from .toy import ToyNet


def _state(value: float) -> dict:
    return {
        "format": "ovseg",
        "version": 1,
        "config": "a: 1\n",
        "model": {"w": torch.full((2, 3), value), "b": torch.arange(4)},
        "meta": {"note": "x", "list": [1, 2.5, None, True], "nested": {"k": (1, 2)}},
        "rng": get_rng_state(),
        "iteration": 7,
    }


def test_round_trip_loads_with_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "c.pth", _state(1.5))
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(raw["model"]["w"], torch.full((2, 3), 1.5))
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 7
    assert loaded["meta"]["list"] == [1, 2.5, None, True]
    assert loaded["meta"]["nested"]["k"] == (1, 2)
    assert torch.equal(loaded["model"]["b"], torch.arange(4))
    assert not (tmp_path / "c.pth.tmp").exists()


def test_rejects_objects_weights_only_cannot_load(tmp_path):
    bad = _state(0.0)
    bad["meta"]["lr"] = np.float64(0.1)  # subclasses float but pickles as a NumPy object
    with pytest.raises(TypeError, match=r"meta\.lr is a numpy\.float64"):
        save_checkpoint(tmp_path / "c.pth", bad)
    assert not (tmp_path / "c.pth").exists()


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pth"
    save_checkpoint(path, _state(1.0))
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # some bytes reach the temp file first
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        save_checkpoint(path, _state(2.0))
    assert str(path) in str(info.value)
    monkeypatch.setattr(torch, "save", real_save)
    assert not (tmp_path / "c.pth.tmp").exists()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2, 3), 1.0))


def test_corrupt_file_error_names_it(tmp_path):
    path = save_checkpoint(tmp_path / "c.pth", _state(1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.pth.*truncated, corrupt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")


def test_keep_last_k_and_latest(tmp_path):
    for it in (2, 4, 6, 8, 10):
        save_checkpoint(checkpoint_path(tmp_path, it), {"iteration": it})
    save_checkpoint(tmp_path / "model_final.pth", {"iteration": 10})
    (tmp_path / "checkpoint_0000012.pth.tmp").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "checkpoint_0000010.pth"
    deleted = prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in deleted) == [
        "checkpoint_0000002.pth",
        "checkpoint_0000004.pth",
        "checkpoint_0000006.pth",
    ]
    assert [it for it, _ in list_checkpoints(tmp_path)] == [8, 10]
    assert (tmp_path / "model_final.pth").exists()
    assert prune_checkpoints(tmp_path, keep_last=0) == []
    assert latest_checkpoint(tmp_path / "missing") is None


def test_rng_state_round_trip(tmp_path):
    random.random()
    np.random.randn()  # leaves a cached gaussian in the legacy state
    state = get_rng_state()
    path = save_checkpoint(tmp_path / "rng.pth", {"rng": state})
    first = (random.random(), np.random.randn(3).tolist(), torch.rand(3))
    set_rng_state(load_checkpoint(path)["rng"])
    second = (random.random(), np.random.randn(3).tolist(), torch.rand(3))
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert torch.equal(first[2], second[2])


def test_trainable_state_only_and_load_weights(tmp_path):
    torch.manual_seed(0)
    src = ToyNet()
    state = model_state_dict(src)
    assert "conv.weight" in state and not any(k.startswith("clip.") for k in state)
    save_checkpoint(
        tmp_path / "model_final.pth",
        {"format": "ovseg", "version": 1, "config": "", "model": state, "meta": {}},
    )
    torch.manual_seed(1)
    dst = ToyNet()
    clip_before = dst.clip.weight.clone()
    assert load_weights(dst, tmp_path / "model_final.pth", strict=True) == []
    assert torch.equal(dst.conv.weight, src.conv.weight)
    assert torch.equal(dst.clip.weight, clip_before)  # frozen part is not in the file

    wide = ToyNet(width=16)
    with pytest.raises(
        CheckpointError,
        match=r"'conv\.weight' has shape \(8, 3, 3, 3\) in the "
        r"checkpoint but \(16, 3, 3, 3\)",
    ):
        load_weights(wide, tmp_path / "model_final.pth")
