"""Distributed training: 2 gloo processes on CPU equal one process with the same global batch."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as tmp_mp

from ovseg.checkpoint import load_checkpoint
from ovseg.utils import dist

from . import toy

STEPS = 6
# No dropout and no random crop: per-rank RNG streams differ, so only deterministic models can
# match a single process bitwise-close. lr 1e-2 AdamW with full-model clipping at 1.0.
KWARGS = {
    "max_iter": STEPS,
    "random_crop": False,
    "dropout": 0.0,
    "checkpoint_period": 3,
    "keep_last": 0,
    "log_period": 1,
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, world_size: int, port: int, out: str, kwargs: dict, resume: bool, tag: str
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    info = dist.init_distributed("cpu")
    assert (info.rank, info.world_size, info.device.type) == (rank, world_size, "cpu")
    try:
        # seed + rank: the ranks build different initial weights; DDP must broadcast rank 0's.
        trainer = toy.make_trainer(
            Path(out) / tag, rank=rank, world_size=world_size, batch_size=2, **kwargs
        )
        assert dist.broadcast_object("hello" if rank == 0 else None) == "hello"
        if resume:
            assert trainer.resume() is True
        trainer.train()
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        torch.save(state, Path(out) / f"{tag}_rank{rank}.pt")
    finally:
        dist.destroy_distributed()


def _launch(out: Path, kwargs: dict, *, resume: bool = False, tag: str = "ddp") -> None:
    # fork where available: no second torch import per rank (seconds each on a busy CPU)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    tmp_mp.start_processes(
        _worker,
        args=(2, _free_port(), str(out), kwargs, resume, tag),
        nprocs=2,
        join=True,
        start_method=method,
    )


@pytest.mark.timeout(180)
def test_two_gloo_ranks_match_single_process(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _launch(tmp_path, KWARGS)
        single = toy.make_trainer(tmp_path / "single", rank=0, world_size=1, batch_size=4, **KWARGS)
        single.train()
    finally:
        torch.set_num_threads(threads)
    r0 = torch.load(tmp_path / "ddp_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp_rank1.pt", weights_only=True)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"ranks disagree on {key}"

    ref = single.model.state_dict()
    for key in ref:
        torch.testing.assert_close(r0[key], ref[key], rtol=0, atol=1e-6, msg=key)
    init = toy.make_trainer(tmp_path / "init", max_iter=1).model.state_dict()
    moved = max(float((ref[k] - init[k]).abs().max()) for k in ref if k.startswith("conv"))
    assert moved > 1e-3  # the comparison is not between untrained weights

    ddp_log = [
        json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().split("\n") if x
    ]
    one_log = [
        json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().split("\n") if x
    ]
    assert [r["iteration"] for r in ddp_log] == list(range(1, STEPS + 1))
    for a, b in zip(ddp_log, one_log):
        assert a["total_loss"] == pytest.approx(b["total_loss"], abs=1e-6)

    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoint_0000003.pth")
    assert ckpt["meta"]["world_size"] == 2
    assert len(ckpt["rng"]["ranks"]) == 2 and len(ckpt["sampler"]["ranks"]) == 2
    assert [s["position"] for s in ckpt["sampler"]["ranks"]] == [6, 6]  # 3 steps x 2 per rank


@pytest.mark.timeout(180)
def test_two_rank_resume_continues_the_same_trajectory(tmp_path):
    # Dropout and random crops draw from per-rank RNG streams (seed + rank): each rank's stream
    # and sampler position must come back from the checkpoint.
    kwargs = {**KWARGS, "random_crop": True, "dropout": 0.2}
    _launch(tmp_path, kwargs, tag="straight")
    _launch(tmp_path, {**kwargs, "max_iter": 3}, tag="resumed")  # "stops" after checkpoint 3
    _launch(tmp_path, kwargs, tag="resumed", resume=True)
    for rank in (0, 1):
        a = torch.load(tmp_path / f"straight_rank{rank}.pt", weights_only=True)
        b = torch.load(tmp_path / f"resumed_rank{rank}.pt", weights_only=True)
        for key in a:
            assert torch.equal(a[key], b[key]), f"rank {rank}: {key}"
    logs = {}
    for tag in ("straight", "resumed"):
        lines = (tmp_path / tag / "metrics.jsonl").read_text().splitlines()
        logs[tag] = [json.loads(x)["total_loss"] for x in lines]
    assert len(logs["straight"]) == STEPS
    assert logs["straight"] == logs["resumed"]


def test_single_process_helpers_are_no_ops(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    info = dist.init_distributed("cpu")
    assert (info.rank, info.local_rank, info.world_size, info.device) == (
        0,
        0,
        1,
        torch.device("cpu"),
    )
    assert dist.get_world_size() == 1 and dist.is_main_process()
    assert dist.all_reduce_mean({"a": torch.tensor(2.0), "b": 3}) == {"a": 2.0, "b": 3.0}
    assert dist.broadcast_object({"x": 1}) == {"x": 1}
    dist.barrier()
    assert dist.seed_everything(10, rank=3) == 13
    first = torch.rand(2)
    dist.seed_everything(10, rank=3)
    assert torch.equal(first, torch.rand(2))


def test_world_size_without_rendezvous_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR is not set; launch with torchrun"):
        dist.init_distributed("cpu")
