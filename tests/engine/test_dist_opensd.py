"""OpenSD's decoupled decoder under DDP: 2 gloo ranks, one image each, give the gradients of one
process averaging the same two per-image steps.

Not "one process with the global batch" bitwise: the mask losses' random points come from each
rank's torch RNG stream (FC-CLIP's point sampling, with or without this option), so a rank draws
other points than the second image gets in a batch of two. The option itself keeps every image
independent (the thing / stuff split is per image, no RNG), so with the point draws aligned by
seeding each image's step, the all-reduced gradients are the single-process mean.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as tmp_mp
from ovseg_testing import REPO

from ovseg.config import load_config
from ovseg.models.builder import build_model
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils import dist

from .test_dist import _free_port

CFG = REPO / "ovseg/configs/tests/fcclip_tiny_train_opensd.yaml"
VOCAB = "circle; square; sky [stuff]"


def _model():
    torch.manual_seed(0)
    cfg = load_config(CFG, ["model.loss.train_num_points=256"])
    return build_model(cfg.model).train()


def _batch(i: int) -> dict:
    """Image ``i`` of a fixed 2-image batch: a thing (circle or square) on sky, 64 x 64."""
    g = torch.Generator().manual_seed(i)
    image = torch.randint(0, 256, (1, 3, 64, 64), generator=g, dtype=torch.uint8)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8 + 8 * i : 40, 16:48] = True
    masks[1] = ~masks[0]
    target = {"labels": torch.tensor([i, 2]), "masks": masks}
    return {"images": image, "targets": [target], "vocabulary": Vocabulary.parse(VOCAB)}


def _step(model, i: int) -> None:
    torch.manual_seed(100 + i)  # the point draws of image i's step
    sum(model(_batch(i)).values()).backward()


def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    torch.set_num_threads(1)
    dist.init_distributed("cpu")
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        _step(ddp, rank)
        torch.save(_grads(ddp.module), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_distributed()


@pytest.mark.timeout(180)
def test_two_gloo_ranks_average_the_single_process_gradients(tmp_path):
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a forked child must not inherit a busy OpenMP pool
    try:
        tmp_mp.start_processes(
            _worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method=method
        )
        model = _model()
        for i in (0, 1):
            _step(model, i)  # gradients accumulate: their sum
    finally:
        torch.set_num_threads(before)
    single = {k: g / 2 for k, g in _grads(model).items()}
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() == single.keys()
    stuff = [k for k in single if k.startswith("predictor.stuff_")]
    assert stuff and all(single[k].abs().sum() > 0 for k in stuff)  # both groups get gradients
    for k, g in single.items():
        assert torch.equal(ranks[0][k], ranks[1][k]), f"ranks disagree at {k}"
        torch.testing.assert_close(ranks[0][k], g, atol=1e-6, rtol=1e-4, msg=k)
