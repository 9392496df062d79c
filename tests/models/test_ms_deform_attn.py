"""Pure-PyTorch deformable attention against a naive per-sample bilinear reference."""

from __future__ import annotations

import math

import pytest
import torch

from ovseg.models.ops.ms_deform_attn import MSDeformAttn, ms_deform_attn_core


def naive_core(value, shapes, locations, weights):
    """Loop over every (batch, query, head, level, point): bilinear with zero padding,
    pixel centres at (i + 0.5) / size (grid_sample's align_corners=False)."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(n, lq, m, d, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    vmap = value[b, starts[lvl] : starts[lvl + 1], head].reshape(h, w, d).double()
                    for k in range(p):
                        x = locations[b, q, head, lvl, k, 0].item() * w - 0.5
                        y = locations[b, q, head, lvl, k, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(d, dtype=torch.float64)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    acc += wy * wx * vmap[yy, xx]
                        out[b, q, head] += weights[b, q, head, lvl, k].item() * acc
    return out.reshape(n, lq, m * d)


def assert_same_grads(core, value, shapes, locations, weights, tol):
    """Gradients of sum(core(...) ** 2) w.r.t. values, locations and weights equal the
    grid_sample reference core's."""
    grads = []
    for fn in (ms_deform_attn_core, core):
        v, loc, w = (t.clone().requires_grad_() for t in (value, locations, weights))
        (fn(v, shapes, loc, w) ** 2).sum().backward()
        grads.append((v.grad, loc.grad, w.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def sampling_inputs(seed, shapes, n, m, d, lq, p):
    """Random (value, locations, weights) for the cores; a fifth of the locations off the map."""
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g)
    locations = torch.rand(n, lq, m, len(shapes), p, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g).softmax(-1)
    return value, locations, weights


def test_core_matches_naive_reference():
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4), (2, 2)]
    n, m, d, lq, p = 2, 2, 3, 6, 3
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g)
    # Locations partly outside [0, 1] exercise the zero padding.
    locations = torch.rand(n, lq, m, len(shapes), p, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    ours = ms_deform_attn_core(value, shapes, locations, weights)
    ref = naive_core(value, shapes, locations, weights)
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)


def test_module_shapes_and_gradients():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=2)
    shapes = [(6, 8), (3, 4)]
    s = sum(h * w for h, w in shapes)
    src = torch.randn(2, s, 16, requires_grad=True)
    ref = torch.rand(2, s, 2, 2)
    out = attn(src, ref, src, shapes)
    assert out.shape == (2, s, 16)
    out.sum().backward()
    assert src.grad is not None and torch.isfinite(src.grad).all()
    assert attn.sampling_offsets.bias.grad is not None


def test_embedding_bag_core_matches_reference_values_and_gradients():
    from ovseg.models.ops.ms_deform_attn import ms_deform_attn_core_bag

    g = torch.Generator().manual_seed(1)
    shapes = [(5, 7), (3, 4)]
    n, m, d, lq, p = 2, 2, 3, 5, 2
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g)
    locations = torch.rand(n, lq, m, len(shapes), p, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g)
    ref = naive_core(value, shapes, locations, weights)
    torch.testing.assert_close(
        ms_deform_attn_core_bag(value, shapes, locations, weights).double(),
        ref,
        atol=1e-5,
        rtol=1e-5,
    )
    assert_same_grads(ms_deform_attn_core_bag, value, shapes, locations, weights, tol=1e-4)


def test_unknown_impl():
    with pytest.raises(ValueError, match="embedding_bag"):
        MSDeformAttn(8, 1, 2, 1, impl="cuda")


