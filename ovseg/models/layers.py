"""Small building blocks shared by the decoders."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvNorm(nn.Conv2d):
    """Conv2d followed by an optional norm and activation.

    The norm is a child named ``norm`` so that state-dict keys match detectron2's ``Conv2d``
    (``adapter_1.weight``, ``adapter_1.norm.weight``), which official checkpoints use.
    """

    def __init__(
        self,
        *args,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def build_norm(kind: str, channels: int) -> nn.Module | None:
    """ "GN" (32 groups, as Mask2Former), "LN"-free variants are not used; "" means none."""
    if kind in ("", None):
        return None
    if kind == "GN":
        return nn.GroupNorm(32, channels)
    raise ValueError(f"unknown norm {kind!r}: use 'GN' or ''")


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's XavierFill (kaiming_uniform with a=1), zero bias — Mask2Former's conv init."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (parameter names ``layers.i``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip([input_dim, *dims], [*dims, output_dim])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def mask_pooling(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average ``features`` (B, C, H, W) inside each binarised mask (B, Q, H, W) -> (B, Q, C).

    Masks are logits; a pixel belongs to a mask where the logit is > 0 (FC-CLIP / ODISE). The
    1e-8 in the denominator makes an empty mask pool to zeros.
    """
    if masks.shape[-2:] != features.shape[-2:]:
        masks = F.interpolate(masks, size=features.shape[-2:], mode="bilinear", align_corners=False)
    needs_grad = torch.is_grad_enabled() and features.requires_grad
    float_counts = _float_counts_exact(features, masks)
    if not needs_grad and float_counts:
        return torch.einsum("bchw,bqhw->bqc", features, _inside_weights(masks.detach()))
    weights = None
    with torch.no_grad():
        inside = masks.detach() > 0
        if float_counts:  # training in fp32: the same weights without the int32 count copy
            weights, denom = _inside_weights_and_denominators(masks.detach())
        else:
            denom = _count_inside(inside).to(features.dtype) + 1e-8
    if needs_grad:
        return _MaskPooling.apply(features, inside, denom, weights)
    return torch.einsum("bchw,bqhw->bqc", features, _normalised(inside, denom))


def _count_inside(inside: torch.Tensor) -> torch.Tensor:
    """(B, Q, H, W) bool -> (B, Q, 1, 1) int32 pixel counts, exact (a float sum of the 0/1
    mask gives the same numbers). Summed as bytes into int32: ``bool.sum()`` first copies the
    masks to int64 (8 bytes a pixel; 524 MB for 250 queries at stride 4 of a 1024 crop)."""
    if capturing_graph():
        return inside.sum(dim=(-1, -2), keepdim=True)
    return inside.view(torch.uint8).sum(dim=(-1, -2), keepdim=True, dtype=torch.int32)


