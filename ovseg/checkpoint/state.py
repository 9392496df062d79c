"""Applying weights to a model: one state-dict checker for training (resume, ``--load-from``)
and inference (``Segmenter``).

What a checkpoint stores of a model is its ``trainable_state_dict()`` (FC-CLIP leaves its frozen
CLIP out); the frozen keys are expected-missing and reported in one line, never hundreds.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ovseg.checkpoint.fcclip import checkpoint_kind, convert_fcclip_state_dict
from ovseg.checkpoint.io import CheckpointError, load_checkpoint

logger = logging.getLogger(__name__)


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
    # Parameters of an option the checkpoint's model did not have (the prompt modules: an
    # FC-CLIP checkpoint has none) keep their initialisation; the model names their prefixes.
    optional = tuple(getattr(_unwrap(model), "optional_state_prefixes", ()))
    missing = [k for k in expected if k not in state and not (optional and k.startswith(optional))]
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
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    strict: bool = True,
    require_frozen: bool = False,
) -> list[str]:
    """Check (:func:`check_model_state`) then copy ``state`` into ``model``.

    Keys of the full state dict that :func:`model_state_dict` leaves out (the frozen CLIP) are
    expected to be absent. With ``require_frozen`` (loading a model for inference) their
    absence is reported in one line naming where they come from instead — the model's
    ``frozen_weights_source()`` (e.g. ``"open_clip convnext_large_d_320/laion2b..."``) — and is
    an error when the model has no such source (random frozen weights would be silently wrong).

    Returns:
        Trainable keys the model kept its own values for (only non-empty when not strict).
    """
    check_model_state(model, state, source=source, strict=strict)
    target = _unwrap(model)
    full = target.state_dict()
    if require_frozen:
        trainable = model_state_dict(model)
        frozen_missing = [k for k in full if k not in trainable and k not in state]
        if frozen_missing:
            fn = getattr(target, "frozen_weights_source", None)
            where = fn() if callable(fn) else None
            if not where:
                raise CheckpointError(
                    f"{source} has no weights for the {len(frozen_missing)} frozen tensors "
                    f"(first '{frozen_missing[0]}') and the model has no other source for them: "
                    "set model.backbone.pretrained to the open_clip tag or file it was trained with"
                )
            logger.info(
                "frozen weights (%d tensors) come from %s, not %s",
                len(frozen_missing),
                where,
                source,
            )
    kept = [k for k in model_state_dict(model) if k not in state]
    if kept:
        logger.info("%s has no '%s' (and %d more): they keep their initial values", source,
                    kept[0], len(kept) - 1)  # fmt: skip
    usable = {k: v for k, v in state.items() if k in full}
    with torch.no_grad():
        target.load_state_dict(usable, strict=False)
    return [k for k in model_state_dict(model) if k not in state]


def state_dict_from_checkpoint(ckpt: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The model weights of a loaded checkpoint: an ovseg checkpoint's ``"model"``, an official
    FC-CLIP (detectron2) file's ``"model"`` with keys renamed, or a bare state dict.

    Raises:
        CheckpointError: the weights are not a dict of tensors (naming the first bad entry).
    """
    kind = checkpoint_kind(ckpt)
    state = ckpt.get("model", ckpt) if isinstance(ckpt.get("model"), dict) else ckpt
    if kind == "ovseg" and not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"checkpoint {source} has no 'model' weights")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{source} is not a state dict of tensors: entry '{bad[0]}' is a "
            f"{type(state[bad[0]]).__name__}"
        )
    return convert_fcclip_state_dict(state) if kind == "fcclip" else dict(state)


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = False,
    require_frozen: bool = False,
) -> list[str]:
    """Initialise ``model`` from the weights of a checkpoint file, nothing else (no optimizer,
    no schedule): ``--load-from`` in training (``strict=False``: shapes checked, absent keys keep
    their initialisation) and ``Segmenter.load_weights`` (``strict=True, require_frozen=True``).

    Accepts an ovseg checkpoint, an official FC-CLIP checkpoint or a bare state dict of tensors.

    Returns:
        Trainable keys that kept the model's own initialisation (absent from the file); the
        caller should report their count in one line.
    """
    ckpt = load_checkpoint(path)
    state = state_dict_from_checkpoint(ckpt, str(path))
    return load_model_state(
        model, state, source=str(path), strict=strict, require_frozen=require_frozen
    )
