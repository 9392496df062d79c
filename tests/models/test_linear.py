"""oneDNN fully connected layers: where they apply, and that they compute F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg.models.ops import linear as fc

pytestmark = pytest.mark.skipif(
    not fc._AVAILABLE, reason="this torch build has no oneDNN linear op"
)


def operands(requires_grad: bool = False):
    g = torch.Generator().manual_seed(0)
    # K = 768 (the text tower's width): there the two kernels round differently on this CI's
    # CPU, so the bitwise check below tells which one ran.
    x = torch.randn(3, 37, 768, generator=g, requires_grad=requires_grad)
    w = torch.randn(200, 768, generator=g) * 0.1
    b = torch.randn(200, generator=g)
    return x, w, b


def test_onednn_linear_is_f_linear_up_to_rounding():
    x, w, b = operands()
    with torch.inference_mode():
        assert fc.uses_onednn(x, w)
        ours = fc.linear(x, w, b)
        # It really is oneDNN's product (not F.linear behind the gate).
        assert torch.equal(ours, torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""))
        torch.testing.assert_close(ours, F.linear(x, w, b), atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(fc.linear(x, w), F.linear(x, w), atol=1e-5, rtol=1e-6)
        again = fc.linear(x.clone(), w, b)
    assert torch.equal(ours, again)  # deterministic
    assert ours.shape == (3, 37, 200)


def test_plain_f_linear_wherever_onednn_does_not_apply():
    x, w, b = operands(requires_grad=True)
    assert not fc.uses_onednn(x, w)  # a gradient is needed: autograd's F.linear
    y = fc.linear(x, w, b)
    assert torch.equal(y, F.linear(x, w, b))
    y.sum().backward()
    assert x.grad is not None
    with torch.no_grad():
        x = x.detach()
        assert fc.uses_onednn(x, w)
        assert not fc.uses_onednn(x.double(), w.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not fc.uses_onednn(x, w)
            assert fc.linear(x, w, b).dtype == torch.bfloat16
        with fc.onednn_linear(False):
            assert not fc.uses_onednn(x, w)
            assert torch.equal(fc.linear(x, w, b), F.linear(x, w, b))
        assert fc.uses_onednn(x, w)  # restored
