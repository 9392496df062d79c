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


def test_disk_cache_entries_are_checked_and_rebuilt(tmp_path, monkeypatch):
    """Issue 18, case 8: flipped bytes, NaNs or a wrong-shape tensor in the text-embedding cache
    warn and are rebuilt; predictions never use them."""
    import pytest

    monkeypatch.setenv("OVSEG_HOME", str(tmp_path))
    seg = Segmenter.from_config("configs/tests/fcclip_tiny.yaml",
                                overrides=["model.text.disk_cache=false"])  # fmt: skip
    enc = seg.model.text_encoder
    enc.disk_cache, enc.weights_id = True, "test-weights"
    vocab = Vocabulary.parse("cat; dog; sky")
    good = enc(vocab).embeddings.clone()
    path = enc._path(enc.cache_key(vocab))
    entry = torch.load(path, weights_only=True)
    assert entry["shape"] == [3, good.shape[1]] and entry["dtype"] == "torch.float32"

    flipped = entry["embeddings"].clone()
    flipped[0, 0] = -flipped[0, 0]
    nan = entry["embeddings"].clone()
    nan[1, 2] = float("nan")
    cases = {
        "checksum mismatch": {**entry, "embeddings": flipped},
        "non-finite": {**entry, "embeddings": nan, "sha256": _sha(nan)},
        r"expected \(3, D\)": {
            **entry,
            "embeddings": torch.zeros(5, 7),
            "shape": [5, 7],
            "sha256": _sha(torch.zeros(5, 7)),
        },  # fmt: skip
        "old format": entry["embeddings"],  # a bare tensor, as written before
    }
    for needle, bad in cases.items():
        torch.save(bad, path)
        enc._memory.clear()
        with pytest.warns(UserWarning, match=f"text-embedding cache .*{needle}.*rebuilding"):
            out = enc(vocab).embeddings
        torch.testing.assert_close(out, good, atol=1e-6, rtol=0)
        assert torch.load(path, weights_only=True)["sha256"] == entry["sha256"]  # rewritten


def _sha(t):
    import hashlib

    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy()).hexdigest()
