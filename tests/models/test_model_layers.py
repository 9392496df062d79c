"""Small building blocks of ovseg/models/layers.py."""

from __future__ import annotations

import pytest
import torch

from ovseg.models.layers import add_into, mask_pooling, mul_into


def test_add_into_and_mul_into_write_in_place_only_when_the_dtype_holds():
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    expected_sum, expected_prod = a + b, a * b
    fresh = a.clone()
    out = add_into(fresh, b)
    assert out is fresh and torch.equal(out, expected_sum)
    fresh = a.clone()
    out = mul_into(fresh, b)
    assert out is fresh and torch.equal(out, expected_prod)
    # Autocast: a bf16 layer output meets the fp32 stream; the sum is fp32, as `+` gives.
    half = a.bfloat16()
    for fn, ref in ((add_into, b + half), (mul_into, half * b)):
        out = fn(half, b)
        assert out is not half and out.dtype == torch.float32 and torch.equal(out, ref)
    assert torch.equal(half, a.bfloat16())  # untouched
    # Autograd: the fresh output of a layer may be written into; gradients are unchanged.
    lin = torch.nn.Linear(5, 5)
    x = torch.randn(4, 5, requires_grad=True)
    add_into(lin(x), x).sum().backward()
    g = x.grad.clone()
    x.grad = None
    (lin(x) + x).sum().backward()
    assert torch.equal(g, x.grad)


def _plain_mask_pooling(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """FC-CLIP's formula, with autograd saving the float normalised masks."""
    binary = (masks.detach() > 0).to(features.dtype)
    denom = binary.sum(dim=(-1, -2), keepdim=True) + 1e-8
    return torch.einsum("bchw,bqhw->bqc", features, binary / denom)


def test_mask_pooling_training_path_saves_bool_masks_and_matches_the_plain_gradient():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 16, 12, 10, generator=g, dtype=torch.float64, requires_grad=True)
    masks = torch.randn(2, 7, 12, 10, generator=g, dtype=torch.float64)
    masks[:, 0] = -1.0  # an empty mask pools to zeros and gets no gradient
    saved = []

    def pack(t):
        saved.append((t.dtype, tuple(t.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = mask_pooling(features, masks)
    # No float tensor of the masks' size is kept for backward: the masks are saved as bools.
    assert (torch.float64, (2, 7, 12, 10)) not in saved
    assert (torch.bool, (2, 7, 12, 10)) in saved
    ref = _plain_mask_pooling(features, masks)
    assert torch.equal(out, ref)
    with torch.no_grad():
        assert torch.equal(mask_pooling(features, masks), ref)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, features, upstream)
    (ref_grad,) = torch.autograd.grad(ref, features, upstream)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda f: mask_pooling(f, masks), (features,))
    # Bilinear resizing of the masks to the features' size happens before binarising.
    small = masks[..., ::2, ::2].contiguous()
    torch.testing.assert_close(
        mask_pooling(features, small),
        _plain_mask_pooling(
            features,
            torch.nn.functional.interpolate(
                small, size=(12, 10), mode="bilinear", align_corners=False
            ),
        ),
    )


def test_mask_pooling_fp32_training_weights_equal_the_bool_path_bitwise(monkeypatch):
    """Training in fp32 builds the pooling weights and counts from a float comparison (no
    int32 copy of the masks); output and gradient are bitwise the bool path's, and backward
    still keeps only the bool masks."""
    import ovseg.models.layers as layers

    g = torch.Generator().manual_seed(4)
    features = torch.randn(2, 16, 37, 53, generator=g, requires_grad=True)
    masks = torch.randn(2, 9, 37, 53, generator=g)
    masks[0, 3] = -1.0  # empty
    masks[1, 4] = 1.0  # full
    masks[1, 5, 0, :7] = 0.0  # exactly 0 is outside
    upstream = torch.randn(2, 9, 16, generator=g)
    calls, saved = [], []
    real = layers._inside_weights_and_denominators
    monkeypatch.setattr(
        layers,
        "_inside_weights_and_denominators",
        lambda m: calls.append(m.shape) or real(m),
    )
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append((t.dtype, tuple(t.shape))) or t, lambda t: t
    ):
        out = mask_pooling(features, masks)
    assert calls == [masks.shape]
    assert (torch.float32, tuple(masks.shape)) not in saved
    assert (torch.bool, tuple(masks.shape)) in saved
    (grad,) = torch.autograd.grad(out, features, upstream)
    monkeypatch.setattr(layers, "_float_counts_exact", lambda f, m: False)  # the bool path
    ref = mask_pooling(features, masks)
    (ref_grad,) = torch.autograd.grad(ref, features, upstream)
    assert calls == [masks.shape]
    assert torch.equal(out, ref) and torch.equal(grad, ref_grad)
    assert torch.equal(out.detach(), _plain_mask_pooling(features, masks).detach())


def test_mask_pooling_counts_and_weights_equal_the_plain_division_bitwise():
    # The pooling weights are built without the plain formula's full-size int64 / float copies
    # of the bool masks; the numbers must stay those of ``inside.sum()`` and ``inside / denom``.
    from ovseg.models.layers import _count_inside, _normalised

    g = torch.Generator().manual_seed(1)
    masks = torch.randn(2, 9, 37, 53, generator=g)
    masks[0, 3] = -1.0  # empty
    masks[1, 4] = 1.0  # full
    inside = masks > 0
    counts = _count_inside(inside)
    assert counts.shape == (2, 9, 1, 1)
    assert torch.equal(counts.long(), inside.sum(dim=(-1, -2), keepdim=True))
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        denom = counts.to(dtype) + 1e-8
        weights = _normalised(inside, denom)
        assert weights.dtype == dtype and weights.is_contiguous()
        assert torch.equal(weights, inside / denom)
        assert not torch.signbit(weights[0, 3]).any()  # +0 where the mask is empty
    # A non-contiguous mask (a transposed view) gives the same numbers.
    view = inside.transpose(-1, -2)
    assert torch.equal(_count_inside(view).long(), view.sum(dim=(-1, -2), keepdim=True))
    denom = counts.float() + 1e-8
    assert torch.equal(_normalised(view, denom), view / denom)


