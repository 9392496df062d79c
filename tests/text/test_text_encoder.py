"""The text classifier: prefix-cached encoding equals plain encoding, batching is invisible."""

from __future__ import annotations

import numpy as np
import torch
from ovseg_testing import REPO, fixture_dir

from ovseg import Segmenter
from ovseg.text.vocabulary import Vocabulary


def test_prefix_cache_and_batching_do_not_change_embeddings():
    fx = fixture_dir("fcclip_tiny_rn")
    seg = Segmenter.from_pretrained(
        fx / "fcclip_tiny_rn_c.pth", config=REPO / "ovseg/configs/tests/fcclip_tiny_rn.yaml"
    )
    enc = seg.model.text_encoder
    assert enc.encode_with_prefix is not None, "open_clip's text tower supports the prefix cache"
    synonyms = Vocabulary.from_name("ade20k-150").flat_synonyms()[:40] + [
        "a very long class name with many words"
    ]
    cached = enc.encode_synonyms(synonyms)
    prefix_fn, enc.encode_with_prefix = enc.encode_with_prefix, None
    try:
        plain = enc.encode_synonyms(synonyms)
        enc.batch_size = 7  # ragged batches
        small_batches = enc.encode_synonyms(synonyms)
    finally:
        enc.encode_with_prefix, enc.batch_size = prefix_fn, 256
    torch.testing.assert_close(cached, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(small_batches, plain, atol=1e-6, rtol=0)
    assert cached.shape == (len(synonyms), 64)
    np.testing.assert_allclose(cached.norm(dim=-1).numpy(), 1.0, atol=1e-6)


def test_memory_cache_is_a_bounded_lru():
    seg = Segmenter.from_config(
        "configs/tests/fcclip_tiny.yaml",
        overrides=["model.text.disk_cache=false", "model.text.memory_cache_size=2"],
    )
    enc = seg.model.text_encoder
    a, b, c = (Vocabulary.parse(v) for v in ("cat; dog", "car; road", "sky; tree"))
    first = enc(a).embeddings
    enc(b)
    enc(a)  # a is now the most recently used
    enc(c)  # evicts b, not a
    keys = list(enc._memory)
    assert len(keys) == 2 and keys == [enc.cache_key(a), enc.cache_key(c)]
    assert torch.equal(enc(a).embeddings, first)  # served from memory, unchanged
