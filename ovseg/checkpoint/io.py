"""Checkpoints: atomic writes, safe loads, keep-last-K, RNG capture and model-state checks.

A checkpoint is a plain dict of tensors and primitives, so it loads with
``torch.load(path, map_location="cpu", weights_only=True)`` and never unpickles objects::

    {
        "format": "ovseg", "version": 1,
        "config": str,           # the resolved config as YAML
        "model": {name: Tensor}, # trainable parameters/buffers only (model.trainable_state_dict())
        "meta": {...},           # torch version, time, world size, ...
        # resumable checkpoints (checkpoint_XXXXXXX.pth) add:
        "optimizer": dict, "scheduler": dict, "scaler": dict,
        "rng": {"world_size": int, "ranks": [rng state of each rank]},
        "iteration": int,        # optimizer steps completed
        "sampler": {"world_size": int, "samples_per_rank": int, "ranks": [sampler state]},
    }

``model_final.pth`` holds only format/version/config/model/meta.
"""

from __future__ import annotations

import os
import random
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovseg.utils.io import atomic_write, atomic_write_bytes

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "checkpoint_path",
    "get_rng_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_safetensors_checkpoint",
    "prune_checkpoints",
    "save_checkpoint",
    "save_safetensors_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "ovseg"
CHECKPOINT_VERSION = 1
SAFETENSORS_SUFFIX = ".safetensors"
_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pth$")
_PRIMITIVES = (type(None), bool, int, float, str, bytes)


class CheckpointError(RuntimeError, ValueError):
    """A checkpoint cannot be written, read or applied; the message names the file or key."""


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError unless ``obj`` is made only of tensors, primitives, dicts, lists, tuples.

    Exact types are required for primitives: ``numpy.float64`` subclasses ``float`` but is
    pickled as a NumPy object that ``weights_only=True`` refuses to load.
    """
    if isinstance(obj, torch.Tensor) or type(obj) in _PRIMITIVES:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(
                    f"checkpoint key {where}[{key!r}] is a {type(key).__name__}; "
                    "use str or int keys"
                )
            _check_plain(value, f"{where}.{key}" if where else str(key))
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint entry {where or '<root>'} is a {type(obj).__module__}.{type(obj).__name__}; "
        "checkpoints hold only tensors, numbers, strings, lists and dicts so that they load with "
        "weights_only=True (convert it, e.g. float(x) or torch.as_tensor(x))"
    )


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically.

    Through :func:`ovseg.utils.io.atomic_write`: if anything fails, a full disk included, no
    temporary file is left and a previous file at ``path`` is untouched.

    Args:
        path: destination file; parent directories are created.
        state: tensors and primitives only (checked before writing).

    Returns:
        The destination path.

    Raises:
        TypeError: ``state`` holds something ``weights_only=True`` could not load.
        CheckpointError: the write failed (the message names the file and keeps the cause).
    """
    path = Path(path)
    _check_plain(dict(state), "")
    try:
        with atomic_write(path) as f:
            torch.save(dict(state), f)
    except Exception as e:
        raise CheckpointError(
            f"could not write checkpoint {path}: {e}; any previous file there is intact"
        ) from e
    return path


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message (``repr`` when the message is empty)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else repr(e)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` (no arbitrary unpickling); a
    ``.safetensors`` file goes through :func:`load_safetensors_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is empty, truncated, corrupt or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        return load_safetensors_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {_first_line(e)}); "
            "the file is truncated, corrupt or not a weights-only checkpoint"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state


def save_safetensors_checkpoint(path: str | os.PathLike, ckpt: Mapping[str, Any]) -> Path:
    """Write an ovseg checkpoint's ``model`` weights as safetensors, atomically, with ``format``,
    ``version`` and ``config`` (the resolved YAML) in the file's string metadata, so the file alone
    rebuilds the model. Tensors are made contiguous and unshared (safetensors' requirement)."""
    from safetensors.torch import save

    tensors = {str(k): v.detach().cpu().contiguous().clone() for k, v in ckpt["model"].items()}
    meta = {"format": CHECKPOINT_FORMAT, "version": str(CHECKPOINT_VERSION)}
    if isinstance(ckpt.get("config"), str):
        meta["config"] = ckpt["config"]
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def load_safetensors_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A ``.safetensors`` file as an ovseg checkpoint dict (``format``, ``version``, ``config``,
    ``model``, ``meta``). ``config`` is the sibling ``config.yaml`` (the Hub layout) if present,
    else the file's metadata; None when neither has one. Safetensors holds only tensors: nothing
    is unpickled.

    Raises:
        CheckpointError: the file is not valid safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        model = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read safetensors file {path} ({type(e).__name__}: {_first_line(e)})"
        ) from None
    sibling = path.with_name("config.yaml")
    config = sibling.read_text(encoding="utf-8") if sibling.is_file() else meta.get("config")
    return {
        "format": CHECKPOINT_FORMAT,
        "version": int(meta.get("version", CHECKPOINT_VERSION)),
        "config": config,
        "model": model,
        "meta": {"source": "safetensors"},
    }


def checkpoint_path(work_dir: str | os.PathLike, iteration: int) -> Path:
    """Path of the periodic checkpoint after ``iteration`` optimizer steps."""
    return Path(work_dir) / f"checkpoint_{iteration:07d}.pth"


def list_checkpoints(work_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Periodic checkpoints in ``work_dir`` as (iteration, path), oldest first."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = []
    for p in work_dir.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The periodic checkpoint with the most iterations in ``work_dir``, or None."""
    found = list_checkpoints(work_dir)
    return found[-1][1] if found else None


def prune_checkpoints(work_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` periodic checkpoints (0 keeps all).

    ``model_final.pth`` and other files are never touched.

    Returns:
        The deleted paths.
    """
    if keep_last <= 0:
        return []
    old = [p for _, p in list_checkpoints(work_dir)[:-keep_last]]
    for p in old:
        p.unlink(missing_ok=True)
    return old


# ----------------------------------------------------------------------------- RNG state


def get_rng_state() -> dict[str, Any]:
    """Capture Python, NumPy (legacy global), torch CPU and CUDA RNG states as plain data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda: list[torch.Tensor] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state_all()
    return {
        "python": [int(version), [int(x) for x in internal], gauss],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only where CUDA is up)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda", []))
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            cuda = cuda[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)
