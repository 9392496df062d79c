"""Turn per-query class probabilities and mask logits into semantic, panoptic, instance outputs.

These follow FC-CLIP's ``semantic_inference`` / ``panoptic_inference`` / ``instance_inference``
(fcclip/fcclip.py) number for number, but are vectorised and only upsample the masks of the
queries each task keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# Upsampling all queries at once costs Q x H x W floats: semantic and panoptic go in chunks.
_CHUNK = 32

MaskResizer = Callable[[torch.Tensor], torch.Tensor]


def semantic_inference(
    mask_cls: torch.Tensor, mask_logits: torch.Tensor, resize: MaskResizer
) -> torch.Tensor:
    """Per-class scores ``sum_q p(c|q) * sigmoid(mask_q)``.

    Args:
        mask_cls: (Q, C + 1) log-probabilities, void last.
        mask_logits: (Q, h, w) low-resolution mask logits.
        resize: maps (K, h, w) logits to (K, H, W) at the output size.

    Returns:
        (C, H, W) float scores.
    """
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    out = None
    for start in range(0, mask_logits.shape[0], _CHUNK):
        m = resize(mask_logits[start : start + _CHUNK]).sigmoid()
        part = torch.einsum("qc,qhw->chw", probs[start : start + _CHUNK], m)
        out = part if out is None else out + part
    return out


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_logits: torch.Tensor,
    resize: MaskResizer,
    isthing: Sequence[bool],
    object_mask_threshold: float = 0.0,
    overlap_threshold: float = 0.8,
) -> tuple[torch.Tensor, list[dict]]:
    """Mask2Former panoptic merging.

    Keeps queries whose top class is not void and whose score exceeds the threshold; every pixel
    goes to the kept query maximising ``score * sigmoid(mask)``; a query's segment is the pixels it
    wins where its own mask is >= 0.5, dropped if that is under ``overlap_threshold`` of its mask;
    stuff classes merge into the first segment of that class.

    Returns:
        panoptic_seg: (H, W) int32 ids, 0 = void; segments_info: dicts with id, category_id,
        isthing, score, area and query (the query index).
    """
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    kept = torch.nonzero(keep).flatten()
    if kept.numel() == 0:
        h, w = resize(mask_logits[:1]).shape[-2:]
        return torch.zeros((h, w), dtype=torch.int32, device=mask_logits.device), []
    cur_scores, cur_classes = scores[kept], labels[kept]
    k = int(kept.numel())
    # One pass over the kept queries in chunks: running argmax of score * sigmoid(mask) (strict
    # ">" across chunks keeps torch.argmax's first-maximum rule), the winner's own mask value,
    # and each query's mask area. Peak memory is one chunk, not K full-resolution masks.
    best = winner = best_mask = None
    original_area = torch.zeros(k, dtype=torch.long, device=mask_logits.device)
    for start in range(0, k, _CHUNK):
        m = resize(mask_logits[kept[start : start + _CHUNK]]).sigmoid()
        original_area[start : start + m.shape[0]] = (m >= 0.5).flatten(1).sum(1)
        prob = cur_scores[start : start + m.shape[0]].view(-1, 1, 1) * m
        value, index = prob.max(0)
        chunk_mask = torch.gather(m, 0, index[None]).squeeze(0)
        if best is None:
            best, winner, best_mask = value, index, chunk_mask
        else:
            better = value > best
            best = torch.where(better, value, best)
            winner = torch.where(better, index + start, winner)
            best_mask = torch.where(better, chunk_mask, best_mask)
    inside = best_mask >= 0.5
    mask_area = torch.bincount(winner.flatten(), minlength=k)
    final_area = torch.bincount(winner[inside], minlength=k)

    lut = torch.zeros(k, dtype=torch.int32)
    segments: list[dict] = []
    stuff_ids: dict[int, int] = {}
    mask_area, original_area, final_area = (
        mask_area.tolist(),
        original_area.tolist(),
        final_area.tolist(),
    )
    classes, score_list = cur_classes.tolist(), cur_scores.tolist()
    for i in range(k):
        if mask_area[i] == 0 or original_area[i] == 0 or final_area[i] == 0:
            continue
        if mask_area[i] / original_area[i] < overlap_threshold:
            continue
        cls = classes[i]
        thing = bool(isthing[cls])
        if not thing and cls in stuff_ids:
            lut[i] = stuff_ids[cls]
            next(s for s in segments if s["id"] == stuff_ids[cls])["area"] += final_area[i]
            continue
        seg_id = len(segments) + 1
        if not thing:
            stuff_ids[cls] = seg_id
        lut[i] = seg_id
        segments.append(
            {
                "id": seg_id,
                "category_id": cls,
                "isthing": thing,
                "score": score_list[i],
                "area": final_area[i],
                "query": int(kept[i]),
            }
        )
    lut = lut.to(winner.device)
    panoptic = torch.where(
        inside, lut[winner], torch.zeros((), dtype=torch.int32, device=winner.device)
    )
    return panoptic.to(torch.int32), segments


def instance_inference(
    mask_cls: torch.Tensor,
    mask_logits: torch.Tensor,
    resize: MaskResizer,
    isthing: Sequence[bool],
    topk: int = 100,
) -> dict[str, torch.Tensor]:
    """Top-k (query, class) pairs over thing classes; score = class prob x mean mask prob.

    Returns:
        masks (N, H, W) bool, scores (N,), labels (N,) int64, query_index (N,) int64, sorted by
        descending score.
    """
    q, c1 = mask_cls.shape
    c = c1 - 1
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    k = min(topk, probs.numel())
    top_scores, top_idx = probs.flatten().topk(k, sorted=False)
    labels = top_idx % c
    queries = top_idx // c
    thing = torch.as_tensor(list(isthing), dtype=torch.bool, device=mask_cls.device)
    keep = thing[labels]
    top_scores, labels, queries = top_scores[keep], labels[keep], queries[keep]
    if queries.numel() == 0:
        h, w = resize(mask_logits[:1]).shape[-2:]
        empty = torch.zeros((0, h, w), dtype=torch.bool, device=mask_logits.device)
        return {"masks": empty, "scores": top_scores, "labels": labels, "query_index": queries}
    uniq, inverse = torch.unique(queries, return_inverse=True)
    logits = resize(mask_logits[uniq])
    binary = logits > 0
    mask_scores = (logits.sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (
        binary.flatten(1).sum(1) + 1e-6
    )
    scores = top_scores * mask_scores[inverse]
    order = torch.argsort(scores, descending=True, stable=True)
    return {
        "masks": binary[inverse][order],
        "scores": scores[order],
        "labels": labels[order],
        "query_index": queries[order],
    }
