"""Turn per-query class probabilities and mask logits into semantic, panoptic, instance outputs.

These follow FC-CLIP's ``semantic_inference`` / ``panoptic_inference`` / ``instance_inference``
(fcclip/fcclip.py) number for number, but are vectorised and only upsample the masks of the
queries each task keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Full-resolution temporaries are processed in chunks of queries (and rows) of about this many
# elements each, so peak memory grows with the image, not with image x queries x classes.
_CHUNK_ELEMENTS = 1 << 24
_MAX_CHUNK = 32


@dataclass(frozen=True)
class MaskResize:
    """FC-CLIP's mask upsampling: to the padded model input, crop the padding, then to the
    output (original image) size, both bilinear with ``align_corners=False``.

    ``resize(m)`` maps (K, h, w) logits to (K, H, W). For outputs too large to hold per class,
    :meth:`to_input` + :meth:`rows` give the same values one band of output rows at a time.
    """

    padded_size: tuple[int, int]
    image_size: tuple[int, int]
    output_size: tuple[int, int]

    def __call__(self, m: torch.Tensor) -> torch.Tensor:
        return self.rows(self.to_input(m), 0, self.output_size[0], exact=True)

    def to_input(self, m: torch.Tensor) -> torch.Tensor:
        """(K, h, w) mask logits -> (K, image h, image w) at the model input, padding cropped."""
        m = F.interpolate(m[None], size=self.padded_size, mode="bilinear", align_corners=False)
        return m[0, :, : self.image_size[0], : self.image_size[1]]

    def rows(self, m: torch.Tensor, y0: int, y1: int, exact: bool = False) -> torch.Tensor:
        """Output rows ``[y0, y1)`` of :meth:`to_input`'s (K, h, w) resized to the output size:
        (K, y1 - y0, W).

        ``exact`` (whole image only) is ``F.interpolate`` itself; a band samples the same
        bilinear points with ``grid_sample`` (border clamping = interpolate's edge rule), equal
        to it up to float rounding (~1e-5 of the values).
        """
        H, W = self.output_size
        if exact or (y0 == 0 and y1 == H):
            if tuple(m.shape[-2:]) == (H, W):
                return m
            return F.interpolate(m[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        dev = m.device
        ys = (torch.arange(y0, y1, device=dev, dtype=torch.float32) * 2 + 1) / H - 1
        xs = (torch.arange(W, device=dev, dtype=torch.float32) * 2 + 1) / W - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
        out = F.grid_sample(
            m[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out[0].to(m.dtype)


def working_size(output_size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """The size post-processing runs at: ``output_size``, or that scaled down (aspect kept) to
    at most ``max_pixels`` (0 = no cap). Outputs are then brought to ``output_size`` by
    :func:`upsample_outputs`."""
    H, W = output_size
    if not max_pixels or H * W <= max_pixels:
        return (H, W)
    s = (max_pixels / (H * W)) ** 0.5
    return (max(1, int(H * s)), max(1, int(W * s)))


def _nearest_index(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Source index of each output position for nearest upsampling, ``floor(i * in / out)``
    (``F.interpolate(mode="nearest")``'s rule)."""
    return torch.arange(n_out, device=device) * n_in // n_out


def upsample_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) of any dtype -> (..., H, W) by nearest neighbour, without float copies."""
    if x.dtype in (torch.bool, torch.uint8) and x.dim() == 3:
        # interpolate's uint8 kernel is the fastest here, with the same index rule.
        u8 = x.view(torch.uint8) if x.dtype == torch.bool else x
        out = F.interpolate(u8[None], size=size, mode="nearest")[0]
        return out.view(torch.bool) if x.dtype == torch.bool else out
    rows = _nearest_index(x.shape[-2], size[0], x.device)
    cols = _nearest_index(x.shape[-1], size[1], x.device)
    return x[..., rows[:, None], cols[None, :]]


def upsample_outputs(result: dict, output_size: tuple[int, int]) -> dict:
    """Bring post-processing outputs computed at a :func:`working_size` to ``output_size``.

    Label maps, ids and masks are upsampled nearest (segment areas are recounted at the output
    size); ``sem_seg`` scores stay at the working size, with the full-size argmax and its score
    in ``sem_seg_labels`` / ``sem_seg_label_scores``.
    """
    H, W = output_size
    out = dict(result)
    if "sem_seg" in result:
        labels, scores = result.get("sem_seg_labels"), result.get("sem_seg_label_scores")
        if labels is None:
            scores, labels = result["sem_seg"].max(0)
        out["sem_seg_labels"] = upsample_nearest(labels, output_size)
        out["sem_seg_label_scores"] = upsample_nearest(scores, output_size)
    if "panoptic_seg" in result:
        pan = upsample_nearest(result["panoptic_seg"], output_size)
        out["panoptic_seg"] = pan
        info = [dict(s) for s in result["segments_info"]]
        if info:
            area = torch.bincount(pan.flatten().long(), minlength=max(s["id"] for s in info) + 1)
            for s in info:
                s["area"] = int(area[s["id"]])
        out["segments_info"] = info
    if "instances" in result:
        inst = dict(result["instances"])
        masks = inst["masks"]
        full = torch.empty((masks.shape[0], H, W), dtype=torch.bool, device=masks.device)
        step = chunk_size(H * W)
        for start in range(0, masks.shape[0], step):
            full[start : start + step] = upsample_nearest(masks[start : start + step], output_size)
        inst["masks"] = full
        out["instances"] = inst
    return out


def chunk_size(pixels: int, per_pixel: int = 1) -> int:
    """Queries per chunk so one chunk of full-resolution masks stays near the budget."""
    return max(1, min(_MAX_CHUNK, _CHUNK_ELEMENTS // max(1, pixels * per_pixel)))


def semantic_inference(
    mask_cls: torch.Tensor,
    mask_logits: torch.Tensor,
    resize: MaskResize,
    max_elements: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-class scores ``sum_q p(c|q) * sigmoid(mask_q)``.

    Args:
        mask_cls: (Q, C + 1) log-probabilities, void last.
        mask_logits: (Q, h, w) low-resolution mask logits.
        resize: the mask upsampling to the output size (H, W).
        max_elements: cap on C x H x W (0 = none). Above it the scores are returned at a
            reduced size and the full-resolution argmax is computed band by band.

    Returns:
        (scores, labels, label_scores): scores (C, H, W) float, labels and label_scores None;
        or, above ``max_elements``, scores (C, h', w') with h' x w' x C <= max_elements,
        labels (H, W) int64 the argmax class and label_scores (H, W) its score.
    """
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    num_classes = probs.shape[1]
    H, W = resize.output_size
    if not max_elements or num_classes * H * W <= max_elements:
        return _semantic_scores(probs, mask_logits, resize), None, None
    scale = (max_elements / (num_classes * H * W)) ** 0.5
    small = (max(1, int(H * scale)), max(1, int(W * scale)))
    reduced = _semantic_scores(
        probs, mask_logits, MaskResize(resize.padded_size, resize.image_size, small)
    )
    at_input = resize.to_input(mask_logits)
    labels = torch.empty((H, W), dtype=torch.int64, device=mask_logits.device)
    best = torch.empty((H, W), dtype=probs.dtype, device=mask_logits.device)
    band = max(1, _CHUNK_ELEMENTS // max(1, (num_classes + 1) * W))
    for y0 in range(0, H, band):
        y1 = min(H, y0 + band)
        masks = resize.rows(at_input, y0, y1).sigmoid()
        scores = torch.einsum("qc,qhw->chw", probs, masks)
        best[y0:y1], labels[y0:y1] = scores.max(0)
    return reduced, labels, best


def semantic_argmax_rows(
    scores: torch.Tensor, resize: MaskResize
) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax over classes of (C, h, w) ``scores`` bilinearly resized to ``resize.output_size``,
    band by band: ((H, W) int64 labels, (H, W) their scores), never (C, H, W) at once."""
    H, W = resize.output_size
    labels = torch.empty((H, W), dtype=torch.int64, device=scores.device)
    best = torch.empty((H, W), dtype=scores.dtype, device=scores.device)
    band = max(1, _CHUNK_ELEMENTS // max(1, scores.shape[0] * W))
    for y0 in range(0, H, band):
        y1 = min(H, y0 + band)
        best[y0:y1], labels[y0:y1] = resize.rows(scores, y0, y1).max(0)
    return labels, best


def _semantic_scores(
    probs: torch.Tensor, mask_logits: torch.Tensor, resize: MaskResize
) -> torch.Tensor:
    """(C, H, W) scores at ``resize.output_size``, queries in chunks."""
    H, W = resize.output_size
    step = chunk_size(H * W)
    out = None
    for start in range(0, mask_logits.shape[0], step):
        m = resize(mask_logits[start : start + step]).sigmoid()
        part = torch.einsum("qc,qhw->chw", probs[start : start + step], m)
        if out is None:
            out = part
        else:
            out += part  # in place: (C, H, W) can be large; same values as out + part
    return out


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_logits: torch.Tensor,
    resize: MaskResize,
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
    step = chunk_size(resize.output_size[0] * resize.output_size[1], per_pixel=3)
    for start in range(0, k, step):
        m = resize(mask_logits[kept[start : start + step]]).sigmoid()
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
    resize: MaskResize,
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
    H, W = resize.output_size
    binary = torch.empty((len(uniq), H, W), dtype=torch.bool, device=mask_logits.device)
    mask_scores = torch.empty(len(uniq), dtype=mask_logits.dtype, device=mask_logits.device)
    step = chunk_size(H * W, per_pixel=2)
    for start in range(0, len(uniq), step):
        logits = resize(mask_logits[uniq[start : start + step]])
        b = logits > 0
        binary[start : start + len(b)] = b
        mask_scores[start : start + len(b)] = (logits.sigmoid().flatten(1) * b.flatten(1)).sum(
            1
        ) / (b.flatten(1).sum(1) + 1e-6)
    scores = top_scores * mask_scores[inverse]
    order = torch.argsort(scores, descending=True, stable=True)
    return {
        "masks": binary[inverse[order]],
        "scores": scores[order],
        "labels": labels[order],
        "query_index": queries[order],
    }
