"""Flat views of a :class:`~ovseg.structures.Prediction`: a label map and a segments table.

Both are what the demo writes (the raw label PNG and the JSON) and what the overlay draws, so the
three always agree. Conventions per task:

* ``semantic``: label = class index (argmax of ``sem_seg``); one row per class present.
* ``panoptic``: label = segment id (0 = void); one row per entry of ``segments_info``.
* ``instance``: instances with ``score >= score_threshold``, sorted by descending score, get ids
  1..K; a pixel covered by several takes the id of the highest-scoring one (0 = background). One
  row per kept instance; its area and box are of its full mask, overlaps included.

Boxes are ``[x0, y0, x1, y1]`` integer pixel coordinates with exclusive ends (``x1 - x0`` is the
width), like detectron2's boxes from masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ovseg.structures import Prediction

TASKS = ("semantic", "panoptic", "instance")


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_task(prediction: Prediction, task: str) -> None:
    """Raise ValueError if ``task`` is not one of :data:`TASKS` or the prediction lacks it."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    field = {"semantic": "sem_seg", "panoptic": "panoptic_seg", "instance": "instances"}[task]
    if getattr(prediction, field) is None:
        raise ValueError(
            f"this prediction has no {task} output ({field} is None); "
            f"predict with task={task!r} or task='all'"
        )
    if task == "panoptic" and prediction.segments_info is None:
        raise ValueError("this prediction has a panoptic_seg but no segments_info")


def kept_instances(prediction: Prediction, score_threshold: float = 0.0) -> np.ndarray:
    """Indices of instances with ``score >= score_threshold``, by descending score (ties: index).

    Returns:
        (K,) int64 indices into ``prediction.instances``.
    """
    check_task(prediction, "instance")
    scores = _np(prediction.instances.scores).astype(np.float64).reshape(-1)
    keep = np.flatnonzero(scores >= score_threshold)
    return keep[np.argsort(-scores[keep], kind="stable")]


def label_map(prediction: Prediction, task: str, score_threshold: float = 0.0) -> np.ndarray:
    """The prediction as one (H, W) int64 map (see the module docstring for each task's values).

    Args:
        prediction: what ``Segmenter.predict`` returned.
        task: "semantic", "panoptic" or "instance".
        score_threshold: instances scoring below it are dropped (instance task only).

    Returns:
        (H, W) int64: class indices, panoptic segment ids, or instance ids (1..K, 0 = none).
    """
    check_task(prediction, task)
    if task == "semantic":
        return _np(prediction.semantic_map()).astype(np.int64)
    if task == "panoptic":
        return _np(prediction.panoptic_seg).astype(np.int64)
    masks = instance_masks(prediction)
    out = np.zeros(masks.shape[1:], dtype=np.int64)
    order = kept_instances(prediction, score_threshold)
    boxes = mask_boxes(masks)
    # Paint the lowest score first so that the highest-scoring instance ends on top; each mask
    # only within its box (masks are usually small next to the image).
    for rank in range(len(order) - 1, -1, -1):
        x0, y0, x1, y1 = boxes[order[rank]]
        window = out[y0:y1, x0:x1]
        window[masks[order[rank], y0:y1, x0:x1]] = rank + 1
    return out


def instance_masks(prediction: Prediction) -> np.ndarray:
    """(N, H, W) bool instance masks as numpy (no copy for a CPU bool tensor)."""
    return _np(prediction.instances.masks).astype(bool, copy=False)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) int64 ``[x0, y0, x1, y1]`` boxes, exclusive ends (0 if empty)."""
    return _boxes_from_occupancy(masks.any(2), masks.any(1))


def _boxes_from_label_map(labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area and box of each id in ``ids`` within ``labels``, without a per-id loop over pixels.

    Returns:
        area (K,) int64 and boxes (K, 4) int64 ``[x0, y0, x1, y1]`` (exclusive ends; all zero
        where an id has no pixel).
    """
    h, w = labels.shape
    k = len(ids)
    lookup = {int(v): i for i, v in enumerate(ids)}
    flat = labels.ravel()
    uniq, inv = np.unique(flat, return_inverse=True)
    # Map each distinct value to its row in ``ids`` (or to a dump row k for values not listed).
    slot = np.array([lookup.get(int(u), k) for u in uniq], dtype=np.int64)[inv.reshape(-1)]
    area = np.bincount(slot, minlength=k + 1)[:k]
    rows = np.bincount(slot * h + np.repeat(np.arange(h), w), minlength=(k + 1) * h)
    cols = np.bincount(slot * w + np.tile(np.arange(w), h), minlength=(k + 1) * w)
    boxes = _boxes_from_occupancy(rows.reshape(k + 1, h)[:k] > 0, cols.reshape(k + 1, w)[:k] > 0)
    return area.astype(np.int64), boxes