def test_gather_core_is_grid_sample_arithmetic():
    """The gather core reproduces grid_sample's CPU arithmetic (bitwise on this CI's CPU; the
    bound allows only last-bit differences elsewhere), at realistic head/point counts with
    locations outside the map, and its gradients match."""
    from ovseg.models.ops.ms_deform_attn import ms_deform_attn_core_gather

    shapes = [(13, 17), (7, 9), (4, 5)]
    value, locations, weights = sampling_inputs(2, shapes, n=2, m=8, d=32, lq=400, p=4)
    ref = ms_deform_attn_core(value, shapes, locations, weights)
    ours = ms_deform_attn_core_gather(value, shapes, locations, weights)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    small = [(5, 7), (3, 4)]
    s = sum(h * w for h, w in small)
    value, locations, weights = (
        value[:, :s, :2, :3],
        locations[:, :5, :2, :2, :2],
        weights[:, :5, :2, :2, :2],
    )
    torch.testing.assert_close(
        ms_deform_attn_core_gather(value, small, locations, weights).double(),
        naive_core(value, small, locations, weights),
        atol=1e-5,
        rtol=1e-5,
    )
    assert_same_grads(ms_deform_attn_core_gather, value, small, locations, weights, tol=1e-5)


def test_exports_swap_the_row_cores_for_grid_sample_and_back():
    from ovseg.models.ops.ms_deform_attn import grid_sample_for_export

    impls = ["gather", "auto", "embedding_bag", "grid_sample"]
    model = torch.nn.Sequential(*(MSDeformAttn(8, 1, 2, 1, impl=i) for i in impls))
    with grid_sample_for_export(model):
        assert [m.impl for m in model] == ["grid_sample"] * 4
    assert [m.impl for m in model] == impls
    with pytest.raises(RuntimeError, match="export failed"), grid_sample_for_export(model):
        raise RuntimeError("export failed")
    assert [m.impl for m in model] == impls  # restored after a failed export too


def test_auto_is_gather_for_inference_and_grid_sample_for_training(monkeypatch):
    """The default core: gather when nothing needs a gradient (same outputs, faster), the
    reference grid_sample when gradients flow, so training keeps grid_sample's backward."""
    from ovseg.models.ops import ms_deform_attn as mda

    ran = []
    for name, core in list(mda.CORES.items()):
        monkeypatch.setitem(mda.CORES, name, lambda *a, _n=name, _c=core: ran.append(_n) or _c(*a))
    torch.manual_seed(0)
    attn = MSDeformAttn(16, 2, 4, 2)
    assert attn.impl == "auto"
    shapes = [(6, 8), (3, 4)]
    src, ref = torch.randn(2, 60, 16), torch.rand(2, 60, 2, 2)
    with torch.inference_mode():
        inferred = attn(src, ref, src, shapes)
    with torch.no_grad():
        attn(src, ref, src, shapes)
    trained = attn(src, ref, src, shapes)  # parameters require grad
    assert ran == ["gather", "gather", "grid_sample"]
    assert torch.equal(inferred, trained.detach())  # gather is grid_sample's arithmetic here
    attn.requires_grad_(False)
    attn(src, ref, src, shapes)
    assert ran[-1] == "gather"  # a frozen module without gradient inputs needs no backward
    attn(src.requires_grad_(), ref, src, shapes)
    assert ran[-1] == "grid_sample"


def test_gather_under_bf16_autocast_trains():
    """Autocast makes the values bf16 while the sampling locations stay fp32: the gather core
    must take that mix (the training step's path) and stay near the fp32 result."""
    torch.manual_seed(0)
    attn = MSDeformAttn(16, 2, 4, 2, impl="gather")
    shapes = [(6, 8), (3, 4)]
    src = torch.randn(2, 60, 16, requires_grad=True)
    ref = torch.rand(2, 60, 2, 2)
    full = attn(src, ref, src, shapes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = attn(src, ref, src, shapes)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, atol=0.05, rtol=0.05)
    half.float().sum().backward()
    assert src.grad is not None and torch.isfinite(src.grad).all()


@pytest.mark.parametrize(
    "dtypes", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32)]
)
def test_weighted_point_sum_has_autograds_gradients_bitwise(dtypes):
    """The reference core's weighting runs through a Function with contiguous gradients; they
    are bit for bit what autograd gives for ``(sampled * weights).sum(-1)``, also for a
    transposed incoming gradient (as the core's output hands back) and mixed dtypes."""
    from ovseg.models.ops.ms_deform_attn import _weighted_point_sum

    g = torch.Generator().manual_seed(0)
    sampled = torch.randn(6, 16, 50, 4, generator=g).to(dtypes[0]).requires_grad_()
    weights = torch.rand(6, 1, 50, 4, generator=g).to(dtypes[1]).requires_grad_()
    upstream = torch.randn(50, 6 * 16, generator=g).t().reshape(6, 16, 50)  # a strided view
    ref = (sampled * weights).sum(-1)
    out = _weighted_point_sum(sampled, weights)
    assert torch.equal(out, ref) and out.dtype == ref.dtype
    ref_grads = torch.autograd.grad(ref, (sampled, weights), upstream.to(ref.dtype))
    grads = torch.autograd.grad(out, (sampled, weights), upstream.to(out.dtype))
    for a, b in zip(grads, ref_grads):
        assert a.dtype == b.dtype and a.is_contiguous()
        assert torch.equal(a, b)


