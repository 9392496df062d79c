"""torchrun-native distributed helpers.

Ranks come from the environment torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``); there is no custom launcher. Every helper also works in a
plain single process, where it is a no-op.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ovseg.utils.env import env_int

__all__ = [
    "DistInfo",
    "all_gather_object",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "destroy_distributed",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "seed_everything",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank in [0, world_size).
        local_rank: rank on this node; selects the GPU.
        world_size: number of processes.
        device: the device this process trains on.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device


def init_distributed(
    device: str = "auto", backend: str | None = None, timeout_s: float = 1800.0
) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    With ``WORLD_SIZE`` unset or 1 nothing is initialised and the process runs alone.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        backend: process-group backend; default NCCL on CUDA, gloo on CPU.
        timeout_s: collective timeout.

    Returns:
        This process's rank, local rank, world size and device (``cuda:LOCAL_RANK`` on GPU).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but CUDA is not available; use 'cpu'")
    world_size = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    local_rank = env_int("LOCAL_RANK", rank)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise RuntimeError(
                    f"WORLD_SIZE={world_size} but {name} is not set; launch with torchrun "
                    "(torchrun --nproc-per-node N tools/train.py ...)"
                )
        dist.init_process_group(
            backend=backend or ("nccl" if use_cuda else "gloo"),
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
            device_id=torch_device if use_cuda else None,
        )
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=torch_device)


def destroy_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_local_rank() -> int:
    """Rank on this node, from ``LOCAL_RANK`` (0 when unset)."""
    return env_int("LOCAL_RANK", 0)


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on global rank 0: the process that logs and writes checkpoints."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Average scalars over ranks with one collective.

    Args:
        values: name -> scalar (0-dim tensor or number); every rank must pass the same names.

    Returns:
        name -> mean over ranks as a Python float (the input values in a single process).
    """
    names = sorted(values)
    if not names:
        return {}
    flat = [
        float(v.detach().float().item()) if torch.is_tensor(v) else float(v)
        for v in (values[n] for n in names)
    ]
    if is_distributed():
        buf = torch.tensor(flat, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        flat = (buf / get_world_size()).tolist()
    return dict(zip(names, flat))


def all_reduce_max(value: float) -> float:
    """Maximum of a scalar over ranks (the value itself in a single process)."""
    if not is_distributed():
        return float(value)
    buf = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return float(buf.item())


def all_reduce_sum(array: np.ndarray) -> np.ndarray:
    """Sum a numpy array over all ranks (int64 or float64); returns it unchanged in one process.

    Args:
        array: any shape, dtype int64 or float64; every rank must pass the same shape and dtype.

    Returns:
        The element-wise sum over ranks, same shape and dtype, on every rank.
    """
    if not is_distributed():
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N_r, ...) from every rank along dim 0, rank order; ranks may hold
    different numbers of rows (even 0). Differentiable: the gradient of each rank's slice is
    summed over ranks and returned to its owner, so a loss every rank computes on the gathered
    rows trains, after DDP's averaging, like one process. ``tensor`` in a single process."""
    if not is_distributed():
        return tensor
    n = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(n) for _ in range(get_world_size())]
    dist.all_gather(sizes, n)
    return _GatherWithGrad.apply(tensor, [int(k) for k in sizes])


class _GatherWithGrad(torch.autograd.Function):
    """all_gather of rows (padded to the largest count) forward; backward sums the incoming
    gradient over ranks and keeps this rank's slice."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        pad = max(sizes) - tensor.shape[0]
        padded = torch.cat([tensor, tensor.new_zeros((pad, *tensor.shape[1:]))]) if pad else tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, get_rank()
        return torch.cat([p[:k] for p, k in zip(parts, sizes)], dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from rank ``src`` to every rank and return it everywhere."""
    if not is_distributed():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def seed_everything(seed: int, rank: int | None = None) -> int:
    """Seed Python's ``random``, NumPy's legacy global RNG and torch (CPU and CUDA).

    Args:
        seed: the configured base seed.
        rank: this process's rank; defaults to :func:`get_rank`.

    Returns:
        The seed actually used, ``seed + rank``, so that ranks draw different augmentations
        and dropout masks.
    """
    used = int(seed) + (get_rank() if rank is None else int(rank))
    random.seed(used)
    np.random.seed(used % 2**32)
    torch.manual_seed(used)
    return used