def _boxes_from_occupancy(rows_any: np.ndarray, cols_any: np.ndarray) -> np.ndarray:
    """(K, H) and (K, W) bool occupancy -> (K, 4) int64 boxes with exclusive ends (0 if empty)."""
    h, w = rows_any.shape[1], cols_any.shape[1]
    y0 = rows_any.argmax(1)
    y1 = h - rows_any[:, ::-1].argmax(1)
    x0 = cols_any.argmax(1)
    x1 = w - cols_any[:, ::-1].argmax(1)
    boxes = np.stack([x0, y0, x1, y1], 1).astype(np.int64)
    boxes[~rows_any.any(1)] = 0
    return boxes


def segments_table(
    prediction: Prediction, task: str, score_threshold: float = 0.0
) -> list[dict[str, Any]]:
    """One row per segment: what the demo's JSON lists.

    Args:
        prediction: what ``Segmenter.predict`` returned.
        task: "semantic", "panoptic" or "instance".
        score_threshold: instances scoring below it are dropped (instance task only).

    Returns:
        A list of dicts with keys ``id`` (the value in :func:`label_map`), ``category_id``
        (vocabulary index), ``label`` (canonical class name), ``isthing``, ``score`` (float, or
        None when the prediction has none; for semantic rows the mean of the class's ``sem_seg``
        over its region), ``area`` (pixels) and ``bbox`` (``[x0, y0, x1, y1]`` ints, exclusive
        ends; None for an empty segment). Semantic rows come in class order, panoptic rows in
        ``segments_info`` order, instance rows by descending score.
    """
    check_task(prediction, task)
    vocab = prediction.vocabulary
    rows: list[dict[str, Any]] = []
    if task == "semantic":
        top_labels, top_scores = prediction.semantic_top()
        labels = _np(top_labels).astype(np.int64)
        best = _np(top_scores).astype(np.float64)
        present = np.unique(labels)
        area, boxes = _boxes_from_label_map(labels, present)
        sums = np.bincount(labels.ravel(), weights=best.ravel(), minlength=len(vocab))
        for c, a, box in zip(present.tolist(), area.tolist(), boxes.tolist()):
            rows.append(_row(c, c, vocab.names[c], vocab.isthing[c], sums[c] / a, a, box))
    elif task == "panoptic":
        info = prediction.segments_info
        ids = np.array([int(s["id"]) for s in info], dtype=np.int64)
        area, boxes = _boxes_from_label_map(_np(prediction.panoptic_seg).astype(np.int64), ids)
        for s, a, box in zip(info, area.tolist(), boxes.tolist()):
            c = int(s["category_id"])
            label = s.get("label") or vocab.names[c]
            isthing = bool(s.get("isthing", vocab.isthing[c]))
            rows.append(_row(int(s["id"]), c, label, isthing, s.get("score"), a, box))
    else:
        inst = prediction.instances
        order = kept_instances(prediction, score_threshold)
        masks = instance_masks(prediction)
        scores = _np(inst.scores).astype(np.float64).reshape(-1)[order]
        classes = _np(inst.labels).astype(np.int64).reshape(-1)[order]
        area = np.count_nonzero(
            masks.reshape(len(masks), masks.shape[1] * masks.shape[2]), axis=1
        ).astype(np.int64)[order]
        boxes = mask_boxes(masks)[order]
        for rank, (c, sc, a, box) in enumerate(
            zip(classes.tolist(), scores.tolist(), area.tolist(), boxes.tolist())
        ):
            rows.append(_row(rank + 1, c, vocab.names[c], vocab.isthing[c], sc, a, box))
    return rows


def _row(
    seg_id: int,
    category_id: int,
    label: str,
    isthing: bool,
    score: float | None,
    area: int,
    box: list[int],
) -> dict[str, Any]:
    return {
        "id": int(seg_id),
        "category_id": int(category_id),
        "label": str(label),
        "isthing": bool(isthing),
        "score": None if score is None else round(float(score), 6),
        "area": int(area),
        "bbox": [int(v) for v in box] if area > 0 else None,
    }
