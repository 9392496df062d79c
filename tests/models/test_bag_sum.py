"""Weighted bag sums: PyTorch's embedding_bag values and gradients, the table's by a sort."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg.models.ops import bag_sum
from ovseg.models.ops import ms_deform_attn as mda


def operands(bags: int, k: int, rows: int, dtype=torch.float32, itype=torch.int32, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, rows, (bags, k), generator=g).to(itype)
    table = torch.randn(rows, 32, generator=g).to(dtype)
    weights = torch.rand(bags, k, generator=g).to(dtype)
    grad = torch.randn(bags, 32, generator=g).to(dtype)
    return idx, table, weights, grad


def grads(fn, idx, table, weights, grad, needs=(True, True)):
    table = table.clone().requires_grad_(needs[0])
    weights = weights.clone().requires_grad_(needs[1])
    out = fn(idx, table, weights)
    out.backward(grad)
    return out, table.grad, weights.grad


def builtin(idx, table, weights):
    return F.embedding_bag(idx, table, per_sample_weights=weights, mode="sum")


@pytest.mark.parametrize("itype", [torch.int32, torch.int64])
@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_gradients_are_embedding_bags_bitwise(itype, needs):
    # 96k entries over 5000 rows (~19 a row): past the size where PyTorch sorts the indices
    # stably (below it its own order among equal indices is arbitrary).
    ops = operands(2000, 48, 5000, itype=itype)
    ours = grads(bag_sum.weighted_bag_sum, *ops, needs=needs)
    theirs = grads(builtin, *ops, needs=needs)
    for a, b in zip(ours, theirs):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_table_gradient_is_each_rows_entry_sum_where_pytorchs_order_differs(dtype):
    # Few rows, many entries each, and small sizes or other dtypes, where PyTorch's own
    # backward adds in another order (or, in bf16, rounds each step): the definition, to
    # the dtype's rounding.
    idx, table, weights, grad = operands(300, 16, 7, dtype=dtype)
    _, g_table, g_weights = grads(bag_sum.weighted_bag_sum, idx, table, weights, grad)
    flat = idx.reshape(-1).long()
    contrib = weights.double().reshape(-1, 1) * grad.double().repeat_interleave(16, 0)
    expected = torch.zeros(7, 32, dtype=torch.float64).index_add_(0, flat, contrib)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(g_table.double(), expected, rtol=tol, atol=tol * 30)
    dots = (table.double()[flat] * grad.double().repeat_interleave(16, 0)).sum(-1)
    torch.testing.assert_close(g_weights.double(), dots.view(300, 16), rtol=tol, atol=tol * 30)


def test_unread_rows_get_zero_gradient_and_no_entries_give_zeros():
    idx = torch.tensor([[0, 2], [2, 2]], dtype=torch.int32)
    weights = torch.tensor([[0.5, 1.0], [2.0, 0.25]])
    grad = torch.tensor([[1.0, -1.0], [3.0, 4.0]])
    g = bag_sum.transposed_bag_sum(idx, weights, grad, rows=4)
    expected = torch.tensor([[0.5, -0.5], [0.0, 0.0], [1.0 + 6.75, -1.0 + 9.0], [0.0, 0.0]])
    assert torch.equal(g, expected)
    empty = bag_sum.transposed_bag_sum(idx[:0], weights[:0], grad[:0], rows=3)
    assert torch.equal(empty, torch.zeros(3, 2))


def test_plain_embedding_bag_without_gradients(monkeypatch):
    ops = operands(50, 4, 30)
    calls = []
    monkeypatch.setattr(bag_sum._WeightedBagSum, "apply", lambda *a: calls.append(a))
    idx, table, weights, _ = ops
    with torch.no_grad():
        out = bag_sum.weighted_bag_sum(idx, table.requires_grad_(), weights)
    assert not calls
    assert torch.equal(out, builtin(idx, table, weights))


@pytest.mark.parametrize("core", ["gather", "embedding_bag"])
def test_deformable_cores_train_through_the_sorted_backward(monkeypatch, core):
    seen = []
    real = bag_sum.transposed_bag_sum

    def spy(*args, **kwargs):
        seen.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(bag_sum, "transposed_bag_sum", spy)
    g = torch.Generator().manual_seed(1)
    shapes = [(6, 8), (3, 4)]
    value = torch.randn(1, 60, 2, 8, generator=g, requires_grad=True)
    loc = torch.rand(1, 10, 2, 2, 3, 2, generator=g, requires_grad=True)
    attn = torch.rand(1, 10, 2, 2, 3, generator=g).softmax(-1).requires_grad_()
    mda.CORES[core](value, shapes, loc, attn).square().sum().backward()
    assert seen  # the table's gradient came from the sorted transposed sum
    ref = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
    mda.ms_deform_attn_core(ref[0], shapes, *ref[1:]).square().sum().backward()
    torch.testing.assert_close(value.grad, ref[0].grad, rtol=1e-5, atol=1e-6)
