"""Official FC-CLIP (detectron2) checkpoints: recognising them and renaming their keys.

Everything loads with ``torch.load(weights_only=True, map_location="cpu")``. Official FC-CLIP
checkpoints keep the decoders under ``sem_seg_head.``; the frozen CLIP is usually absent (the
open_clip tag provides it) and is expected-missing, reported in one line.
"""

from __future__ import annotations

import logging

import torch

from ovseg.checkpoint.io import CheckpointError

logger = logging.getLogger(__name__)

FCCLIP_RENAMES = (
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
    ("sem_seg_head.predictor.", "predictor."),
)
FCCLIP_DROP = ("criterion.",)


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