def test_mask_pooling_inference_weights_equal_the_bool_path_bitwise(monkeypatch):
    """Inference builds the fp32 pooling weights from a float comparison counted by a float
    sum; weights and pooled features are bitwise those of the bool masks' path (which
    gradients, other dtypes and huge masks keep)."""
    from ovseg.models.layers import _count_inside, _inside_weights, _normalised

    g = torch.Generator().manual_seed(3)
    masks = torch.randn(2, 9, 37, 53, generator=g)
    masks[0, 3] = -1.0  # empty
    masks[1, 4] = 1.0  # full
    masks[1, 5, 0, :7] = 0.0  # exactly 0 is outside
    inside = masks > 0
    expected = _normalised(inside, _count_inside(inside).float() + 1e-8)
    weights = _inside_weights(masks)
    assert weights.dtype == torch.float32 and torch.equal(weights, expected)
    assert not torch.signbit(weights[0, 3]).any()
    features = torch.randn(2, 16, 37, 53, generator=g, requires_grad=True)
    import ovseg.models.layers as layers

    calls = []
    monkeypatch.setattr(
        layers, "_inside_weights", lambda m: calls.append(m.shape) or _inside_weights(m)
    )
    trained = mask_pooling(features, masks)  # gradients: the bool path
    assert calls == []
    with torch.no_grad():
        inferred = mask_pooling(features, masks)
        mask_pooling(features.double(), masks)  # fp64: the bool path too
    assert calls == [masks.shape]  # inference in fp32 builds the float weights
    assert torch.equal(inferred, trained.detach())
    assert torch.equal(inferred, torch.einsum("bchw,bqhw->bqc", features.detach(), expected))


def test_mask_pooling_traces_to_the_eager_result():
    # The eager path views the bool masks as bytes, which the TorchScript / ONNX tracer cannot
    # record; under a trace the plain formulas run and give the same numbers.
    g = torch.Generator().manual_seed(2)
    features, masks = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 3, 8, 8, generator=g)
    traced = torch.jit.trace(mask_pooling, (features, masks))
    other = torch.randn(1, 3, 8, 8, generator=g)
    assert torch.equal(traced(features, other), mask_pooling(features, other))


def test_softmax_padded_equals_softmax_to_rounding_with_its_gradient():
    from ovseg.models.layers import softmax_padded

    torch.manual_seed(0)
    x = (torch.randn(3, 50, 8, 12) * 4).requires_grad_()
    g = torch.randn(3, 50, 8, 12)
    ref = x.softmax(-1)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    out = softmax_padded(x)
    (grad,) = torch.autograd.grad(out, x, g)
    assert out.shape == ref.shape and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-5)
    # Rows already a multiple of the lanes, or long, are PyTorch's own softmax, bitwise.
    for width in (16, 100):
        y = torch.randn(4, width)
        assert torch.equal(softmax_padded(y), y.softmax(-1))


@pytest.mark.parametrize("layers", [2, 3, 5])
def test_mask_pooling_layers_pools_bitwise_and_sums_the_gradients_to_rounding(layers):
    from ovseg.models.layers import mask_pooling_layers

    torch.manual_seed(0)
    features = torch.randn(2, 6, 9, 11, requires_grad=True)
    masks = [torch.randn(2, 7, 9, 11) for _ in range(layers)]
    masks[0][1, 3] = -1.0  # an empty mask pools to zeros and passes no gradient
    grads = [torch.randn(2, 7, 6) for _ in range(layers)]
    plain = [mask_pooling(features, m) for m in masks]
    (grad_plain,) = torch.autograd.grad(plain, features, grads)
    pooled = mask_pooling_layers(features, masks)
    (grad,) = torch.autograd.grad(pooled, features, grads)
    assert len(pooled) == layers
    # One autograd node for all the sets (not one mask_pooling each).
    assert "_LayeredMaskPooling" in pooled[0].grad_fn.next_functions[0][0].name()
    for a, b in zip(pooled, plain):
        assert torch.equal(a, b)
    assert torch.equal(pooled[0][1, 3], torch.zeros(6))
    torch.testing.assert_close(grad, grad_plain, rtol=1e-5, atol=1e-6)
    # Without a recorded gradient it is one mask_pooling per set.
    with torch.no_grad():
        for a, b in zip(mask_pooling_layers(features, masks), plain):
            assert torch.equal(a, b)


def test_mask_pooling_layers_under_bf16_autocast_returns_an_fp32_gradient():
    from ovseg.models.layers import mask_pooling_layers

    torch.manual_seed(0)
    features = torch.randn(1, 8, 6, 6, requires_grad=True)
    masks = [torch.randn(1, 5, 6, 6) for _ in range(3)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = mask_pooling_layers(features, masks)
        plain = [mask_pooling(features, m) for m in masks]
    (grad,) = torch.autograd.grad(sum(p.float().sum() for p in pooled), features)
    (grad_plain,) = torch.autograd.grad(sum(p.float().sum() for p in plain), features)
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad, grad_plain, rtol=1e-2, atol=1e-2)