@pytest.mark.parametrize("core", ["gather", "embedding_bag"])
def test_int64_indices_for_tables_past_int32_give_the_same_result(monkeypatch, core):
    """The row indices are int32 where the value table fits and int64 past it; both give the
    same samples and gradients (the int64 branch forced here: a real table that large would
    take 256 GB)."""
    from ovseg.models.ops import bag_sum
    from ovseg.models.ops import ms_deform_attn as mda

    g = torch.Generator().manual_seed(5)
    shapes = [(6, 7), (3, 4)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(2, s, 2, 4, generator=g, requires_grad=True)
    locations = torch.rand(2, 9, 2, 2, 3, 2, generator=g).mul(1.4).sub(0.2).requires_grad_()
    weights = torch.rand(2, 9, 2, 2, 3, generator=g).softmax(-1).requires_grad_()

    def run():
        out = mda.CORES[core](value, shapes, locations, weights)
        grads = torch.autograd.grad(out.square().sum(), (value, locations, weights))
        return out, grads

    assert mda.index_dtype(2 * 2 * s) == torch.int32
    out32, grads32 = run()
    monkeypatch.setattr(bag_sum, "INT32_MAX_ROWS", 2 * 2 * s - 1)
    assert mda.index_dtype(2 * 2 * s) == torch.long
    out64, grads64 = run()
    assert torch.equal(out32, out64)
    for a, b in zip(grads32, grads64):
        assert torch.equal(a, b)


def test_gather_core_in_query_blocks_equals_the_whole_level_bitwise(monkeypatch):
    """Without gradients the gather core samples and sums a block of queries at a time; the
    blocks (a ragged last one here) give exactly the whole-level computation's values."""
    import ovseg.models.layers as layers
    from ovseg.models.ops.ms_deform_attn import ms_deform_attn_core_gather

    shapes = [(9, 11), (5, 6), (3, 3)]
    m, d, p = 4, 8, 3
    value, locations, weights = sampling_inputs(3, shapes, n=2, m=m, d=d, lq=57, p=p)
    whole = ms_deform_attn_core_gather(value, shapes, locations, weights.requires_grad_())
    monkeypatch.setattr(layers, "BLOCK_BYTES", 10 * m * p * d * 4)  # 10 of the 114 queries
    with torch.no_grad():
        blocked = ms_deform_attn_core_gather(value, shapes, locations, weights)
    assert torch.equal(blocked, whole.detach())
    torch.testing.assert_close(blocked, ms_deform_attn_core(value, shapes, locations, weights))


def test_gather_core_far_off_the_map_and_at_non_finite_locations():
    """The gather core reads off-map corners from a zero border and clamps coordinates far
    outside it: locations up to 40 maps away give grid_sample's outputs bitwise, a NaN
    location gives NaN as grid_sample does, and +-inf samples zeros (grid_sample: NaN); no
    location reads a row outside the table."""
    from ovseg.models.ops.ms_deform_attn import ms_deform_attn_core_gather

    shapes = [(5, 7), (3, 4)]
    # 3 heads: a NaN's arbitrary integer (INT_MIN on x86) times 3 wraps out of range.
    value, locations, weights = sampling_inputs(4, shapes, n=2, m=3, d=4, lq=30, p=2)
    locations[:, :10] = locations[:, :10] * 80 - 40
    ref = ms_deform_attn_core(value, shapes, locations, weights)
    with torch.no_grad():
        assert torch.equal(ms_deform_attn_core_gather(value, shapes, locations, weights), ref)
    locations[0, 10, 0, 0, 0, 0] = float("inf")
    locations[0, 11, 1, 1, 1, 1] = float("-inf")
    locations[1, 12, 0, 1, 0, 0] = float("nan")
    with torch.no_grad():
        ours = ms_deform_attn_core_gather(value, shapes, locations, weights)
    ref = ms_deform_attn_core(value, shapes, locations, weights)
    assert ours[1, 12, :4].isnan().all() and ref[1, 12, :4].isnan().all()
    assert ours.isnan().sum() == 4  # head 0 of that query only
    inf_rows = (ours[0, 10, :4], ours[0, 11, 4:])
    finite = locations.clone()
    finite[0, 10, 0, 0, 0, 0], finite[0, 11, 1, 1, 1, 1] = 40.0, -40.0  # as far, finite
    expected = ms_deform_attn_core(value, shapes, finite, weights)
    torch.testing.assert_close(
        torch.cat(inf_rows), torch.cat((expected[0, 10, :4], expected[0, 11, 4:]))
    )
    keep = torch.ones_like(ours, dtype=torch.bool)
    keep[1, 12, :4] = keep[0, 10, :4] = keep[0, 11, 4:] = False
    assert torch.equal(ours[keep], ref[keep])


@pytest.mark.parametrize("core", ["gather", "embedding_bag"])
def test_row_cores_have_grid_samples_gradients_at_the_maps_edges(core):
    """Coordinates exactly on and around the edges of each map (x or y = -2, -1.5, -1, 0,
    size - 1, size, size + 1): the row cores' clamp and zero border keep grid_sample's values
    and gradients there. At exactly -1 one neighbour (0) is on the map, so grid_sample's
    location gradient is not zero, which a clamp at -1 would lose."""
    from ovseg.models.ops.ms_deform_attn import CORES

    shapes = [(4, 32), (2, 8)]
    value, locations, weights = sampling_inputs(5, shapes, n=1, m=2, d=4, lq=7, p=7)
    edges = torch.tensor([-2.0, -1.5, -1.0, 0.0, -1.0, 0.0, 1.0])  # + size for the last three
    for lvl, (h, w) in enumerate(shapes):
        for axis, size in ((0, w), (1, h)):
            pos = edges + torch.tensor([0, 0, 0, 0, size, size, size])
            # Point k sits at edge k on this axis (x = loc * size - 0.5) and inside the map
            # on the other (an edge on both would zero the gradient): x in even queries,
            # y in odd ones.
            locations[0, axis::2, :, lvl, :, axis] = ((pos + 0.5) / size).view(1, 1, -1)
            locations[0, 1 - axis :: 2, :, lvl, :, axis] = 1.3 / size
    assert_same_grads(CORES[core], value, shapes, locations, weights, tol=1e-5)
    out = CORES[core](value, shapes, locations, weights)
    torch.testing.assert_close(out, ms_deform_attn_core(value, shapes, locations, weights))


def test_training_takes_the_padded_softmax_and_inference_the_reference_one(monkeypatch):
    """Train mode normalises the attention weights with the faster padded softmax (rounding
    apart), eval mode (exact inference) with torch's own: bitwise the unpatched module."""
    import ovseg.models.ops.ms_deform_attn as mod

    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=4, impl="grid_sample")
    torch.nn.init.normal_(attn.attention_weights.weight, std=1.0)  # non-uniform weights
    shapes = [(6, 8), (3, 4), (2, 2)]
    s = sum(h * w for h, w in shapes)
    src, ref = torch.randn(1, s, 16), torch.rand(1, s, 3, 2)
    with torch.no_grad():
        exact = attn.eval()(src, ref, src, shapes)
        trained = attn.train()(src, ref, src, shapes)
    torch.testing.assert_close(trained, exact, rtol=1e-5, atol=1e-6)
    # Replace the padded softmax by torch's: train mode then gives the eval outputs bitwise,
    # so the padded one is what train mode ran, and eval mode never calls it.
    calls = []

    def plain(x):
        calls.append(x.shape)
        return x.softmax(-1)

    monkeypatch.setattr(mod, "softmax_padded", plain)
    with torch.no_grad():
        assert torch.equal(attn.train()(src, ref, src, shapes), exact)
        assert torch.equal(attn.eval()(src, ref, src, shapes), exact)
    assert calls == [torch.Size([1, s, 4, 12])]
