"""Reading checkpoints: ovseg's own and official FC-CLIP (detectron2) files.

Everything loads with ``torch.load(weights_only=True, map_location="cpu")``. Official FC-CLIP
checkpoints keep the decoders under ``sem_seg_head.``; the frozen CLIP is usually absent (the
open_clip tag provides it) and is expected-missing, reported in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovseg.engine.checkpoint import CheckpointError, load_checkpoint
from ovseg.models.segmentors.fcclip import CLIP_PREFIX

logger = logging.getLogger(__name__)

FCCLIP_RENAMES = (
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
    ("sem_seg_head.predictor.", "predictor."),
)
FCCLIP_DROP = ("criterion.",)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict (CPU, ``weights_only=True``); a missing, empty, corrupt or
    non-dict file raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    return load_checkpoint(path)


def checkpoint_kind(ckpt: dict) -> str:
    """ "ovseg", "fcclip" (detectron2 ``{"model": state_dict}`` with ``sem_seg_head.`` keys) or
    "state_dict" (a bare ovseg state dict)."""
    if ckpt.get("format") == "ovseg":
        return "ovseg"
    sd = ckpt.get("model", ckpt)
    if isinstance(sd, dict) and any(str(k).startswith("sem_seg_head.") for k in sd):
        return "fcclip"
    if isinstance(sd, dict) and any(
        str(k).startswith(("pixel_decoder.", "predictor.")) for k in sd
    ):
        return "state_dict"
    raise CheckpointError(
        "unrecognised checkpoint: neither an ovseg nor an FC-CLIP (detectron2) checkpoint"
    )


def convert_fcclip_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename FC-CLIP keys to ovseg's and drop training-only buffers (``criterion.empty_weight``)."""
    out = {}
    for k, v in sd.items():
        if k.startswith(FCCLIP_DROP):
            continue
        for old, new in FCCLIP_RENAMES:
            if k.startswith(old):
                k = new + k[len(old) :]
                break
        out[k] = v
    return out


def load_weights(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Load ``state_dict`` strictly, except that a missing frozen CLIP is expected.

    Raises:
        CheckpointError: naming the first key whose shape differs (with both shapes), or the
            missing / unexpected keys.
    """
    own = model.state_dict()
    for k, v in state_dict.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{source}: shape mismatch at '{k}': checkpoint {tuple(v.shape)} vs model "
                f"{tuple(own[k].shape)} — the config does not describe this checkpoint's architecture"
            )
    unexpected = [k for k in state_dict if k not in own]
    missing = [k for k in own if k not in state_dict]
    missing_clip = [k for k in missing if k.startswith(CLIP_PREFIX)]
    missing_other = [k for k in missing if not k.startswith(CLIP_PREFIX)]
    if unexpected:
        raise CheckpointError(
            f"{source}: {len(unexpected)} key(s) not in the model, e.g. {unexpected[:3]} — wrong config?"
        )
    if missing_other:
        raise CheckpointError(
            f"{source}: {len(missing_other)} trainable key(s) missing, e.g. {missing_other[:3]}"
        )
    if missing_clip:
        backbone = getattr(model, "backbone", None)
        if not getattr(backbone, "pretrained", None):
            raise CheckpointError(
                f"{source} has no CLIP weights and model.backbone.pretrained is null: set it to the "
                "open_clip tag or file the model was trained with"
            )
        logger.info(
            "frozen CLIP weights (%d tensors) come from open_clip %s/%s, not the checkpoint",
            len(missing_clip),
            backbone.name,
            backbone.pretrained,
        )
    with torch.no_grad():
        model.load_state_dict(state_dict, strict=False)
