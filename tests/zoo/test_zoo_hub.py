"""hf:// zoo entries and Hub folders, offline: a prepared Hub cache (HF_HUB_OFFLINE=1) and a
loopback "Hub" server; the real huggingface_hub.hf_hub_download runs in both. No network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hub_testing import COMMIT, cache_files, fill_hub_cache, hub_server, repo_folder
from zoo_server import sha256

from ovseg import zoo
from ovseg.zoo.hub import HubError, parse_hub_url
from ovseg.zoo.registry import ZooFileError

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "ovseg" / "configs" / "tests" / "fcclip_tiny.yaml"
SMALL = ["model.test.min_size=64", "model.test.max_size=128"]
WEIGHTS = b"not really safetensors, only bytes to hash" * 100


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return cache


def test_parse_hub_url():
    assert parse_hub_url("hf://a/b") == parse_hub_url("hf://a/b")
    ref = parse_hub_url(f"hf://owner/repo.x@{COMMIT}/sub/model.safetensors")
    assert (ref.repo_id, ref.revision, ref.filename) == (
        "owner/repo.x",
        COMMIT,
        "sub/model.safetensors",
    )
    assert str(ref) == f"hf://owner/repo.x@{COMMIT}/sub/model.safetensors"
    plain = parse_hub_url("hf://owner/repo")
    assert (plain.revision, plain.filename) == (None, None)
    for bad in ("hf://owner", "hf://owner/repo/../x.safetensors", "hf:///repo/x"):
        with pytest.raises(ValueError, match="hf://"):
            parse_hub_url(bad)


def test_zoo_file_validates_hub_urls(make_zoo):
    path = make_zoo({"m": {"url": "hf://o/r@main/model.pth"}})
    with pytest.raises(ZooFileError, match="must be .safetensors"):
        zoo.load_zoo_file(path)
    with pytest.raises(ZooFileError, match="not a Hub reference"):
        zoo.load_zoo_file(make_zoo({"m": {"url": "hf://nope"}}))


def test_offline_entry_resolves_from_the_hub_cache(hub_cache, make_zoo, monkeypatch, isolated_env):
    snap = fill_hub_cache(hub_cache, "ovseg/tiny", {"model.safetensors": WEIGHTS})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = f"hf://ovseg/tiny@{COMMIT}/model.safetensors"
    zoo_file = make_zoo({"tiny-hub": {"url": url, "sha256": sha256(WEIGHTS)}})
    path = zoo.download("tiny-hub", zoo_file=zoo_file)
    assert path == snap / "model.safetensors" and path.read_bytes() == WEIGHTS
    # a branch resolves through refs/main
    main = make_zoo({"tiny-main": {"url": "hf://ovseg/tiny@main/model.safetensors"}})
    assert zoo.download("tiny-main", zoo_file=main) == path
    assert not (isolated_env / "checkpoints").exists()  # nothing copied into ovseg's cache
    info = zoo.describe(zoo.get_entry("tiny-hub", zoo_file), clip_info=False)
    assert f"the Hugging Face Hub cache ({hub_cache})" in info

    # not cached + offline: one clear line
    missing = make_zoo({"m": {"url": f"hf://ovseg/other@{COMMIT}/model.safetensors"}})
    with pytest.raises(HubError, match="not in the Hub cache.*HF_HUB_OFFLINE"):
        zoo.download("m", zoo_file=missing)


def test_offline_wrong_sha256_is_refused(hub_cache, make_zoo, monkeypatch, isolated_env):
    fill_hub_cache(hub_cache, "ovseg/tiny", {"model.safetensors": WEIGHTS})
    before = cache_files(hub_cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = f"hf://ovseg/tiny@{COMMIT}/model.safetensors"
    zoo_file = make_zoo({"bad": {"url": url, "sha256": "0" * 64}})
    with pytest.raises(zoo.ChecksumError, match="sha256 mismatch") as e:
        zoo.download("bad", zoo_file=zoo_file)
    assert e.value.actual == sha256(WEIGHTS)
    assert cache_files(hub_cache) == before  # the user's cache is not ours to delete
    assert not (isolated_env / "checkpoints").exists()


def test_http_download_and_wrong_sha256_leaves_nothing(hub_cache, make_zoo, monkeypatch):
    url = "hf://ovseg/tiny@main/model.safetensors"
    with hub_server({"ovseg/tiny": {"model.safetensors": WEIGHTS}}) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        bad = make_zoo({"bad": {"url": url, "sha256": "f" * 64}})
        with pytest.raises(zoo.ChecksumError, match="removed from the Hub cache"):
            zoo.download("bad", zoo_file=bad)
        assert not repo_folder(hub_cache, "ovseg/tiny").exists()
        assert {f for f in cache_files(hub_cache) if "tiny" in f} == set()

        good = make_zoo({"good": {"url": url, "sha256": sha256(WEIGHTS)}})
        path = zoo.download("good", zoo_file=good)
        assert path.read_bytes() == WEIGHTS
        assert (
            path
            == repo_folder(hub_cache, "ovseg/tiny") / "snapshots" / COMMIT / "model.safetensors"
        )
        # a second, mismatching entry for the cached file does not delete it
        with pytest.raises(zoo.ChecksumError, match="left in place"):
            zoo.download("bad", zoo_file=bad)
        assert path.read_bytes() == WEIGHTS
    # server gone, file cached: offline works
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert zoo.download("good", zoo_file=good) == path


def _tiny(tmp_path: Path):
    from ovseg import Segmenter

    torch.manual_seed(0)
    seg = Segmenter.from_config(str(TINY), overrides=SMALL)
    return seg, seg.save(tmp_path / "tiny.pth")


def _same_outputs(a, b) -> None:
    img = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    pa = a.predict(img, "person; sky [stuff]; cup", task="panoptic")
    pb = b.predict(img, "person; sky [stuff]; cup", task="panoptic")
    assert torch.equal(pa.panoptic_seg, pb.panoptic_seg)
    assert pa.segments_info == pb.segments_info


def test_hub_folder_round_trip_and_hf_repo_id(tmp_path, hub_cache, monkeypatch, make_zoo):
    from safetensors import safe_open

    from ovseg import Segmenter
    from ovseg.zoo.cli import publish_main

    seg, ckpt = _tiny(tmp_path)
    metrics = tmp_path / "metrics.yaml"
    metrics.write_text("ade20k: {PQ: 1.5, mIoU: 2.5}\n")
    folder = tmp_path / "hub"
    rc = publish_main(
        [str(ckpt), "--name", "tiny-test", "--out", str(tmp_path / "rel"), "--hub-folder",
         str(folder), "--metrics", str(metrics), "--dataset", "COCO panoptic train2017"]
    )  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.yaml",
        "model.safetensors",
    ]
    card = (folder / "README.md").read_text()
    for text in ("license: apache-2.0", "convnext_fcclip_tiny_a", "COCO panoptic train2017",
                 "| ade20k | PQ | 1.5 |", "yu2023fcclip", "Apache-2.0"):  # fmt: skip
        assert text in card, text
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata()["format"] == "ovseg"
    assert keys == set(seg.model.trainable_state_dict(True))  # random CLIP: stored with it

    _same_outputs(seg, Segmenter.from_pretrained(folder))
    # the weights file alone carries its config (metadata)
    alone = tmp_path / "alone" / "tiny.safetensors"
    alone.parent.mkdir()
    alone.write_bytes((folder / "model.safetensors").read_bytes())
    _same_outputs(seg, Segmenter.from_pretrained(alone))

    # the folder as a Hub repository in the cache: plain repo id, offline
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    fill_hub_cache(hub_cache, "me/tiny", files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _same_outputs(seg, Segmenter.from_pretrained("hf://me/tiny"))
    # a zoo entry naming the plain repository, pinned and checksummed
    digest = sha256(files["model.safetensors"])
    zoo_file = make_zoo({"tiny-hub": {"url": f"hf://me/tiny@{COMMIT}", "sha256": digest}})
    _same_outputs(seg, Segmenter.from_pretrained("tiny-hub", zoo_file=zoo_file))
    with pytest.raises(ValueError, match="safetensors"):
        Segmenter.from_pretrained("hf://me/tiny/model.pth")


def test_push_needs_a_token(tmp_path, monkeypatch, capsys):
    from ovseg.zoo.cli import publish_main

    _, ckpt = _tiny(tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no_hf_home"))  # no stored login either
    rc = publish_main(
        [str(ckpt), "--name", "t", "--hub-folder", str(tmp_path / "h"), "--push", "me/t"]
    )
    assert rc == 1
    assert "no Hugging Face token" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        publish_main([str(ckpt), "--name", "t", "--push", "me/t"])
    assert e.value.code == 2
