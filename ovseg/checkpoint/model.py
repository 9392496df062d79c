"""Writing ovseg model checkpoints (plain dicts that load with ``weights_only=True``).

Model-agnostic: the model provides ``trainable_state_dict(include_frozen)`` and a ``backbone``
with ``name`` / ``pretrained`` (what rebuilds its frozen part).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ovseg.checkpoint.io import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint


def model_checkpoint(model: nn.Module, config_yaml: str, include_clip: bool | None = None) -> dict:
    """``{"format": "ovseg", "version", "config", "model", "meta"}``.

    The frozen CLIP is left out when a named pretrained source (an open_clip tag or file)
    provides it; otherwise (random or checkpoint-only CLIP) it is saved with the model.
    """
    backbone = model.backbone
    if include_clip is None:
        include_clip = not backbone.pretrained
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config_yaml,
        "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict(include_clip).items()},
        "meta": {
            "clip": {"model": backbone.name, "pretrained": backbone.pretrained or ""},
            "includes_clip": bool(include_clip),
        },
    }


def save_model_checkpoint(
    path: str | Path, model: nn.Module, config_yaml: str, include_clip: bool | None = None
) -> Path:
    return save_checkpoint(path, model_checkpoint(model, config_yaml, include_clip))
