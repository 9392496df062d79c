"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

No compiled kernel. The reference core is ``F.grid_sample`` (bilinear, zero padding,
align_corners=False on ``2 * loc - 1``), exactly the "pytorch core" that Deformable DETR and
FC-CLIP fall back to on CPU; CPU inference runs the same arithmetic by row gathers (``gather``,
see :func:`resolve_impl`). Runs unchanged on CPU and GPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.models.layers import add_into, blocked_rows_ok, mul_into, row_blocks, softmax_padded
from ovseg.models.ops.bag_sum import index_dtype, weighted_bag_sum

IMPLS = ("auto", "grid_sample", "gather", "embedding_bag")


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Sample every level at the given locations and take the attention-weighted sum.

    Args:
        value: (N, S, M, D) per-head values of all levels, flattened row-major level by level.
        spatial_shapes: (H_l, W_l) of each of the L levels; sum of H_l * W_l = S.
        sampling_locations: (N, Lq, M, L, P, 2) in [0, 1], (x, y) order.
        attention_weights: (N, Lq, M, L, P), softmax-normalised over L * P.

    Returns:
        (N, Lq, M * D).
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    value_list = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    # (N, Lq, M, L, P) -> (N*M, L, 1, Lq, P)
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(n * m, num_levels, 1, lq, p)
    out = None
    for lvl, (h, w) in enumerate(spatial_shapes):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        v = value_list[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Weighted sum level by level: no (N*M, D, Lq, L*P) stack of every level in memory.
        part = _weighted_point_sum(sampled, weights[:, lvl])  # (N*M, D, Lq)
        out = part if out is None else out + part
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()


def _weighted_point_sum(sampled: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(sampled * weights).sum(-1)``: (N*M, D, Lq, P) x (N*M, 1, Lq, P) -> (N*M, D, Lq)."""
    if torch.is_grad_enabled() and (sampled.requires_grad or weights.requires_grad):
        return _WeightedPointSum.apply(sampled, weights)
    return (sampled * weights).sum(-1)


class _WeightedPointSum(torch.autograd.Function):
    """:func:`_weighted_point_sum` with autograd's gradients, bitwise, computed in contiguous
    layouts. The incoming gradient is a transposed view (the core's output is (N, Lq, M * D));
    autograd multiplied that view, broadcast over P, into a strided (N*M, D, Lq, P) gradient
    that ``grid_sample``'s backward then copied: 3x the time of one contiguous copy, one
    product for the sampled values' gradient and one for the weights'."""

    @staticmethod
    def forward(ctx, sampled: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(sampled, weights)
        return (sampled * weights).sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sampled, weights = ctx.saved_tensors
        # As autograd forms it (on the incoming layout, so its sum over D rounds the same).
        grad_weights = (grad.unsqueeze(-1) * sampled).sum(1, keepdim=True)
        spread = grad.contiguous().unsqueeze(-1).expand(*grad.shape, sampled.shape[-1])
        # One pass into a contiguous buffer (a copy of the spread, then an in-place product,
        # took two).
        dtype = torch.promote_types(spread.dtype, weights.dtype)
        grad_sampled = torch.empty(spread.shape, dtype=dtype, device=grad.device)
        torch.mul(spread, weights, out=grad_sampled)  # (N*M, D, Lq, P)
        return grad_sampled.to(sampled.dtype), grad_weights.to(weights.dtype)


def shape_tensor(
    spatial_shapes: Sequence[tuple[int, int]], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(L, 2) tensor of the levels' (H, W). Built with ``torch.full`` rather than
    ``torch.tensor``: under ``torch.export`` with dynamic sizes the entries are symbolic and
    ``torch.tensor`` would specialise the graph to the example's size."""
    rows = [
        torch.cat([torch.full((1, 1), h, dtype=dtype, device=device),
                   torch.full((1, 1), w, dtype=dtype, device=device)], 1)
        for h, w in spatial_shapes
    ]  # fmt: skip
    return torch.cat(rows, 0)


def ms_deform_attn_core_gather(
    value: torch.Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """:func:`ms_deform_attn_core` with the sampling done by channel-contiguous row gathers.

    Each sampling point is a bag of its four bilinear neighbours (nw, ne, sw, se) summed by
    ``embedding_bag`` with grid_sample's own weights, then weighted by attention and summed
    point by point and level by level exactly as :func:`ms_deform_attn_core` does. The
    arithmetic is grid_sample's CPU kernel's, FMA for FMA: the source index is
    ``fma(g + 1, size / 2, -0.5)`` (``addcmul``), the weights are ``(1 - dy) * (1 - dx)`` etc.,
    and ``embedding_bag`` accumulates the corners in that order with fused multiply-adds, as the
    kernel's compiled ``nw_val * nw + ne_val * ne + ...`` does. The rows are gathered from a
    copy of the values with a zero border round each level (:func:`_zero_bordered_table`), so
    an off-map corner reads a zero instead of being masked (the same sums: a corner off the map
    adds zero either way).

    Without gradients on CPU the gather, weighting and sums run a block of queries at a time
    (:func:`~ovseg.models.layers.row_blocks`): the same values, but the block's (rows, M, P, D)
    samples stay in the cache instead of a fresh (N, Lq, M, P, D) buffer a level. Shapes as
    :func:`ms_deform_attn_core`.
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    table = _zero_bordered_table(value, spatial_shapes)  # (N * S' * M, D)
    bags = _bilinear_bags(spatial_shapes, sampling_locations, n, m, index_dtype(table.shape[0]))
    q = n * lq
    attn = attention_weights.reshape(q, m, num_levels, p, 1)

    def weighted_sum(rows: slice, out: torch.Tensor | None = None) -> torch.Tensor:
        """(rows, M, D): the attention-weighted samples of queries ``rows``, level by level,
        summed into ``out`` where given (else into the first level's fresh sum)."""
        acc = None
        for lvl, (idx, wts) in enumerate(bags):
            sampled = weighted_bag_sum(
                idx[rows].reshape(-1, 4), table, wts[rows].reshape(-1, 4).to(table.dtype)
            ).view(-1, m, p, d)
            # In place where the dtype allows (``sampled`` is fresh); (rows, M, D) per level.
            weighted = mul_into(sampled, attn[rows, :, lvl])
            part = torch.sum(weighted, -2, out=out if acc is None else None)
            acc = part if acc is None else add_into(acc, part)
        return acc

    if not blocked_rows_ok(value, sampling_locations, attention_weights):
        return weighted_sum(slice(0, q)).view(n, lq, m * d)
    # The samples' dtype (bf16 values under autocast, promoted by fp32 attention weights).
    dtype = torch.promote_types(table.dtype, attention_weights.dtype)
    out = torch.empty((q, m, d), dtype=dtype, device=value.device)
    for rows in row_blocks(q, m * p * d * table.element_size()):
        weighted_sum(rows, out[rows])  # each block's sums written in place: no copy
    return out.view(n, lq, m * d)


#: The zero border of each level in :func:`_zero_bordered_table`: two rows / columns before the
#: map and two after. :func:`_bilinear_bags` clamps a coordinate to [-2, size], whose neighbours
#: lie in [-2, size + 1]. The lower bound is -2, not -1: a clamped value gets no gradient, and at
#: exactly -1 grid_sample's has one (the neighbour at 0 is on the map).
BORDER = (2, 2)


def _bordered_sizes(spatial_shapes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(H + 4, W + 4) of each level with its zero border."""
    pad = sum(BORDER)
    return [(h + pad, w + pad) for h, w in spatial_shapes]


def _zero_bordered_table(
    value: torch.Tensor, spatial_shapes: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """(N, S, M, D) values -> the (N * S' * M, D) row table the row cores read: each level's
    (H, W) map inside a zero border (:data:`BORDER`), S' = sum of (H + 4) * (W + 4); row
    (n * S' + level start + y' * (W + 4) + x') * M + head, x' = x + 2 and y' = y + 2."""
    n, _, m, d = value.shape
    before = BORDER[0]
    sizes = _bordered_sizes(spatial_shapes)
    table = value.new_empty((n, sum(hp * wp for hp, wp in sizes), m, d))
    start = start_b = 0
    for (h, w), (hp, wp) in zip(spatial_shapes, sizes):
        level = table[:, start_b : start_b + hp * wp].view(n, hp, wp, m, d)
        level[:, :before].zero_()
        level[:, before + h :].zero_()
        level[:, before : before + h, :before].zero_()
        level[:, before : before + h, before + w :].zero_()
        level[:, before : before + h, before : before + w] = value[:, start : start + h * w].view(
            n, h, w, m, d
        )
        start += h * w
        start_b += hp * wp
    return table.view(-1, d)


def _bilinear_bags(
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    n: int,
    m: int,
    itype: torch.dtype,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each level's bilinear bags for the row cores (``gather``, ``embedding_bag``): row
    indices into the zero-bordered value table (:func:`_zero_bordered_table`) and
    grid_sample's corner weights, both (N * Lq, M * P * 4) with the corners nw, ne, sw, se
    last.

    A source coordinate outside [-1, size] has both its neighbours off the map (and no
    gradient in grid_sample), so it is clamped to [-2, size] (see :data:`BORDER`): its corners
    stay zero-border rows, whatever their weights, and every other coordinate keeps
    grid_sample's weights and gradients. No validity masks are needed. A NaN location
    keeps NaN weights (grid_sample's NaN output) on a border row."""
    _, lq, _, _, p, _ = sampling_locations.shape
    dev, dtype = sampling_locations.device, sampling_locations.dtype  # may be wider (autocast)
    sizes = _bordered_sizes(spatial_shapes)
    s_b = sum(hp * wp for hp, wp in sizes)
    # Row of (image n, bordered position, head m): (n * S' + position) * M + m.
    images = torch.arange(n, device=dev, dtype=itype).view(n, 1, 1, 1)
    base = images * (s_b * m) + torch.arange(m, device=dev, dtype=itype).view(1, 1, m, 1)
    grids = torch.mul(sampling_locations, 2).sub_(1)  # 2 * loc - 1, bitwise, one buffer
    half = torch.full((), 0.5, dtype=dtype, device=dev)
    # Corners in grid_sample's order nw, ne, sw, se: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
    corners = ((0, 0), (0, 1), (1, 0), (1, 1))
    # Clamp range: a coordinate in [lo, size + hi] has its neighbours inside the border.
    lo, hi = -BORDER[0], BORDER[1] - 2
    bags, start = [], 0
    for lvl, ((h, w), (hp, wp)) in enumerate(zip(spatial_shapes, sizes)):
        g = grids[:, :, :, lvl]  # (N, Lq, M, P, 2)
        x = torch.addcmul(-half, g[..., 0] + 1, torch.full((), w / 2, dtype=dtype, device=dev))
        y = torch.addcmul(-half, g[..., 1] + 1, torch.full((), h / 2, dtype=dtype, device=dev))
        x, y = x.clamp_(lo, w + hi), y.clamp_(lo, h + hi)
        x0, y0 = x.floor(), y.floor()
        dx, dy = x.sub_(x0), y.sub_(y0)  # fresh buffers (gradients tested)
        # The integer clamp only catches NaN, whose integer value is arbitrary.
        xi, yi = x0.to(itype).clamp_(lo, w + hi), y0.to(itype).clamp_(lo, h + hi)
        # nw corner's row, then its neighbours a column and a bordered row further on.
        first = base + (start + BORDER[0] * (wp + 1)) * m
        idx = torch.empty((*xi.shape, 4), dtype=itype, device=dev)
        torch.add(first, torch.add(xi, yi, alpha=wp), alpha=m, out=idx[..., 0])
        for k, (a, b) in enumerate(corners[1:], 1):
            torch.add(idx[..., 0], (a * wp + b) * m, out=idx[..., k])
        wx, wy = (1 - dx, dx), (1 - dy, dy)
        wts = torch.stack([wy[a] * wx[b] for a, b in corners], -1)
        bags.append((idx.view(n * lq, -1), wts.view(n * lq, -1)))
        start += hp * wp
    return bags


def ms_deform_attn_core_bag(
    value: torch.Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Same result as :func:`ms_deform_attn_core` up to float rounding, computed as one
    weighted bag sum per (query, head): the four bilinear neighbours of each of its L * P
    sampling points (:func:`_bilinear_bags`, from the zero-bordered table), each weighted by
    grid_sample's bilinear weight x the attention weight, summed in one pass.

    The weighting and every sum are fused into that pass, so the rounding is not grid_sample's
    (the "gather" core keeps it); in exchange nothing of (N, Lq, M, L, P, D) is materialised,
    and backward keeps the indices and weights rather than samples. Shapes as
    :func:`ms_deform_attn_core`.
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    table = _zero_bordered_table(value, spatial_shapes)  # (N * S' * M, D)
    bags = _bilinear_bags(spatial_shapes, sampling_locations, n, m, index_dtype(table.shape[0]))
    q = n * lq
    # (N * Lq, M, L, P * 4): each (query, head)'s bag of L * P * 4 rows, level by level.
    idx = torch.stack([i.view(q, m, p * 4) for i, _ in bags], 2)
    wts = torch.stack([w.view(q, m, p, 4) for _, w in bags], 2)
    wts = wts * attention_weights.reshape(q, m, num_levels, p, 1)
    out = weighted_bag_sum(idx.view(q * m, -1), table, wts.view(q * m, -1).to(table.dtype))
    return out.view(n, lq, m * d)


CORES = {
    "grid_sample": ms_deform_attn_core,
    "gather": ms_deform_attn_core_gather,
    "embedding_bag": ms_deform_attn_core_bag,
}


def resolve_impl(impl: str, *inputs: torch.Tensor) -> str:
    """The core that ``impl`` runs on these inputs. "auto" (the default) is "gather" on CPU
    when no gradient is needed (inference: grid_sample's outputs, ~1.5x faster per layer) and
    "grid_sample" otherwise (training keeps grid_sample's backward, whose accumulation order
    the learning runs were measured with; on CUDA grid_sample is the native kernel)."""
    if impl != "auto":
        return impl
    grads = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    return "gather" if inputs[0].device.type == "cpu" and not grads else "grid_sample"


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (parameter names as in Deformable DETR).

    Args:
        d_model: channels of queries and values.
        n_levels: number of feature levels.
        n_heads: attention heads; ``d_model`` must divide evenly.
        n_points: sampling points per head and level.
        impl: "auto" (default: "gather" for CPU inference, "grid_sample" when gradients flow
            or on CUDA; see :func:`resolve_impl`), "grid_sample" (the reference arithmetic),
            "gather" (the same arithmetic by channel-contiguous row gathers, equal outputs on
            CPU) or "embedding_bag" (fastest on CPU; equal up to float rounding, which can flip
            a borderline decision downstream, so it is opt-in).
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        impl: str = "auto",
    ):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"deformable attention impl must be one of {IMPLS}; got {impl!r}")
        self.impl = impl
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model,
            n_levels,
            n_heads,
            n_points,
        )
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) normalised (x, y) in [0, 1].
            input_flatten: (N, S, C) all levels flattened.
            spatial_shapes: (H_l, W_l) per level.

        Returns:
            (N, Lq, C).
        """
        n, lq, _ = query.shape
        s = input_flatten.shape[1]
        value = self.value_proj(input_flatten).view(
            n, s, self.n_heads, self.d_model // self.n_heads
        )
        offsets = self.sampling_offsets(query).view(
            n, lq, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(query).view(
            n, lq, self.n_heads, self.n_levels * self.n_points
        )
        # Training takes the padded softmax (~7x faster on CPU, rounding-level apart): train and
        # eval modes decide, not the grad mode, so a checkpoint's recompute gives its forward's
        # values. Exact inference keeps the reference softmax.
        weights = softmax_padded(weights) if self.training else weights.softmax(-1)
        weights = weights.view(n, lq, self.n_heads, self.n_levels, self.n_points)
        # ref + offset / (W, H), as Deformable DETR writes it; the divisor is (L, P, 2) and the
        # reference points (N, Lq, 1, L, P, 2) so that neither broadcast has an inner dim of
        # stride 0 (5x slower than contiguous operands at the ADE size). Bitwise the same.
        normalizer = shape_tensor(spatial_shapes, query.device, query.dtype).flip(-1)  # (W, H)
        normalizer = normalizer[:, None].expand(-1, self.n_points, -1).contiguous()
        refs = reference_points[:, :, None, :, None, :].expand(-1, -1, 1, -1, self.n_points, -1)
        locations = add_into(offsets / normalizer, refs)
        core = CORES[resolve_impl(self.impl, value, locations, weights)]
        out = core(value, spatial_shapes, locations, weights)
        return self.output_proj(out)


@contextlib.contextmanager
def grid_sample_for_export(model: nn.Module) -> Iterator[None]:
    """Run all of ``model``'s deformable attention as "grid_sample" inside the block.

    The row cores ("gather", "auto", "embedding_bag") compute grid_sample's arithmetic (the
    last up to rounding) with in-place writes into slices of their index and value tables,
    which the ONNX tracer does not record faithfully. ONNX has a ``GridSample`` operator and
    grid_sample traces with symbolic sizes, so exported graphs and programs use it.
    """
    swapped = [
        (mod, mod.impl)
        for mod in model.modules()
        if isinstance(mod, MSDeformAttn) and mod.impl != "grid_sample"
    ]
    for mod, _ in swapped:
        mod.impl = "grid_sample"
    try:
        yield
    finally:
        for mod, impl in swapped:
            mod.impl = impl
