"""Reductions across ranks for the evaluators: no-ops in one process.

Evaluators keep small per-rank statistics (a confusion matrix, per-class TP/FP/FN counts, a list of
RLE detections) and combine them only in ``evaluate()``, so sharded evaluation gives the numbers of
one process. The helpers work under any ``torch.distributed`` backend: tensors go to the current
CUDA device for NCCL, stay on CPU otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ovseg.evaluation.errors import EvaluationError


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(array: np.ndarray) -> np.ndarray:
    """Sum a numpy array over all ranks (int64 or float64); returns it unchanged in one process.

    Args:
        array: any shape, dtype int64 or float64; every rank must pass the same shape and dtype.

    Returns:
        The element-wise sum over ranks, same shape and dtype, on every rank.
    """
    if not is_distributed():
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather one picklable object from every rank; ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_per_image(per_image: dict[Any, Any]) -> dict[Any, Any]:
    """Merge every rank's ``{image id: statistics}``; each image must come from one rank only.

    Raises:
        EvaluationError: an image evaluated on more than one rank (a padded or overlapping shard).
    """
    merged: dict[Any, Any] = {}
    for rank, part in enumerate(all_gather_objects(per_image)):
        for image_id, stats in part.items():
            if image_id in merged:
                raise EvaluationError(
                    f"image {image_id} was evaluated on more than one rank (again on rank "
                    f"{rank}): shard the set without padding (e.g. indices[rank::world_size])"
                )
            merged[image_id] = stats
    return merged
