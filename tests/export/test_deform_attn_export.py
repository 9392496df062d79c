"""Every deformable-attention core exports to ONNX as grid_sample, equal to PyTorch."""

from __future__ import annotations

import io

import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from ovseg.models.ops.ms_deform_attn import IMPLS, MSDeformAttn, grid_sample_for_export  # noqa: E402

SHAPES = [(6, 8), (3, 4)]


class _Attn(torch.nn.Module):
    def __init__(self, impl: str):
        super().__init__()
        self.attn = MSDeformAttn(32, len(SHAPES), 4, 2, impl=impl).eval()
        torch.nn.init.normal_(self.attn.sampling_offsets.weight, std=0.5)  # some points off the map

    def forward(self, query, refs, src):
        return self.attn(query, refs, src, SHAPES)


@pytest.mark.parametrize("impl", IMPLS)
def test_each_core_exports_to_onnx_with_pytorchs_outputs(impl):
    torch.manual_seed(0)
    model = _Attn(impl)
    s = sum(h * w for h, w in SHAPES)
    inputs = (torch.randn(1, s, 32), torch.rand(1, s, len(SHAPES), 2), torch.randn(1, s, 32))
    buf = io.BytesIO()
    with torch.no_grad(), grid_sample_for_export(model):
        torch.onnx.export(model, inputs, buf, dynamo=False)
    assert model.attn.impl == impl  # restored
    session = ort.InferenceSession(buf.getvalue())
    names = [i.name for i in session.get_inputs()]
    (out,) = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
    with torch.no_grad():
        expected = model(*inputs)
    torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-5, rtol=1e-5)
