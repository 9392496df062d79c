"""The decoder's masked cross-attention against ``nn.MultiheadAttention`` itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ovseg.models.heads.transformer_decoder import masked_attention

HEADS = 4


def _module() -> nn.MultiheadAttention:
    torch.manual_seed(0)
    m = nn.MultiheadAttention(32, HEADS, dropout=0.0)
    nn.init.normal_(m.in_proj_bias)  # zero-initialised: make the biases count
    nn.init.normal_(m.out_proj.bias)
    return m


def _inputs(batch: int, q: int = 10, s: int = 24):
    g = torch.Generator().manual_seed(batch)
    query = torch.randn(q, batch, 32, generator=g)
    key = torch.randn(s, batch, 32, generator=g)
    value = torch.randn(s, batch, 32, generator=g)
    mask = torch.rand((batch, q, s), generator=g) < 0.6
    mask[0, 0] = False  # a query that sees everything
    mask[-1, 1, :-1] = True  # one that sees one position
    return query, key, value, mask


def _module_mask(mask: torch.Tensor) -> torch.Tensor:
    """The layout nn.MultiheadAttention takes: (Q, S) for one image, else a copy per head."""
    if mask.shape[0] == 1:
        return mask[0]
    return mask.unsqueeze(1).repeat(1, HEADS, 1, 1).flatten(0, 1)


@pytest.mark.parametrize("batch", [1, 3])
def test_masked_attention_equals_the_module_bitwise_with_its_gradients(batch):
    """One (B, Q, S) mask shared by the heads gives the module's outputs and gradients bitwise
    (its per-head copies hold the same values), with masks that differ between images."""
    m = _module()
    query, key, value, mask = _inputs(batch)
    query.requires_grad_(True)
    ref = m(query, key, value, attn_mask=_module_mask(mask), need_weights=False)[0]
    out = masked_attention(m, query, key, value, mask)
    assert out.shape == (10, batch, 32)
    assert torch.equal(out, ref)
    params = [query, m.in_proj_weight, m.in_proj_bias, m.out_proj.weight]
    g_ref = torch.autograd.grad(ref.square().sum(), params)
    g_out = torch.autograd.grad(out.square().sum(), params)
    for a, b in zip(g_out, g_ref):
        assert torch.equal(a, b)


def test_masked_attention_keeps_each_image_to_its_own_mask():
    """Image 1's result is the one-image result under its own mask: changing image 0's mask
    moves image 0's outputs only."""
    m = _module()
    query, key, value, mask = _inputs(2)
    with torch.no_grad():
        both = masked_attention(m, query, key, value, mask)
        alone = masked_attention(m, query[:, 1:], key[:, 1:], value[:, 1:], mask[1:])
        flipped = mask.clone()
        flipped[0, 2:] = ~flipped[0, 2:]
        other = masked_attention(m, query, key, value, flipped)
    torch.testing.assert_close(both[:, 1:], alone, rtol=1e-6, atol=1e-6)
    assert torch.equal(other[:, 1], both[:, 1])
    assert not torch.allclose(other[:, 0], both[:, 0])


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        ({"dropout": 0.1}, "dropout=0.1"),
        ({"batch_first": True}, "batch_first=True"),
        ({"add_bias_kv": True}, "bias_kv=True"),
        ({"kdim": 16, "vdim": 16}, "packed=False"),
    ],
)
def test_masked_attention_refuses_modules_it_does_not_compute(kwargs, culprit):
    m = nn.MultiheadAttention(32, HEADS, **kwargs)
    query, key, value, mask = _inputs(1)
    with pytest.raises(ValueError, match=culprit):
        masked_attention(m, query, key, value, mask)


def test_masked_attention_without_projection_biases_equals_the_module():
    torch.manual_seed(0)
    m = nn.MultiheadAttention(32, HEADS, bias=False)
    query, key, value, mask = _inputs(2)
    with torch.no_grad():
        ref = m(query, key, value, attn_mask=_module_mask(mask), need_weights=False)[0]
        assert torch.equal(masked_attention(m, query, key, value, mask), ref)


def test_masked_attention_names_a_mask_of_the_wrong_layout():
    """The old per-head layout (B * heads, Q, S) or a 2-D (Q, S) mask is refused with the
    expected and the given shapes, not broadcast into a wrong result."""
    m = _module()
    query, key, value, mask = _inputs(2)
    for wrong in (_module_mask(mask), mask[0]):
        with pytest.raises(ValueError, match=r"\(2, 10, 24\).*got \(" + str(wrong.shape[0])):
            masked_attention(m, query, key, value, wrong)


def test_inference_forms_each_levels_key_once_with_the_same_outputs(monkeypatch):
    """The decoder's inference path hands every cross-attention layer its level's
    ``memory + pos`` formed once (layers i and i + 3 attend to the same level); a layer given
    that key computes what it computes from ``pos`` itself, bitwise."""
    import torch.nn.functional as F

    from ovseg.models.heads.transformer_decoder import CrossAttentionLayer, MaskedTransformerDecoder

    torch.manual_seed(0)
    decoder = MaskedTransformerDecoder(
        8,
        hidden_dim=16,
        num_queries=5,
        num_heads=2,
        dim_feedforward=32,
        num_layers=6,
        mask_dim=16,
        clip_embedding_dim=12,
    ).eval()
    g = torch.Generator().manual_seed(1)
    features = [torch.randn(2, 8, s, s, generator=g) for s in (2, 4, 8)]
    mask_features = torch.randn(2, 16, 16, 16, generator=g)
    classifier = F.normalize(torch.randn(5, 12, generator=g), dim=-1)
    keys, outputs = [], []
    forward = CrossAttentionLayer.forward

    def spy(self, tgt, memory, memory_mask, pos, query_pos, key=None):
        keys.append(key)
        out = forward(self, tgt, memory, memory_mask, pos, query_pos, key)
        outputs.append(torch.equal(out, forward(self, tgt, memory, memory_mask, pos, query_pos)))
        return out

    monkeypatch.setattr(CrossAttentionLayer, "forward", spy)
    with torch.no_grad():
        decoder(features, mask_features, classifier, torch.arange(4), 4, aux_outputs=False)
    assert len(keys) == 6 and all(k is not None for k in keys)
    assert all(keys[i] is keys[i + 3] for i in range(3))
    assert keys[0] is not keys[1] and keys[0].shape == (2 * 2, 2, 16)
    assert outputs == [True] * 6
