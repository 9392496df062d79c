"""DenseCLIP's context decoder: its architecture, per-image refinement of the in-vocabulary
classifier only, the visual context, and where gradients go. (gamma = 0 reproducing FC-CLIP's
fixture outputs is a case of tests/models/test_fcclip_fixtures.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ovseg_testing import REPO
from torch import nn

from ovseg import Segmenter, Vocabulary
from ovseg.models.backbones.base import Backbone
from ovseg.models.prompts import ContextDecoder

CFG = REPO / "ovseg/configs/tests/fcclip_tiny_train_denseclip.yaml"


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    return Segmenter.from_config(CFG, overrides=["model.test.vocabulary=null"])


def test_architecture_is_densecLIPs(seg):
    d = seg.model.context_decoder
    assert isinstance(d, ContextDecoder) and len(d.decoder) == 3
    layer = d.decoder[0]
    assert layer.self_attn.heads == 4 and layer.self_attn.q_proj.weight.shape == (256, 256)
    assert layer.self_attn.q_proj.bias is None  # DenseCLIP: qkv without bias
    assert [type(m) for m in layer.mlp] == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert layer.mlp[0].out_features == 1024 and layer.dropout.p == 0.1
    embed = seg.model.backbone.embed_dim
    assert d.text_proj[1].in_features == embed and d.out_proj[1].out_features == embed
    torch.testing.assert_close(d.gamma, torch.full((embed,), 1e-4))
    enc = seg.model.text_encoder
    assert enc.context.shape[:2] == (1, 8)  # one set of 8 learnable context vectors


def test_visual_context_generic_path_equals_the_convnext_head(seg):
    bb = seg.model.backbone
    x = torch.randn(2, 3, 64, 96)
    dense = bb(x)["clip_vis_dense"]
    fast = bb.visual_context(dense)
    generic = Backbone.visual_context(bb, dense)  # one-pixel masks through the mask pooling
    assert fast.shape == (2, 1 + dense.shape[2] * dense.shape[3], bb.embed_dim)
    torch.testing.assert_close(fast, generic, atol=1e-5, rtol=1e-5)


def test_refined_classifier_is_per_image_and_only_for_the_in_vocabulary_head(seg):
    m = seg.model.eval()
    vocab = Vocabulary.parse("circle; square; sky [stuff]")
    text = seg.encode_vocabulary(vocab)
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    x = m.normalize_and_pad(images)
    with torch.no_grad():
        m.context_decoder.gamma.fill_(1.0)
        seen = m.seen_mask(vocab)
        out = m.predict_intermediates(x, text.embeddings, text.synonym_index, seen)
        refined = m.refine_classifier(out["text_classifier"], out["features"])
        m.context_decoder.gamma.fill_(1e-4)
    assert refined.shape == (2, 4, m.backbone.embed_dim)
    assert (refined[0, :3] - refined[1, :3]).abs().max() > 1e-3  # per image
    torch.testing.assert_close(refined[:, 3], out["text_classifier"][3].expand(2, -1))  # void
    np.testing.assert_allclose(refined[:, :3].norm(dim=-1).numpy(), 1.0, atol=1e-5)
    # The out-of-vocabulary branch classifies against the plain text classifier.
    plain = out["text_classifier"]
    assert plain.shape == (4, m.backbone.embed_dim)
    torch.testing.assert_close(plain[:3], text.embeddings)


def test_training_gradients_reach_the_decoder_and_the_context_only(seg):
    m = seg.model.train()
    vocab = Vocabulary.parse("circle; square; sky [stuff]")
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g),
        "targets": [
            {"labels": torch.tensor([0, 2]), "masks": torch.rand((2, 64, 64), generator=g) > 0.5}
            for _ in range(2)
        ],
        "vocabulary": vocab,
    }
    m.zero_grad(set_to_none=True)
    sum(m(batch).values()).backward()
    got = {n.split(".")[0] for n, p in m.named_parameters() if p.grad is not None}
    assert {"context_decoder", "text_encoder", "predictor"} <= got
    assert not any(
        p.grad is not None for n, p in m.named_parameters() if n.startswith("backbone.clip_model")
    )
    assert m.context_decoder.gamma.grad.abs().sum() > 0
    assert m.text_encoder.context.grad.abs().sum() > 0
    m.eval()
