"""GKC under DDP: 2 gloo ranks with 2 images each give the diversified CE, the distillation's
L2 and structure terms (regions gathered across ranks) and their gradients of one process with
the 4 images (the tiny FC-CLIP's criterion, its frozen CLIP as the teacher, fixed decoder
outputs)."""

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

CFG = str(REPO / "ovseg/configs/tests/fcclip_tiny_train_gkc.yaml")
VOCAB = "circle, disc, ring; square, box; sky [stuff]"
B, Q, SIZE = 4, 8, 64


def _inputs(uneven: bool = False):
    """4 images, 2 segments each (``uneven``: none in the last two, so rank 1 has no region);
    decoder outputs whose matching is unambiguous (query j predicts segment j exactly), random
    class embeddings."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (B, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    targets, logits, masks = [], torch.full((B, Q, 4), -30.0), torch.full((B, Q, 16, 16), -30.0)
    for b in range(B):
        m = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
        m[0, 4 * b : 4 * b + 24, :32] = True
        m[1, 32:, 8 * b : 8 * b + 24] = True
        labels = torch.tensor([b % 3, (b + 1) % 3])
        if uneven and b >= 2:
            m, labels = m[:0], labels[:0]
        targets.append({"labels": labels, "masks": m})
        n = len(labels)
        logits[b, torch.arange(n), labels] = 30.0
        logits[b, n:, -1] = 30.0
        masks[b, :n] = torch.where(m[:, ::4, ::4], 30.0, -30.0)
    embed = torch.randn(B, Q, 64, generator=g)
    return images, targets, logits, masks, embed


def gkc_terms(model, part: slice, uneven: bool = False):
    """The criterion's losses and gradients on images ``part`` of :func:`_inputs`."""
    images, targets, logits, masks, embed = _inputs(uneven)
    vocab = Vocabulary.parse(VOCAB)
    embed = embed[part].clone().requires_grad_(True)
    outputs = {"pred_logits": logits[part], "pred_masks": masks[part], "class_embed": embed}
    batch = {"images": images[part], "indices": list(range(B))[part], "vocabulary": vocab}
    context = {
        "model": model,
        "batch": batch,
        "text": model.encode_vocabulary(vocab),
        "vocabulary": vocab,
    }
    losses = model.criterion(outputs, targets[part], context=context)
    crit = model.criterion
    params = [embed, crit.distill_proj.weight, crit.distill_proj.bias, crit.structure_scale]
    keys = ("loss_gkc_distill", "loss_gkc_structure") + (() if uneven else ("loss_gkc_ce",))
    total = sum(losses[k] for k in keys)
    grads = torch.autograd.grad(total, params)
    values = {k: v.detach() for k, v in losses.items() if k.startswith("loss_gkc")}
    return values, [g.detach() for g in grads]


def _model():
    torch.manual_seed(0)
    return build_model(load_config(CFG).model).train()


def _worker(rank: int, world_size: int, port: int, out: str, uneven: bool) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    dist.init_distributed("cpu")
    try:
        per = B // world_size
        values, grads = gkc_terms(_model(), slice(rank * per, (rank + 1) * per), uneven)
        torch.save({"values": values, "grads": grads}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_distributed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("uneven", [False, True], ids=["even", "rank1_without_regions"])
def test_two_gloo_ranks_give_the_single_process_gkc_losses_and_gradients(tmp_path, uneven):
    """``uneven``: only the distillation is compared (the CEs are per-rank weighted means, as
    the plain CE: equal only when the ranks match as many segments)."""
    single, single_grads = gkc_terms(_model(), slice(0, B), uneven)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    tmp_mp.start_processes(
        _worker,
        args=(2, _free_port(), str(tmp_path), uneven),
        nprocs=2,
        join=True,
        start_method=method,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # DDP averages the ranks' gradients: the effective loss is the mean of the ranks' losses.
    for key in ("loss_gkc_distill", "loss_gkc_structure") + (() if uneven else ("loss_gkc_ce",)):
        mean = sum(r["values"][key] for r in ranks) / 2
        assert torch.allclose(mean, single[key], rtol=1e-5), key
    assert single["loss_gkc_distill"] > 0 and single["loss_gkc_ce"] > 0
    embed_grad = torch.cat([r["grads"][0] for r in ranks]) / 2
    assert torch.allclose(embed_grad, single_grads[0], rtol=1e-4, atol=1e-6)
    for i in (1, 2, 3):  # projection and scale: all-reduced mean of the ranks' gradients
        mean = (ranks[0]["grads"][i] + ranks[1]["grads"][i]) / 2
        assert torch.allclose(mean, single_grads[i], rtol=1e-4, atol=1e-6), (
            (mean - single_grads[i]).abs().max()
        )
