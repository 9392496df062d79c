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
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "check_model_state",
    "checkpoint_path",
    "get_rng_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "model_state_dict",
    "prune_checkpoints",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "ovseg"
CHECKPOINT_VERSION = 1
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

    The data go to ``<path>.tmp`` in the same directory, are flushed and fsync'ed, and the temp
    file is then renamed over ``path`` (``os.replace``, atomic on POSIX). If anything fails,
    a full disk included, the temp file is removed and a previous file at ``path`` is untouched.

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, Exception):
            raise CheckpointError(
                f"could not write checkpoint {path}: {e}; any previous file there is intact"
            ) from e
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` (no arbitrary unpickling).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "the file is truncated, corrupt or not a weights-only checkpoint"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state


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


# ----------------------------------------------------------------------------- model state


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint stores of ``model``: ``trainable_state_dict()`` if the model has one
    (FC-CLIP leaves its frozen CLIP out), else the full ``state_dict()``. DDP is unwrapped."""
    model = _unwrap(model)
    fn = getattr(model, "trainable_state_dict", None)
    state = fn() if callable(fn) else model.state_dict()
    return OrderedDict((k, v) for k, v in state.items())


def check_model_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, strict: bool = True
) -> None:
    """Verify that ``state`` fits ``model`` before anything is loaded.

    Args:
        model: the receiving model (DDP is unwrapped).
        state: name -> tensor, as :func:`model_state_dict` wrote it.
        source: the file it came from, for messages.
        strict: also require exactly the keys of :func:`model_state_dict` (resume); otherwise
            only the shapes of keys present in both must agree (fine-tuning).

    Raises:
        CheckpointError: naming the first mismatched key and both shapes, or the first
            missing/unexpected key and how many there are.
    """
    expected = model_state_dict(model)
    full = _unwrap(model).state_dict()
    for key, value in state.items():
        ref = expected.get(key, full.get(key))
        if ref is None:
            continue
        if tuple(ref.shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source} does not fit this model: '{key}' has shape {tuple(value.shape)} in the "
                f"checkpoint but {tuple(ref.shape)} in the model (another architecture or config?)"
            )
    unexpected = [k for k in state if k not in full]
    missing = [k for k in expected if k not in state]
    if strict and (unexpected or missing):
        parts = []
        if missing:
            parts.append(f"{len(missing)} model key(s) missing from it, first '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} key(s) the model lacks, first '{unexpected[0]}'")
        raise CheckpointError(
            f"{source} does not fit this model: "
            + "; ".join(parts)
            + " (another architecture or config?)"
        )


def load_model_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, strict: bool = True
) -> list[str]:
    """Check (:func:`check_model_state`) then copy ``state`` into ``model``.

    Keys of the full state dict that :func:`model_state_dict` leaves out (the frozen CLIP) are
    expected to be absent and are not reported.

    Returns:
        Trainable keys the model kept its own values for (only non-empty when not strict).
    """
    check_model_state(model, state, source=source, strict=strict)
    target = _unwrap(model)
    full = target.state_dict()
    usable = {k: v for k, v in state.items() if k in full}
    target.load_state_dict(usable, strict=False)
    return [k for k in model_state_dict(model) if k not in state]


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = False) -> list[str]:
    """Initialise ``model`` from the weights of a checkpoint (``--load-from``), nothing else.

    Accepts an ovseg checkpoint (its ``"model"`` entry) or a bare state dict of tensors. Shapes
    are always checked; with ``strict`` the keys must match exactly as well. Frozen keys left
    out of checkpoints (the CLIP tower) are expected-missing and never reported.

    Returns:
        Trainable keys that kept the model's own initialisation (absent from the file); the
        caller should report their count in one line.
    """
    ckpt = load_checkpoint(path)
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        state = ckpt.get("model")
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path} has no 'model' weights")
    else:
        state = ckpt.get("model", ckpt) if isinstance(ckpt.get("model"), dict) else ckpt
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{path} is not a state dict of tensors: entry '{bad[0]}' is a "
            f"{type(state[bad[0]]).__name__}"
        )
    return load_model_state(model, state, source=str(path), strict=strict)
