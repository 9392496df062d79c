"""Where open_clip caches a zoo model's frozen CLIP (reported by `python -m ovseg.zoo info`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovseg.zoo.clip_cache import clip_cache_info

hub = pytest.importorskip("huggingface_hub")


def test_resolves_hf_hub_source_and_cache_dir():
    from huggingface_hub import constants

    info = clip_cache_info("convnext_large_d_320", "laion2b_s29b_b131k_ft_soup")
    assert info.error == ""
    assert info.source == "hf-hub:laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
    assert info.cache_dir == Path(constants.HF_HUB_CACHE)
    assert info.cached_file is None or info.cached_file.is_file()
    assert str(info.cache_dir) in info.describe()


def test_unknown_tag_lists_the_known_ones():
    info = clip_cache_info("RN50", "opneai")
    assert "no pretrained tag 'opneai' for 'RN50'" in info.error and "openai" in info.error
    assert "checkpoint must hold the CLIP" in clip_cache_info("RN50", None).error
