"""Issue 18, case 11: offline means offline for open_clip's CLIP tags too."""

from __future__ import annotations

import time

import pytest

from ovseg.models.backbones.clip import create_clip


@pytest.mark.parametrize("switch", ["OVSEG_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_missing_clip_tag_fails_at_once_naming_tag_and_cache(tmp_path, monkeypatch, switch):
    monkeypatch.setenv(switch, "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(ValueError) as err:
        create_clip("convnext_large_d_320", "laion2b_s29b_b131k_ft_soup")
    assert time.monotonic() - start < 10  # no retries against the network
    msg = str(err.value)
    assert "convnext_large_d_320/laion2b_s29b_b131k_ft_soup are not in the cache" in msg
    assert str(tmp_path / "hub") in msg and "hf-hub:laion/" in msg


def test_offline_uses_the_cached_file(tmp_path, monkeypatch):
    """A file in the Hub cache layout is what open_clip is given (no network call)."""
    from ovseg.models.backbones.clip import _cached_clip_file

    repo = "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
    snap = tmp_path / ("models--" + repo.replace("/", "--")) / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    (tmp_path / ("models--" + repo.replace("/", "--")) / "refs").mkdir()
    (tmp_path / ("models--" + repo.replace("/", "--")) / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("OVSEG_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    path = _cached_clip_file("convnext_large_d_320", "laion2b_s29b_b131k_ft_soup")
    assert path == str(snap / "open_clip_model.safetensors")
