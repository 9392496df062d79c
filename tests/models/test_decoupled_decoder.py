"""OpenSD's decoupled thing / stuff decoder: structure, shapes, the inference seam and its export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ovseg_testing import REPO

from ovseg import Segmenter
from ovseg.config import ConfigError, load_config
from ovseg.models.builder import build_model
from ovseg.models.heads.decoupled_decoder import (
    DecoupledTransformerDecoder,
    build_decoupled_decoder,
)
from ovseg.models.heads.transformer_decoder import MaskedTransformerDecoder

CFG = REPO / "ovseg/configs/tests/fcclip_tiny_train_opensd.yaml"
THINGS, STUFF, HEADS = 3, 2, 2


def _decoder() -> DecoupledTransformerDecoder:
    torch.manual_seed(0)
    return DecoupledTransformerDecoder(
        8,
        num_thing_queries=THINGS,
        num_stuff_queries=STUFF,
        hidden_dim=16,
        num_heads=HEADS,
        dim_feedforward=32,
        num_layers=3,
        mask_dim=16,
        clip_embedding_dim=12,
    ).eval()


def _inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    features = [torch.randn(batch, 8, s, s, generator=g) for s in (2, 4, 8)]
    mask_features = torch.randn(batch, 16, 16, 16, generator=g)
    classifier = F.normalize(torch.randn(5, 12, generator=g), dim=-1)  # 4 classes + void
    return features, mask_features, classifier, torch.arange(4), 4


def test_groups_have_their_own_cross_attention_and_ffn_and_share_self_attention():
    d = _decoder()
    assert isinstance(d, MaskedTransformerDecoder) and d.num_queries == THINGS + STUFF
    assert d.query_is_thing.tolist() == [True] * THINGS + [False] * STUFF
    for i in range(d.num_layers):
        assert d.transformer_cross_attention_layers[i] is not d.stuff_cross_attention_layers[i]
        assert d.transformer_ffn_layers[i] is not d.stuff_ffn_layers[i]
    names = {k.split(".")[0] for k in d.state_dict()}
    assert {"stuff_cross_attention_layers", "stuff_ffn_layers"} <= names
    assert "query_is_thing" not in d.state_dict()  # derived, not checkpointed
    # One self-attention per layer, over all Q queries.
    assert len(d.transformer_self_attention_layers) == d.num_layers


@pytest.mark.parametrize("batch", [1, 2])  # one image: a (Q, HW) mask; more: (B * heads, Q, HW)
def test_thing_queries_do_not_see_stuff_queries_attention_masks(batch):
    """Layer i's cross-attention: changing the stuff queries' rows of the attention mask (and
    the stuff queries themselves) leaves the thing queries' outputs bitwise unchanged, and the
    reverse; the thing layer sees only the thing rows."""
    d = _decoder()
    g = torch.Generator().manual_seed(2)
    hw, q = 16, THINGS + STUFF
    src = [torch.randn(hw, batch, 16, generator=g) for _ in range(3)]
    pos = [torch.randn(hw, batch, 16, generator=g) for _ in range(3)]
    output = torch.randn(q, batch, 16, generator=g)
    query_embed = torch.randn(q, batch, 16, generator=g)
    mask = torch.rand((batch, q, hw), generator=g) < 0.5  # every head's "may not attend"
    seen = {}

    def record(name):
        def hook(module, args, kwargs, out) -> None:
            seen.setdefault(name, kwargs["memory_mask"].clone())  # the first call's mask

        return hook

    hooks = [
        layer.register_forward_hook(record(name), with_kwargs=True)
        for name, layer in (
            ("thing", d.transformer_cross_attention_layers[1]),
            ("stuff", d.stuff_cross_attention_layers[1]),
        )
    ]
    with torch.no_grad():
        ref = d.cross_attend(1, output, src, pos, query_embed, mask.clone())
        changed_stuff = mask.clone()
        changed_stuff[..., THINGS:, :] = ~changed_stuff[..., THINGS:, :]
        other = output.clone()
        other[THINGS:] += 1.0
        a = d.cross_attend(1, other, src, pos, query_embed, changed_stuff)
        changed_things = mask.clone()
        changed_things[..., :THINGS, :] = ~changed_things[..., :THINGS, :]
        b = d.cross_attend(1, output, src, pos, query_embed, changed_things)
    for h in hooks:
        h.remove()
    assert torch.equal(a[:THINGS], ref[:THINGS]) and not torch.equal(a[THINGS:], ref[THINGS:])
    assert torch.equal(b[THINGS:], ref[THINGS:]) and not torch.equal(b[:THINGS], ref[:THINGS])
    assert seen["thing"].shape[-2] == THINGS and seen["stuff"].shape[-2] == STUFF
    assert torch.equal(seen["thing"], mask[..., :THINGS, :])


def test_outputs_keep_fcclip_keys_and_shapes_and_carry_query_groups():
    d = _decoder()
    features, mask_features, classifier, syn, c = _inputs()
    with torch.no_grad():
        train = d(features, mask_features, classifier, syn, c, aux_outputs=True)
        infer = d(features, mask_features, classifier, syn, c, aux_outputs=False)
    q = THINGS + STUFF
    assert train["pred_logits"].shape == (2, q, c + 1)
    assert train["pred_masks"].shape == (2, q, 16, 16)
    assert len(train["aux_outputs"]) == d.num_layers
    for o in (train, *train["aux_outputs"]):
        assert o["query_is_thing"].tolist() == [True] * THINGS + [False] * STUFF
        assert o["pred_logits"].shape == (2, q, c + 1)
    assert set(infer) == {"pred_logits", "pred_masks"}  # the seam's outputs, unchanged
    # The inference path computes the intermediate masks at coarse size: same numbers.
    torch.testing.assert_close(infer["pred_logits"], train["pred_logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(infer["pred_masks"], train["pred_masks"], atol=1e-4, rtol=0)


def test_config_is_checked_with_the_keys_named():
    cfg = load_config(CFG).model.decoder
    assert (cfg.type, cfg.num_thing_queries, cfg.num_stuff_queries) == ("decoupled", 16, 16)
    cfg.num_queries = 30
    with pytest.raises(ConfigError, match=r"num_queries=30 must equal .* 16 \+ 16 = 32"):
        build_decoupled_decoder(cfg, in_channels=8, mask_dim=16, embed_dim=12)
    cfg.num_stuff_queries = 0
    with pytest.raises(ConfigError, match="num_stuff_queries >= 1; got 16 and 0"):
        build_decoupled_decoder(cfg, in_channels=8, mask_dim=16, embed_dim=12)


def test_default_decoder_is_unchanged():
    """Off by default: the plain config builds Mask2Former's decoder, whose outputs carry no
    query groups (so the matcher matches as before)."""
    model = build_model(load_config(REPO / "ovseg/configs/tests/fcclip_tiny_train.yaml").model)
    assert type(model.predictor) is MaskedTransformerDecoder


@pytest.fixture(scope="module")
def opensd_segmenter():
    torch.manual_seed(0)
    return Segmenter.from_config(
        CFG, overrides=["model.test.min_size=64", "model.test.max_size=64"]
    )


def test_predict_logits_of_the_decoupled_model(opensd_segmenter):
    from ovseg.export.onnx import example_seam_inputs

    model = opensd_segmenter.model
    inputs = example_seam_inputs(opensd_segmenter, (64, 64))
    with torch.no_grad():
        mask_cls, masks = model.predict_logits(*inputs)
        again = model.predict_intermediates(*inputs, aux_outputs=True)
    assert mask_cls.shape == (1, 32, 4) and masks.shape == (1, 32, 16, 16)
    # log-probabilities over 3 classes + void
    torch.testing.assert_close(mask_cls.exp().sum(-1), torch.ones(1, 32), atol=1e-5, rtol=0)
    torch.testing.assert_close(again["mask_cls"], mask_cls, atol=1e-4, rtol=0)
    pred = opensd_segmenter.predict(np.zeros((48, 64, 3), np.uint8), "cat; dog; grass [stuff]")
    assert pred.panoptic_seg.shape == (48, 64)


def test_onnx_export_of_the_decoupled_model_matches_pytorch(opensd_segmenter, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from ovseg.export import export_onnx

    export_onnx(opensd_segmenter, tmp_path / "export", sizes=[(64, 64)])
    onnx_seg = Segmenter.from_pretrained(tmp_path / "export")
    image = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    vocab = "cat; dog; grass [stuff]; sky [stuff]"
    a = opensd_segmenter.predict(image, vocab, task="all")
    b = onnx_seg.predict(image, vocab, task="all")
    err = float((a.sem_seg - b.sem_seg).abs().max())
    assert err <= 2e-4, err
    assert torch.equal(a.panoptic_seg, b.panoptic_seg)
    assert a.instances.labels.tolist() == b.instances.labels.tolist()
