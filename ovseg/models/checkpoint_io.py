"""Writing ovseg model checkpoints (plain dicts that load with ``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path

from ovseg.engine.checkpoint import save_checkpoint
from ovseg.models.segmentors.fcclip import FCCLIP

FORMAT_VERSION = 1


def model_checkpoint(model: FCCLIP, config_yaml: str, include_clip: bool | None = None) -> dict:
    """``{"format": "ovseg", "version", "config", "model", "meta"}``.

    The frozen CLIP is left out when a named pretrained source (an open_clip tag or file)
    provides it; otherwise (random or checkpoint-only CLIP) it is saved with the model.
    """
    backbone = model.backbone
    if include_clip is None:
        include_clip = not backbone.pretrained
    return {
        "format": "ovseg",
        "version": FORMAT_VERSION,
        "config": config_yaml,
        "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict(include_clip).items()},
        "meta": {
            "clip": {"model": backbone.name, "pretrained": backbone.pretrained or ""},
            "includes_clip": bool(include_clip),
        },
    }


def save_model_checkpoint(
    path: str | Path, model: FCCLIP, config_yaml: str, include_clip: bool | None = None
) -> Path:
    return save_checkpoint(path, model_checkpoint(model, config_yaml, include_clip))
