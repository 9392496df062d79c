"""Checkpoints, one package: the format, safe atomic save / ``weights_only`` load, run
bookkeeping (keep-last-K, RNG states), official FC-CLIP files, and one state-dict checker that
knows the frozen CLIP is expected-missing.

A checkpoint is a plain dict of tensors and primitives (see :mod:`ovseg.checkpoint.io`); nothing
is ever unpickled.
"""

from ovseg.checkpoint.fcclip import checkpoint_kind, convert_fcclip_state_dict
from ovseg.checkpoint.io import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    checkpoint_path,
    get_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from ovseg.checkpoint.model import model_checkpoint, save_model_checkpoint
from ovseg.checkpoint.state import (
    check_model_state,
    load_model_state,
    load_weights,
    model_state_dict,
    state_dict_from_checkpoint,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "check_model_state",
    "checkpoint_kind",
    "checkpoint_path",
    "convert_fcclip_state_dict",
    "get_rng_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "model_checkpoint",
    "model_state_dict",
    "prune_checkpoints",
    "save_checkpoint",
    "save_model_checkpoint",
    "set_rng_state",
    "state_dict_from_checkpoint",
]
