"""Zoo end to end: a tiny ovseg checkpoint served over HTTP -> from_pretrained(name) -> predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from zoo_server import sha256

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "ovseg" / "configs" / "tests" / "fcclip_tiny.yaml"


def _segmenter_cls():
    try:
        from ovseg import Segmenter
    except (ImportError, AttributeError) as e:
        pytest.skip(f"ovseg.Segmenter is not importable yet ({type(e).__name__}: {e})")
    if not TINY.is_file():
        pytest.skip(f"{TINY} does not exist yet")
    return Segmenter


def test_download_load_predict(server, make_zoo, tmp_path, isolated_env):
    Segmenter = _segmenter_cls()
    torch.manual_seed(0)
    # smaller test-time resize than the config's 200 px: same code path, a CPU-second per image
    seg = Segmenter.from_config(
        str(TINY), overrides=["model.test.min_size=64", "model.test.max_size=128"]
    )
    saved = Path(seg.save(tmp_path / "tiny.pth"))
    data = saved.read_bytes()
    url = server.add("/models/tiny.pth", data, drop_at=len(data) // 2, drop_times=1)
    zoo_file = make_zoo({"tiny-test": {"url": url, "sha256": sha256(data), "size": len(data)}})

    loaded = Segmenter.from_pretrained("tiny-test", zoo_file=zoo_file)

    cached = isolated_env / "checkpoints" / "tiny-test.pth"
    assert cached.read_bytes() == data
    assert [h.status for h in server.hits("/models/tiny.pth")] == [200, 206]  # resumed once
    image = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    vocab = ["cat", "dog", "grass"]
    want = seg.predict(image, vocab, task="semantic")
    got = loaded.predict(image, vocab, task="semantic")
    assert got.sem_seg.shape == (3, 48, 64)
    torch.testing.assert_close(got.sem_seg, want.sem_seg)

    # offline, the cached file is used without asking the server
    n = len(server.log)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OVSEG_OFFLINE", "1")
        again = Segmenter.from_pretrained("tiny-test", zoo_file=zoo_file)
    assert len(server.log) == n
    want_sd, got_sd = seg.model.state_dict(), again.model.state_dict()
    assert want_sd.keys() == got_sd.keys()
    assert all(torch.equal(want_sd[k], got_sd[k]) for k in want_sd)
