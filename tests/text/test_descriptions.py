"""Class descriptions (CuPL) and synonym combination: the classifier equals an independent
computation with open_clip's own ``encode_text`` + tokenizer on the fixture's tiny CLIP."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from ovseg_testing import fixture_dir

from ovseg import Segmenter
from ovseg.text.templates import VILD_TEMPLATES
from ovseg.text.vocabulary import Vocabulary, load_descriptions

DESCRIPTIONS = {
    "cat": ["A small furry pet with whiskers.", "A cat has pointed ears and a long tail."],
    "road": ["A flat paved surface for cars.", "Grey asphalt with painted lines.", "A street."],
}
VOCAB = "cat, kitty; dog, puppy; road, street [stuff]; sky [stuff]"


@pytest.fixture(scope="module")
def seg():
    fx = fixture_dir("fcclip_tiny")
    return Segmenter.from_pretrained(fx / "fcclip_tiny_a.pth", config="tests/fcclip_tiny.yaml")


def reference(seg, texts: list[str]) -> torch.Tensor:
    """norm(open_clip encode_text) of each text: no ovseg code on this path."""
    clip = seg.model.backbone.clip_model
    tok = open_clip.get_tokenizer(seg.model.backbone.name)
    with torch.no_grad():
        return F.normalize(clip.encode_text(tok(texts)).float(), dim=-1)


def mean_norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.mean(0), dim=-1)


@pytest.mark.parametrize("mode", ["replace", "both"])
def test_descriptions_classifier_equals_open_clip(seg, mode):
    seg.model.text_encoder.description_mode = mode
    vocab = Vocabulary.parse(VOCAB).with_descriptions(DESCRIPTIONS)
    text = seg.encode_vocabulary(vocab)
    rows = []
    for c in vocab:
        d = reference(seg, list(c.descriptions)) if c.descriptions else None
        if mode == "replace" and d is not None:
            rows.append(mean_norm(d))
            continue
        for s in c.synonyms:
            t = reference(seg, [tpl.format(s) for tpl in VILD_TEMPLATES])
            rows.append(mean_norm(t if d is None else torch.cat([t, d])))
    want = torch.stack(rows)
    assert text.embeddings.shape == want.shape
    torch.testing.assert_close(text.embeddings, want, atol=1e-5, rtol=0)
    # A class with descriptions in replace mode has exactly one row; the others keep theirs.
    assert text.num_synonyms == ([1, 2, 1, 1] if mode == "replace" else [2, 2, 2, 1])
    assert text.synonym_index.tolist() == [
        i for i, n in enumerate(text.num_synonyms) for _ in range(n)
    ]


def test_classes_without_descriptions_keep_fcclip_rows(seg):
    seg.model.text_encoder.description_mode = "replace"
    plain = seg.encode_vocabulary(Vocabulary.parse(VOCAB)).embeddings
    described = seg.encode_vocabulary(Vocabulary.parse(VOCAB).with_descriptions(DESCRIPTIONS))
    # rows: cat (1, described), dog x2, road (1, described), sky
    torch.testing.assert_close(described.embeddings[[1, 2, 4]], plain[[2, 3, 6]], atol=1e-6, rtol=0)
    assert not torch.allclose(described.embeddings[0], plain[0])


def test_synonym_mean_is_the_mean_of_the_synonym_logits(seg):
    enc = seg.model.text_encoder
    vocab = Vocabulary.parse(VOCAB)
    rows = seg.encode_vocabulary(vocab)
    enc.synonym_combination = "mean"
    try:
        mean = seg.encode_vocabulary(vocab)
    finally:
        enc.synonym_combination = "max"
    assert mean.num_synonyms == [1, 1, 1, 1]
    x = F.normalize(torch.randn(5, rows.embeddings.shape[1]), dim=-1)
    per_syn = x @ rows.embeddings.T
    want = torch.stack([g.mean(1) for g in per_syn.split(rows.num_synonyms, dim=1)], 1)
    torch.testing.assert_close(x @ mean.embeddings.T, want, atol=1e-6, rtol=0)


def test_cache_key_includes_sentences_and_mode(seg):
    enc = seg.model.text_encoder
    a = Vocabulary.parse(VOCAB)
    b = a.with_descriptions(DESCRIPTIONS)
    c = a.with_descriptions({"cat": ["Another sentence."]})
    keys = {enc.cache_key(v) for v in (a, b, c)}
    enc.description_mode = "both"
    keys.add(enc.cache_key(b))
    enc.description_mode = "replace"
    assert len(keys) == 4


def test_long_sentence_is_truncated_with_a_warning_naming_the_class(seg):
    vocab = Vocabulary.parse("cat; dog").with_descriptions({"dog": ["word " * 100]})
    with pytest.warns(UserWarning, match=r"truncated \(class\(es\) \['dog'\]"):
        text = seg.model.text_encoder.encode_vocabulary(vocab)
    assert torch.isfinite(text).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"cta": ["x"]}, r"key 'cta' matches no class.*did you mean 'cat'"),
        ({"cat": []}, r"key 'cat' has an empty list"),
        ({"cat": ["ok", 3]}, r"key 'cat', sentence 1 is int"),
        ({"cat": "a sentence"}, r"key 'cat': expected a list"),
    ],
)
def test_bad_descriptions_name_the_key(bad, match):
    with pytest.raises(ValueError, match=match):
        Vocabulary.parse("cat; dog").with_descriptions(bad)


def test_config_descriptions_file_reaches_the_segmenter(seg, tmp_path):
    path = tmp_path / "cupl.json"
    path.write_text(json.dumps(DESCRIPTIONS))
    assert load_descriptions(path) == {k: tuple(v) for k, v in DESCRIPTIONS.items()}
    seg.config.model.text.descriptions = str(path)
    try:
        vocab = seg.vocabulary(VOCAB)
        assert vocab.descriptions == {k: tuple(v) for k, v in DESCRIPTIONS.items()}
        pred = seg.predict(np.zeros((64, 64, 3), np.uint8), VOCAB, task="semantic")
        assert tuple(pred.sem_seg.shape) == (4, 64, 64)
        assert pred.vocabulary.descriptions == vocab.descriptions
        with pytest.raises(ValueError, match="key 'road' matches no class"):
            seg.vocabulary("cat; dog")
    finally:
        seg.config.model.text.descriptions = None


def test_a_classifier_with_replaced_rows_can_be_shared(seg):
    """remember() (labelling workers adopt the driver's classifier) counts rows as the encoder
    makes them: a described class in replace mode has one row, not one per synonym."""
    enc = seg.model.text_encoder
    vocab = Vocabulary.parse("cat, kitten; dog").with_descriptions({"cat": ["a small pet"]})
    text = enc(vocab)
    assert text.embeddings.shape[0] == 2  # cat: 1 (replaced), dog: 1
    enc._memory.clear()
    enc.remember(text)
    original, enc.encode_synonyms = enc.encode_synonyms, None  # a lookup must not encode
    try:
        assert torch.equal(enc(vocab).embeddings, text.embeddings)
    finally:
        enc.encode_synonyms = original
