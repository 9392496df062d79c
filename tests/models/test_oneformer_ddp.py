"""OneFormer's query-text contrastive loss under DDP: 2 gloo ranks with 2 images each give the
loss and the (DDP-averaged) gradients of one process with the 4 images, because the image side
is gathered with its gradient (ovseg.utils.dist.all_gather_with_grad)."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as tmp_mp
from ovseg_testing import REPO

from ovseg.config import load_config
from ovseg.models.builder import build_model
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils import dist

CFG = REPO / "ovseg/configs/tests/fcclip_tiny_train_oneformer.yaml"
CHECKED = (
    "oneformer.logit_scale",
    "oneformer.query_proj.weight",
    "oneformer.task_mlp.layers.0.weight",
    "predictor.query_feat.weight",
    "predictor.transformer_ffn_layers.2.linear2.weight",
)


def _batch() -> dict:
    """4 fixed 64 x 64 images, each with a thing rectangle (class 0 or 1) and sky (class 2)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 64, 64), generator=g, dtype=torch.uint8)
    targets = []
    for i in range(4):
        thing = torch.zeros(64, 64, dtype=torch.bool)
        thing[8 * i : 8 * i + 24, 10 : 40 + 4 * i] = True
        labels = torch.tensor([i % 2, 2])
        targets.append({"labels": labels, "masks": torch.stack([thing, ~thing])})
    return {
        "images": images,
        "targets": targets,
        "indices": [0, 1, 2, 3],
        "seeds": [11, 12, 13, 14],
        "vocabulary": Vocabulary.parse("circle; square; sky [stuff]"),
    }


def _loss_and_grads(rows: slice) -> tuple[float, list[int], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    cfg = load_config(str(CFG), ["model.test.vocabulary=null"])
    model = build_model(cfg.model).train()
    full = _batch()
    batch = {k: v[rows] if isinstance(v, list) else v for k, v in full.items()}
    batch["images"] = full["images"][rows]
    tasks = model.oneformer.draw_tasks(batch)
    loss = model(batch)["loss_contrastive"]
    loss.backward()
    params = dict(model.named_parameters())
    grads = {k: params[k].grad.detach().clone() for k in CHECKED}
    value = loss.detach().clone()
    if dist.is_distributed():  # what DDP does: average the gradients (and here the losses)
        for t in (value, *grads.values()):
            torch.distributed.all_reduce(t)
            t /= dist.get_world_size()
    return float(value), tasks, grads


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
        loss, tasks, grads = _loss_and_grads(slice(2 * rank, 2 * rank + 2))
        torch.save({"loss": loss, "tasks": tasks, "grads": grads}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_distributed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
def test_two_gloo_ranks_give_the_single_process_contrastive_loss_and_gradients(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        tmp_mp.start_processes(
            _worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method=method
        )
        loss, tasks, grads = _loss_and_grads(slice(0, 4))
    finally:
        torch.set_num_threads(threads)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["tasks"] + r1["tasks"] == tasks  # each image's task comes with its seed
    assert r0["loss"] == pytest.approx(loss, abs=1e-5) and r1["loss"] == r0["loss"]
    assert loss > 0.1  # not a degenerate zero
    for k in CHECKED:
        assert torch.equal(r0["grads"][k], r1["grads"][k]), k
        assert grads[k].abs().max() > 0, k
        torch.testing.assert_close(r0["grads"][k], grads[k], rtol=1e-4, atol=1e-6, msg=k)
