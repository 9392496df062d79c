"""Point sampling of dense maps and Mask2Former's importance sampling of uncertain points.

Mask2Former computes its mask costs and losses on ``K`` sampled points instead of every pixel
(Cheng et al. 2022, Sec. 3.3, following PointRend): this saves memory at 1024² crops and lets the
prediction (stride 4) and the target (full resolution) be compared without resizing either.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def point_sample(
    input: torch.Tensor, point_coords: torch.Tensor, align_corners: bool = False
) -> torch.Tensor:
    """Bilinearly sample ``input`` at normalised point coordinates (detectron2's ``point_sample``).

    Args:
        input: (N, C, H, W) float map.
        point_coords: (N, P, 2) float, ``(x, y)`` in [0, 1] over the whole map; with
            ``align_corners=False`` the centre of pixel (i, j) is
            ``((j + 0.5) / W, (i + 0.5) / H)``.
            A 4-d (N, Hp, Wp, 2) grid is also accepted.
        align_corners: passed to :func:`torch.nn.functional.grid_sample`.

    Returns:
        (N, C, P) float (or (N, C, Hp, Wp) for a 4-d grid), zero outside the map.
    """
    add_dim = point_coords.dim() == 3
    if add_dim:
        point_coords = point_coords.unsqueeze(2)
    grid = 2.0 * point_coords.to(input.dtype) - 1.0
    output = F.grid_sample(input, grid, mode="bilinear", align_corners=align_corners)
    return output.squeeze(3) if add_dim else output


def point_sample_rows(
    rows: torch.Tensor, size: tuple[int, int], point_coords: torch.Tensor
) -> torch.Tensor:
    """:func:`point_sample` of one map held as channel-contiguous rows, up to float rounding.

    ``grid_sample`` walks the map one channel plane at a time; here each point is one weighted
    bag of its four corner rows (``embedding_bag``), ~4x faster for a few hundred channels.
    Same bilinear weights, zero padding and ``align_corners=False`` convention.

    Args:
        rows: (H * W, C) float, row ``i * W + j`` the channels of pixel (i, j).
        size: (H, W).
        point_coords: (P, 2) float ``(x, y)`` in [0, 1] over the whole map.

    Returns:
        (P, C) in ``rows``' dtype.
    """
    h, w = size
    if rows.shape[0] != h * w:
        raise ValueError(f"rows has {rows.shape[0]} rows, but a {h}x{w} map has {h * w}")
    x = point_coords[:, 0].to(rows.dtype) * w - 0.5
    y = point_coords[:, 1].to(rows.dtype) * h - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    index, weight = [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            index.append(yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1))
            weight.append(wy * wx * inside)
    return F.embedding_bag(
        torch.stack(index, 1), rows, per_sample_weights=torch.stack(weight, 1), mode="sum"
    )


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former's uncertainty of binary mask logits: ``-|logit|`` (highest at the boundary).

    Args:
        logits: (N, 1, ...) float mask logits.

    Returns:
        float tensor of the same shape; larger means more uncertain.
    """
    return -torch.abs(logits)


def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> torch.Tensor:
    """Sample points biased towards uncertain regions (PointRend training sampling).

    Draws ``int(num_points * oversample_ratio)`` uniform points, keeps the
    ``int(importance_sample_ratio * num_points)`` most uncertain ones and fills up with fresh
    uniform points. Vectorised over the N masks (one ``topk`` and one gather).

    Args:
        coarse_logits: (N, 1, H, W) float mask logits.
        uncertainty_func: maps (N, 1, P) logits to (N, 1, P) uncertainties.
        num_points: number of points per mask to return.
        oversample_ratio: >= 1, the oversampling factor.
        importance_sample_ratio: in [0, 1], the share of points chosen by uncertainty.

    Returns:
        (N, num_points, 2) float point coordinates ``(x, y)`` in [0, 1].

    Raises:
        ValueError: ratios out of range.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    num_boxes = coarse_logits.shape[0]
    device = coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    point_coords = torch.rand(num_boxes, num_sampled, 2, device=device, dtype=coarse_logits.dtype)
    point_logits = point_sample(coarse_logits, point_coords, align_corners=False)
    # It is crucial to compute the uncertainty on the sampled logits, not on the coarse map: a
    # point between two pixels of opposite sign has a near-zero interpolated logit (PointRend).
    point_uncertainties = uncertainty_func(point_logits)
    num_uncertain_points = int(importance_sample_ratio * num_points)
    num_random_points = num_points - num_uncertain_points
    idx = torch.topk(point_uncertainties[:, 0, :], k=num_uncertain_points, dim=1)[1]
    point_coords = torch.gather(point_coords, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    if num_random_points > 0:
        extra = torch.rand(num_boxes, num_random_points, 2, device=device, dtype=point_coords.dtype)
        point_coords = torch.cat([point_coords, extra], dim=1)
    return point_coords
