"""Learnable prompts (CoOp / OpenSD thing-stuff context): what the context means, where gradients
go, and that the inference cache never serves stale embeddings."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from ovseg_testing import fixture_dir

from ovseg import Segmenter, Vocabulary

VOCAB = "cat, kitty; dog; road, street [stuff]; sky [stuff]"


@pytest.fixture()
def seg():
    fx = fixture_dir("fcclip_tiny")
    return Segmenter.from_pretrained(
        fx / "fcclip_tiny_a.pth",
        config="tests/fcclip_tiny.yaml",
        overrides=["model.text.type=learnable", "model.text.context_tokens=4"],
    )


def test_context_set_to_words_equals_that_template(seg):
    """Context vectors = the token embeddings of "a photo of a" give exactly the embeddings
    of the template "a photo of a {}." (the insertion after start-of-text and the end-of-text
    position are right)."""
    enc = seg.model.text_encoder
    clip = seg.model.backbone.clip_model
    tok = open_clip.get_tokenizer(seg.model.backbone.name)
    words = tok(["a photo of a"])[0, 1:5]
    with torch.no_grad():
        enc.context.copy_(clip.token_embedding(words)[None].expand(2, -1, -1))
    vocab = Vocabulary.parse(VOCAB)
    got = enc(vocab).embeddings
    prompts = [f"a photo of a {s}." for s in vocab.flat_synonyms()]
    with torch.no_grad():
        want = torch.nn.functional.normalize(clip.encode_text(tok(prompts)).float(), dim=-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_thing_and_stuff_use_their_own_context(seg):
    enc = seg.model.text_encoder
    vocab = Vocabulary.parse(VOCAB)
    before = enc(vocab).embeddings
    with torch.no_grad():
        enc.context[1] += torch.randn_like(enc.context[1])  # the stuff set
    after = enc(vocab).embeddings
    stuff = torch.tensor([not c.isthing for c in vocab for _ in c.synonyms])
    assert torch.equal(before[~stuff], after[~stuff])
    assert (before[stuff] - after[stuff]).abs().max() > 1e-3


def test_gradients_reach_only_the_context(seg):
    m = seg.model.train()
    text = m.text_encoder(Vocabulary.parse(VOCAB))
    (text.embeddings * torch.randn_like(text.embeddings)).sum().backward()
    with_grad = [n for n, p in m.named_parameters() if p.grad is not None]
    assert with_grad == ["text_encoder.context"]
    assert m.text_encoder.context.grad.abs().sum(-1).gt(0).all()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert "text_encoder.context" in trainable
    assert not any(n.startswith("backbone.clip_model.") for n in trainable)


def test_cache_follows_the_parameters(seg):
    m = seg.model.eval()
    enc = m.text_encoder
    vocab = Vocabulary.parse(VOCAB)
    first = seg.encode_vocabulary(vocab).embeddings
    assert torch.equal(seg.encode_vocabulary(vocab).embeddings, first)  # served from memory
    opt = torch.optim.AdamW([enc.context], lr=0.05)
    enc.context.grad = torch.ones_like(enc.context)
    opt.step()  # in place: the cached entry is now stale
    second = seg.encode_vocabulary(vocab).embeddings
    assert not torch.allclose(second, first)
    enc._memory.clear()
    torch.testing.assert_close(seg.encode_vocabulary(vocab).embeddings, second, atol=0, rtol=0)
    state = {k: v.clone() for k, v in m.trainable_state_dict().items()}
    state["text_encoder.context"] = torch.zeros_like(enc.context)
    m.load_state_dict(state, strict=False)  # a loaded checkpoint bumps the version too
    assert not torch.allclose(seg.encode_vocabulary(vocab).embeddings, second)


def test_learned_context_is_checkpointed_and_applies_to_a_new_vocabulary(seg, tmp_path):
    with torch.no_grad():
        seg.model.text_encoder.context.normal_(0, 0.3)
    path = seg.save(tmp_path / "m.pth")
    again = Segmenter.from_pretrained(path)
    assert torch.equal(again.model.text_encoder.context, seg.model.text_encoder.context)
    new = "zebra; grass [stuff]; kite"
    torch.testing.assert_close(
        again.encode_vocabulary(new).embeddings, seg.encode_vocabulary(new).embeddings
    )
    pred = again.predict(np.zeros((64, 64, 3), np.uint8), new, task="panoptic")
    assert pred.panoptic_seg.shape == (64, 64)


def test_descriptions_are_refused_with_learnable_prompts(seg):
    vocab = Vocabulary.parse("cat; dog").with_descriptions({"cat": ["A pet."]})
    with pytest.raises(ValueError, match="model.text.type=learnable does not use"):
        seg.encode_vocabulary(vocab)