def _normalised(inside: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """``inside / denom`` bitwise (1 / denom inside, +0 outside), as (B, Q, H, W) of
    ``denom``'s dtype, in one buffer: the division itself first converts the bool masks to a
    second full-size float tensor."""
    if capturing_graph():
        return inside / denom
    weights = torch.empty(inside.shape, dtype=denom.dtype, device=inside.device)
    return weights.copy_(inside).div_(denom)


def _float_counts_exact(features: torch.Tensor, masks: torch.Tensor) -> bool:
    """Whether :func:`_inside_weights` gives :func:`mask_pooling`'s numbers: fp32 features
    (a float sum of 0/1 values counts exactly up to 2**24 pixels), eager."""
    pixels = masks.shape[-1] * masks.shape[-2]
    return features.dtype == torch.float32 and pixels <= 2**24 and not capturing_graph()


def _inside_weights(masks: torch.Tensor) -> torch.Tensor:
    """(B, Q, H, W) mask logits -> fp32 ``inside / (count + 1e-8)``, bitwise
    :func:`_normalised`'s, in one buffer: the comparison is written as 0/1 floats, counted by
    their sum (exact, see :func:`_float_counts_exact`) and divided in place, ~2x faster at
    stride 4 of the ADE size. Inference needs no bool mask (and its copy to floats) besides;
    training keeps one for backward (:class:`_MaskPooling`)."""
    return _inside_weights_and_denominators(masks)[0]


def _inside_weights_and_denominators(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_inside_weights` and the fp32 (B, Q, 1, 1) ``count + 1e-8`` they were divided
    by, bitwise ``_count_inside(masks > 0).float() + 1e-8``: the float sum of the 0/1 values
    counts exactly, and saves the int32 copy of the masks that ``_count_inside``'s sum makes
    (~20 ms a call at stride 4 of a 1024 crop, ten calls a training step)."""
    weights = torch.empty(masks.shape, dtype=torch.float32, device=masks.device)
    torch.gt(masks, 0, out=weights)
    denom = weights.sum(dim=(-1, -2), keepdim=True).add_(1e-8)
    return weights.div_(denom), denom


def capturing_graph() -> bool:
    """Whether this runs inside an ONNX / TorchScript trace or a ``torch.export`` /
    ``torch.compile`` graph, where eager-only shortcuts (dtype views, out-of-graph kernels) give
    way to the plain formulas (a graph compiler fuses those anyway)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class _MaskPooling(torch.autograd.Function):
    """:func:`mask_pooling` with a gradient for ``features`` that keeps the bool masks (1 byte
    a pixel) for backward instead of autograd's saved float ``masks / denom`` (4 bytes): with
    250 queries at stride 4 of a 1024x1024 crop that is 49 MB less per decoder layer. The
    forward is the plain computation; backward recomputes the normalised masks."""

    @staticmethod
    def forward(
        ctx,
        features: torch.Tensor,
        inside: torch.Tensor,
        denom: torch.Tensor,
        weights: torch.Tensor | None = None,
    ):
        """``weights``: ``_normalised(inside, denom)`` where the caller already has it."""
        ctx.save_for_backward(inside, denom)
        ctx.features_dtype = features.dtype
        if weights is None:
            weights = _normalised(inside, denom)
        return torch.einsum("bchw,bqhw->bqc", features, weights)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inside, denom = ctx.saved_tensors
        weights = _normalised(inside, denom.to(grad.dtype))
        grad_features = torch.einsum("bqc,bqhw->bchw", grad, weights)
        return grad_features.to(ctx.features_dtype), None, None, None


#: Decoder layers whose mask sets :class:`_LayeredMaskPooling`'s backward multiplies at once:
#: 500 rows of inner dimension instead of 250 (~1.5x the throughput of single layers at stride
#: 4 of a 1024 crop), for a 131 MB buffer.
LAYERS_PER_PRODUCT = 2


def mask_pooling_layers(
    features: torch.Tensor, masks: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """:func:`mask_pooling` of one feature map by each of several mask sets (a decoder's
    layers), with one backward for all of them.

    Each set's pooling is :func:`mask_pooling`'s, bitwise. The features' gradient, the sum of
    every set's, is formed as a few products over several sets' masks at once, accumulated in
    one buffer, instead of one product and one full-size sum per set (~1.5x faster for the ten
    sets of a training step; equal up to float rounding). Where no gradient is recorded, or
    the fp32 eager path does not apply, it is one :func:`mask_pooling` per set.

    Args:
        features: (B, C, H, W).
        masks: L mask-logit sets (B, Q, H, W), the features' size.

    Returns:
        L pooled (B, Q, C).
    """
    needs_grad = torch.is_grad_enabled() and features.requires_grad
    if (
        not needs_grad
        or len(masks) < 2
        or any(m.shape[-2:] != features.shape[-2:] for m in masks)
        or not all(_float_counts_exact(features, m) for m in masks)
    ):
        return [mask_pooling(features, m) for m in masks]
    return list(_LayeredMaskPooling.apply(features, *masks).unbind(0))


class _LayeredMaskPooling(torch.autograd.Function):
    """:func:`mask_pooling_layers`' fp32 training path. Keeps each set's bool masks and
    counts for backward, as :class:`_MaskPooling` does; the returned (L, B, Q, C) is the
    sets' poolings stacked."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        pooled, insides, denoms = [], [], []
        for m in masks:
            m = m.detach()
            weights, denom = _inside_weights_and_denominators(m)
            pooled.append(torch.einsum("bchw,bqhw->bqc", features, weights))
            del weights
            insides.append(m > 0)
            denoms.append(denom)
        ctx.save_for_backward(*insides, *denoms)
        ctx.features_shape, ctx.features_dtype = features.shape, features.dtype
        return torch.stack(pooled)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        n = len(saved) // 2
        # Under autocast the poolings ran in bf16 / fp16; their gradient is formed in the
        # features' own (fp32) precision.
        grad = grad.to(ctx.features_dtype)
        insides, denoms = saved[:n], saved[n:]
        b, c, h, w = ctx.features_shape
        q = insides[0].shape[1]
        # sum_l (inside_l / denom_l)^T grad_l = sum_l inside_l^T (grad_l / denom_l): the
        # counts go into the small (Q, C) gradients, the masks into the product as 0 / 1.
        scaled = [grad[i] / denoms[i][..., 0] for i in range(n)]  # (B, Q, C) each
        grad_features = grad.new_zeros(b, c, h * w)
        buffer = grad.new_empty(min(n, LAYERS_PER_PRODUCT) * q, h * w)
        for start in range(0, n, LAYERS_PER_PRODUCT):
            group = range(start, min(n, start + LAYERS_PER_PRODUCT))
            rows = buffer[: len(group) * q]
            for i in range(b):
                for k, layer in enumerate(group):
                    rows[k * q : (k + 1) * q].copy_(insides[layer][i].flatten(1))
                lhs = torch.cat([scaled[layer][i] for layer in group])  # (k * Q, C)
                grad_features[i].addmm_(lhs.T, rows)
        return grad_features.view(b, c, h, w), *(None for _ in range(n))


#: Row width that PyTorch's CPU softmax over the last dim vectorises (fp32 AVX-512 lanes).
SOFTMAX_LANES = 16


def softmax_padded(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, which on CPU is first padded with ``-inf`` to a multiple of
    :data:`SOFTMAX_LANES`: PyTorch's CPU kernel runs short rows of another width element by
    element (deformable attention's 3 levels x 4 points: 20 ms for 21,504 x 8 rows of 12,
    against 2.7 ms padded to 16). The padding adds exact zeros, but the vector ``exp`` and sum
    round differently (3.6e-7 at most on random rows), so exact inference keeps
    :func:`torch.softmax` and training uses this; autograd differentiates the pad and slice.

    Args:
        x: (..., K) float.

    Returns:
        (..., K), each row summing to 1.
    """
    k = x.shape[-1]
    pad = -k % SOFTMAX_LANES
    if x.device.type != "cpu" or pad == 0 or k >= 4 * SOFTMAX_LANES or capturing_graph():
        return x.softmax(-1)
    return F.pad(x, (0, pad), value=float("-inf")).softmax(-1)[..., :k].contiguous()


def add_into(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh + other``, written into ``fresh`` (a layer's new output, which nothing else
    holds) when the sum keeps its dtype; under autocast, where a bf16 output meets an fp32
    stream, a new promoted tensor as ``+`` gives. Saves a full-size buffer per residual."""
    if torch.promote_types(fresh.dtype, other.dtype) == fresh.dtype:
        return fresh.add_(other)
    return other + fresh


def mul_into(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh * other`` on the same terms as :func:`add_into`."""
    if torch.promote_types(fresh.dtype, other.dtype) == fresh.dtype:
        return fresh.mul_(other)
    return fresh * other


#: Bytes a block of rows of a CPU inference loop holds (:func:`row_blocks`): small enough that
#: a block's intermediates stay in the L2 / L3 cache between the ops that read them, and are
#: reused from the heap instead of being mapped afresh (page faults) for every full-size op.
BLOCK_BYTES = 4 << 20


def row_blocks(rows: int, bytes_per_row: int, budget: int | None = None) -> Iterator[slice]:
    """Consecutive slices covering ``range(rows)``, each of about ``budget`` bytes (default
    :data:`BLOCK_BYTES`) at ``bytes_per_row``; at least one row a block.

    For row-wise computations (a linear layer, a norm, one query's sampling) done block by
    block in CPU inference, where it gives the same values as the full-size ops, faster."""
    step = max(1, (BLOCK_BYTES if budget is None else budget) // max(1, bytes_per_row))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def blocked_rows_ok(*tensors: torch.Tensor) -> bool:
    """Whether a row-blocked CPU inference loop may replace full-size ops here: eager, on
    CPU, with no gradient to record (blocks are written into a preallocated output)."""
    if capturing_graph() or any(t.device.type != "cpu" for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
