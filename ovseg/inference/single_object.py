"""One class and one soft mask per image (OVCamo's task) from an ovseg prediction.

OVCamo (Pang et al., ECCV 2024) judges a single class name and a grey soft mask per image, saved
as ``[<class>]<unique_id>.png``. An ovseg model predicts per-class scores; two named strategies
reduce them to one object:

* ``"semantic-sum"`` (default): the class with the largest total semantic score over the image,
  ``argmax_c sum_hw sem_seg[c]``, and its semantic score map ``sem_seg[c]``.
* ``"best-query"``: the single (query, class) pair with the highest class probability (void
  excluded), and that query's mask probability ``sigmoid(mask_q)`` at image size (needs
  ``Segmenter.predict(..., return_intermediates=True)``, whole-image mode).

Either map is min-max scaled to 0..255 uint8 (a constant map becomes all zeros).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.structures import Prediction
from ovseg.utils.io import atomic_write_bytes

STRATEGIES = ("semantic-sum", "best-query")


@dataclass(frozen=True)
class SingleObject:
    """``class_name`` (canonical vocabulary name), ``class_index`` and ``mask``: (H, W) uint8 grey
    soft mask 0..255 at the image's size."""

    class_name: str
    class_index: int
    mask: np.ndarray


def _to_uint8(m: torch.Tensor) -> np.ndarray:
    m = m.detach().float().cpu()
    lo, hi = m.min(), m.max()
    if hi <= lo:
        return np.zeros(tuple(m.shape), np.uint8)
    return ((m - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def single_object(pred: Prediction, strategy: str = "semantic-sum") -> SingleObject:
    """Reduce a prediction to one class and one soft mask (see the module docstring).

    Raises:
        ValueError: unknown strategy, or the prediction lacks what the strategy reads.
    """
    if strategy == "semantic-sum":
        if pred.sem_seg is None:
            raise ValueError("strategy 'semantic-sum' needs task='semantic' (sem_seg is None)")
        c = int(pred.sem_seg.flatten(1).sum(1).argmax())
        mask = pred.sem_seg[c]
        if tuple(mask.shape) != tuple(pred.image_size):
            # Scores kept at a reduced size (model.test.max_score_elements): back to the image.
            mask = F.interpolate(mask[None, None].float(), size=pred.image_size, mode="bilinear")
            mask = mask[0, 0]
    elif strategy == "best-query":
        if "mask_cls" not in pred.extras or "pred_masks" not in pred.extras:
            raise ValueError(
                "strategy 'best-query' needs Segmenter.predict(..., return_intermediates=True)"
            )
        mask_cls = pred.extras["mask_cls"][0]  # (Q, C+1) log-probs, void last
        logits = pred.extras["pred_masks"][0]  # (Q, h/4, w/4) at the padded input
        probs = F.softmax(mask_cls.float(), dim=-1)[:, :-1]
        flat = int(probs.flatten().argmax())
        q, c = divmod(flat, probs.shape[1])
        h4, w4 = logits.shape[-2:]
        ih, iw = pred.extras["input_size"]
        m = F.interpolate(logits[q][None, None].float(), size=(h4 * 4, w4 * 4), mode="bilinear")
        m = F.interpolate(m[..., :ih, :iw], size=pred.image_size, mode="bilinear")
        mask = m[0, 0].sigmoid()
    else:
        raise ValueError(f"unknown single-object strategy {strategy!r}; choose one of {STRATEGIES}")
    return SingleObject(pred.vocabulary[c].name, c, _to_uint8(mask))


def ovcamo_file_name(class_name: str, unique_id: str) -> str:
    """``[<class>]<unique_id>.png``, OVCamo's prediction file name."""
    if "/" in class_name or os.sep in class_name or "]" in class_name:
        raise ValueError(f"class name {class_name!r} cannot appear in an OVCamo file name")
    return f"[{class_name}]{unique_id}.png"


def save_single_object(obj: SingleObject, out_dir: str | os.PathLike, unique_id: str) -> str:
    """Write ``obj.mask`` as ``out_dir/[<class>]<unique_id>.png`` (8-bit grey, atomic); returns
    the path."""
    import cv2

    ok, buf = cv2.imencode(".png", obj.mask)
    if not ok:  # pragma: no cover - cv2 encodes any uint8 2-D array
        raise ValueError(f"cannot encode the mask of {unique_id}")
    path = os.path.join(os.fspath(out_dir), ovcamo_file_name(obj.class_name, unique_id))
    atomic_write_bytes(path, buf.tobytes())
    return path
