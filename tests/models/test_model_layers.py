"""Small building blocks of ovseg/models/layers.py."""

from __future__ import annotations

import torch

from ovseg.models.layers import add_into, mul_into


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
