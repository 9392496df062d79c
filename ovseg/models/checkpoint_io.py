"""Writing ovseg model checkpoints (plain dicts that load with ``weights_only=True``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import torch

from ovseg.models.segmentors.fcclip import FCCLIP

FORMAT_VERSION = 1


def model_checkpoint(model: FCCLIP, config_yaml: str, include_clip: Optional[bool] = None) -> dict:
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
        "meta": {"clip": {"model": backbone.name, "pretrained": backbone.pretrained or ""},
                 "includes_clip": bool(include_clip)},
    }


def atomic_save(obj: dict, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_model_checkpoint(path: str | Path, model: FCCLIP, config_yaml: str, include_clip: Optional[bool] = None) -> Path:
    return atomic_save(model_checkpoint(model, config_yaml, include_clip), path)
