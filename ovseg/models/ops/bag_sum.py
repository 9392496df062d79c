"""Weighted row-bag sums (``embedding_bag`` in "sum" mode) with a faster CPU backward.

The deformable-attention cores that gather rows (``gather``, ``embedding_bag``) sum bags of
table rows weighted per sample. PyTorch's CPU backward for the table's gradient sorts the
8 million indices of a layer in int64 and then accumulates each row's entries one ``axpy``
at a time (~0.95 s a layer at a 1024 crop). :func:`weighted_bag_sum` computes the same
gradient as the transposed sum: a stable sort of the indices in their own (int32) dtype
gives, for each table row, its entries in the order PyTorch adds them, and one more
``embedding_bag`` sums them (~0.27 s). In fp32 from ~32k entries on, where PyTorch's own sort
is stable, the values are PyTorch's bitwise (tested): the same products added in the same order
with the same fused multiply-adds. Below that PyTorch's order among equal indices is arbitrary,
and in bf16 it rounds after every entry where this sums in fp32: the same sums up to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ovseg.models.layers import capturing_graph

#: Tables (and sort permutations) with more entries than this are indexed in int64.
INT32_MAX_ROWS = 2**31 - 1


def index_dtype(rows: int) -> torch.dtype:
    """int32 for indices into ``rows`` rows (or positions) where they fit (half the index
    memory and traffic of int64; ``embedding_bag`` takes either), else int64."""
    return torch.int32 if rows <= INT32_MAX_ROWS else torch.long


def weighted_bag_sum(
    indices: torch.Tensor, table: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")``.

    Args:
        indices: (B, K) int32 / int64 rows of ``table``, K per bag.
        table: (R, D).
        weights: (B, K) in ``table``'s dtype.

    Returns:
        (B, D): each bag's weighted sum of its rows. Where a gradient is recorded on CPU (and
        no graph is being captured), backward runs :class:`_WeightedBagSum`'s transposed sum.
    """
    needs_grad = torch.is_grad_enabled() and (table.requires_grad or weights.requires_grad)
    if needs_grad and table.device.type == "cpu" and not capturing_graph():
        return _WeightedBagSum.apply(indices, table, weights)
    return F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")


class _WeightedBagSum(torch.autograd.Function):
    """:func:`weighted_bag_sum` with PyTorch's gradients (bitwise where the module docstring
    says), the table's computed by :func:`transposed_bag_sum`."""

    @staticmethod
    def forward(
        ctx, indices: torch.Tensor, table: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        ctx.rows = table.shape[0]
        ctx.save_for_backward(indices, weights, table if weights.requires_grad else None)
        return F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:
        indices, weights, table = ctx.saved_tensors
        grad = grad.contiguous()
        grad_table = grad_weights = None
        if ctx.needs_input_grad[1]:
            grad_table = transposed_bag_sum(indices, weights, grad, ctx.rows)
        if ctx.needs_input_grad[2]:
            bags, k = indices.shape
            flat = indices.reshape(-1)
            offsets = torch.arange(0, bags * k, k, dtype=flat.dtype, device=flat.device)
            offset2bag = torch.arange(bags, dtype=flat.dtype, device=flat.device)
            # PyTorch's own kernel for it: each entry's row dotted with its bag's gradient.
            grad_weights = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad, table, flat, offsets, offset2bag.repeat_interleave(k), 0
            ).view(bags, k)
        return None, grad_table, grad_weights


def transposed_bag_sum(
    indices: torch.Tensor, weights: torch.Tensor, grad: torch.Tensor, rows: int
) -> torch.Tensor:
    """The table's gradient of a weighted bag sum: row r gets ``weights[b, k] * grad[b]`` summed
    over every entry (b, k) with ``indices[b, k] == r``, in the entries' order.

    Args:
        indices / weights: (B, K), as the forward's.
        grad: (B, D) gradient of the bag sums.
        rows: R, the table's rows.

    Returns:
        (R, D); zeros where no entry points.
    """
    k = indices.shape[1]
    flat = indices.reshape(-1)
    if flat.numel() == 0:
        return grad.new_zeros((rows, grad.shape[1]))
    # Each row's entries side by side, in their original order (a stable sort), as bags.
    # The permutation in int32 where it fits: half the traffic of the gathers that follow
    # (``index_select`` gathers a permutation faster than ``[order]``).
    itype = index_dtype(flat.numel())
    order = torch.argsort(flat, stable=True).to(itype)
    counts = torch.bincount(flat, minlength=rows)
    offsets = torch.zeros(rows + 1, dtype=itype, device=flat.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    sorted_weights = weights.reshape(-1).index_select(0, order)
    bags = order.div_(k, rounding_mode="floor")  # each entry's bag: the row of grad it reads
    return F.embedding_bag(
        bags, grad, offsets, per_sample_weights=sorted_weights, mode="sum", include_last_offset=True
    )
