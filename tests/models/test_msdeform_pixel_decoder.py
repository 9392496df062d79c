"""The deformable pixel decoder's activation checkpointing: same outputs and gradients as the
plain forward, bitwise, with the encoder's activations no longer kept for backward."""

from __future__ import annotations

import pytest
import torch

import ovseg.models.pixel_decoders  # noqa: F401 (registers "msdeform")
from ovseg.config.schema import PixelDecoderConfig
from ovseg.models.registry import PIXEL_DECODERS
from ovseg.structures import ShapeSpec

SHAPES = {
    "res2": ShapeSpec(channels=8, stride=4),
    "res3": ShapeSpec(channels=12, stride=8),
    "res4": ShapeSpec(channels=16, stride=16),
    "res5": ShapeSpec(channels=20, stride=32),
}


def build(checkpointing: bool, dropout: float = 0.1):
    cfg = PixelDecoderConfig(
        conv_dim=32,
        mask_dim=16,
        num_layers=3,
        num_heads=4,
        num_points=2,
        dim_feedforward=64,
        dropout=dropout,
        activation_checkpointing=checkpointing,
    )
    torch.manual_seed(0)
    return PIXEL_DECODERS.get("msdeform")(cfg, SHAPES)


def features(size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        k: torch.randn(2, s.channels, size // s.stride, size // s.stride, generator=g)
        for k, s in SHAPES.items()
    }


def run(decoder, feats):
    """Loss, parameter gradients and the bytes autograd saved for backward."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    torch.manual_seed(2)  # dropout: the same masks in both runs (checkpoint replays the RNG)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mask_features, multi_scale = decoder(feats)
        loss = (mask_features**2).mean() + sum((m**3).mean() for m in multi_scale)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in decoder.named_parameters() if p.grad is not None}
    return loss.detach(), grads, saved[0]


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_checkpointing_gives_the_same_loss_and_gradients_bitwise(dropout):
    feats = features()
    plain = build(False, dropout).train()
    ckpt = build(True, dropout).train()
    ckpt.load_state_dict(plain.state_dict())
    loss_a, grads_a, saved_a = run(plain, feats)
    loss_b, grads_b, saved_b = run(ckpt, feats)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    assert any(k.startswith("transformer.encoder.layers.") for k in grads_b)
    for k in grads_a:
        assert torch.equal(grads_a[k], grads_b[k]), k
    # The three encoder layers' activations are recomputed, not saved: what is left is the
    # layers' inputs and the FPN's activations.
    assert saved_b < 0.5 * saved_a, (saved_a, saved_b)


def test_checkpointing_runs_only_when_gradients_flow(monkeypatch):
    """Inference (no gradients) takes the plain path, with the plain outputs; a forward with
    gradients goes through torch.utils.checkpoint, once per encoder layer."""
    import ovseg.models.pixel_decoders.msdeform as msdeform

    calls = []
    real = msdeform.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(msdeform, "checkpoint", counting)
    feats = features()
    plain = build(False).eval()
    ckpt = build(True).eval()
    ckpt.load_state_dict(plain.state_dict())
    with torch.no_grad():
        a, b = plain(feats), ckpt(feats)
    assert not calls
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    ckpt.train()(feats)
    assert len(calls) == 3  # num_layers


def test_the_config_key_reaches_the_encoder():
    assert build(True).transformer.encoder.activation_checkpointing is True
    assert build(False).transformer.encoder.activation_checkpointing is False


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_cpu_inference_runs_the_encoder_in_row_blocks_with_the_full_size_values(monkeypatch):
    """CPU inference runs the residual + FFN + norms and the sampling a block of tokens at a
    time (ragged last block here); the outputs equal the full-size path's and the training
    path's. Gradients, or a graph capture, take the full-size path."""
    import ovseg.models.layers as layers
    import ovseg.models.ops.ms_deform_attn as mda
    import ovseg.models.pixel_decoders.msdeform as msdeform

    decoder = build(False, dropout=0.0).eval()
    feats = features()
    with torch.no_grad():
        full_mask, full_multi = decoder(feats)  # tokens: 8 * 8 + 4 * 4 + 2 * 2 = 84 per image
    sizes = []

    def spy(rows, bytes_per_row, budget=None):
        blocks = list(layers.row_blocks(rows, bytes_per_row, budget))
        sizes.append([b.stop - b.start for b in blocks])
        return iter(blocks)

    monkeypatch.setattr(layers, "BLOCK_BYTES", 20 * 64 * 4)  # 20 rows of the 64-wide FFN
    monkeypatch.setattr(msdeform, "row_blocks", spy)
    monkeypatch.setattr(mda, "row_blocks", spy)
    with torch.inference_mode():
        mask, multi = decoder(feats)
    # Per layer: the sampling (2 * 84 queries, 4 heads x 2 points x 8 channels = 256 B each:
    # 20 a block) and the FFN (84 tokens, each row of a block in both images: 10 a block).
    assert sizes == [[20] * 8 + [8], [10] * 8 + [4]] * 3
    torch.testing.assert_close(mask, full_mask, rtol=1e-6, atol=1e-6)
    for a, b in zip(multi, full_multi):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    sizes.clear()
    trained_mask, _ = decoder(feats)  # gradients flow: full size
    assert sizes == [] and trained_mask.requires_grad
    torch.testing.assert_close(trained_mask.detach(), full_mask, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.jit.trace(decoder, (feats,), strict=False, check_trace=False)
    assert sizes == []  # a trace keeps the full-size ops


def test_checkpointing_the_first_layers_only_saves_between_none_and_all_bitwise():
    """An integer N recomputes the first N encoder layers: the same loss and gradients
    bitwise, and autograd saves less than without checkpointing but more than with all."""
    feats = features()
    plain = build(False, 0.1).train()
    loss_a, grads_a, saved_a = run(plain, feats)
    some = build(1, 0.1).train()
    some.load_state_dict(plain.state_dict())
    assert some.transformer.encoder.checkpointed_layers == 1
    loss_b, grads_b, saved_b = run(some, feats)
    everything = build(True, 0.1).train()
    everything.load_state_dict(plain.state_dict())
    _, _, saved_all = run(everything, feats)
    assert torch.equal(loss_a, loss_b)
    for k in grads_a:
        assert torch.equal(grads_a[k], grads_b[k]), k
    assert saved_all < saved_b < saved_a, (saved_all, saved_b, saved_a)
    assert build(7).transformer.encoder.checkpointed_layers == 3  # at most every layer


def test_a_negative_number_of_checkpointed_layers_is_refused_at_build():
    with pytest.raises(ValueError, match="activation_checkpointing must be true, false or"):
        build(-1)
