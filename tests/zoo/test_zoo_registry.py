"""Zoo files: the built-in manifest, user files, validation and look-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ovseg import zoo
from ovseg.zoo.registry import load_zoo_file

OFFICIAL = {
    "fcclip-convnext-large-coco": ("convnext_large_d_320", "laion2b_s29b_b131k_ft_soup"),
    "fcclip-rn50-coco": ("RN50", "openai"),
    "fcclip-rn101-coco": ("RN101", "openai"),
    "fcclip-rn50x4-coco": ("RN50x4", "openai"),
    "fcclip-rn50x16-coco": ("RN50x16", "openai"),
    "fcclip-rn50x64-coco": ("RN50x64", "openai"),
}


def test_builtin_manifest_has_the_six_official_checkpoints():
    entries = load_zoo_file(zoo.MANIFEST)
    assert list(entries) == list(OFFICIAL)
    for name, (model, tag) in OFFICIAL.items():
        e = entries[name]
        assert e.clip == {"model": model, "pretrained": tag}
        assert e.format == "fcclip"
        assert e.urls[0].startswith("https://drive.google.com/uc?export=download&id=")
        assert e.sha256 is None and not e.verified  # not published upstream: nothing claims it
        assert e.license == "Apache-2.0"
        assert set(e.metrics) >= {"ade20k", "coco", "cityscapes"}
    large = entries["fcclip-convnext-large-coco"]
    assert large.config == "fcclip/fcclip_convnext_large_eval_ade20k.yaml"
    assert large.metrics["ade20k"] == {"PQ": 26.8, "mAP": 16.8, "mIoU": 34.1}
    assert entries["fcclip-rn50x64-coco"].config == "fcclip/fcclip_rn50x64_eval_ade20k.yaml"
    assert large.cache_filename == "fcclip-convnext-large-coco.pth"


def test_unknown_name_suggests_close_names():
    with pytest.raises(KeyError) as err:
        zoo.get_entry("fcclip-rn50-cooc")
    msg = str(err.value)
    assert "did you mean 'fcclip-rn50-coco'" in msg
    assert "fcclip-convnext-large-coco" in msg  # and lists what exists
    assert "--zoo-file" in msg


def test_user_zoo_file_adds_and_overrides(make_zoo, monkeypatch):
    sha = "ab" * 32
    user = make_zoo(
        {
            "mine": {"url": "https://example.org/mine.pth", "sha256": sha.upper(), "size": 10},
            "fcclip-rn50-coco": {"urls": ["https://mirror.example/rn50.pth"]},
        }
    )
    e = zoo.get_entry("mine", zoo_file=user)
    assert e.urls == ["https://example.org/mine.pth"] and e.sha256 == sha and e.verified
    assert e.format == "ovseg" and e.zoo_file == str(user)
    assert zoo.get_entry("fcclip-rn50-coco", zoo_file=user).urls == [
        "https://mirror.example/rn50.pth"
    ]

    # $OVSEG_ZOO: a path list; --zoo-file comes last and wins
    other = make_zoo(
        {"mine": {"url": "https://other.example/mine.pth"}, "env-only": {"url": "https://e/x.pt"}}
    )
    monkeypatch.setenv("OVSEG_ZOO", os.pathsep.join([str(other)]))
    assert zoo.get_entry("env-only").cache_filename == "env-only.pt"
    assert zoo.get_entry("mine").urls == ["https://other.example/mine.pth"]
    assert zoo.get_entry("mine", zoo_file=user).urls == ["https://example.org/mine.pth"]
    names = [e.name for e in zoo.list_entries(zoo_file=user)]
    assert names[:6] == list(OFFICIAL) and {"mine", "env-only"} <= set(names)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"sha256": "ab" * 32}, "missing required field 'urls'"),
        ({"url": "https://x/y.pth", "sha": "1"}, "unknown field 'sha'; did you mean 'sha256'"),
        ({"url": "https://x/y.pth", "sha256": "xyz"}, "'sha256' must be 64 hex digits"),
        ({"url": "ftp://x/y.pth"}, "must start with http://"),
        ({"url": "https://x/y.pth", "size": "big"}, "'size' must be a byte count"),
        ({"url": "https://x/y.pth", "format": "fclip"}, "did you mean 'fcclip'"),
        (
            {"url": "https://x/y.pth", "clip": {"model": "RN50", "pretrain": "openai"}},
            "clip.pretrain",
        ),
        ({"urls": []}, "non-empty list"),
    ],
)
def test_bad_entries_name_file_entry_and_field(make_zoo, fields, needle):
    path = make_zoo({"broken-model": fields})
    with pytest.raises(zoo.ZooFileError) as err:
        zoo.get_entry("broken-model", zoo_file=path)
    msg = str(err.value)
    assert str(path) in msg and "'broken-model'" in msg and needle in msg


def test_missing_or_malformed_zoo_file(tmp_path):
    with pytest.raises(zoo.ZooFileError, match="does not exist"):
        zoo.get_entry("x", zoo_file=tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(zoo.ZooFileError, match="must be a mapping from model name"):
        zoo.load_zoo(bad)


def test_markdown_table():
    table = zoo.markdown_table()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Model | CLIP (open_clip) | Trained on | ADE20K PQ / mAP / mIoU |")
    assert len(lines) == 2 + 6
    row = next(line for line in lines if "`fcclip-convnext-large-coco`" in line)
    assert "| 26.8 / 16.8 / 34.1 |" in row and "| 54.4 / 44.6 / 63.7 |" in row
    assert row.endswith("| ? | unverified |")


def test_cli_list(capsys, make_zoo):
    user = make_zoo(
        {"mine": {"url": "https://example.org/mine.pth", "sha256": "cd" * 32, "size": 2048}}
    )
    assert zoo.main(["list", "--zoo-file", str(user)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "name",
        "task",
        "/",
        "dataset",
        "size",
        "sha256",
        "cached",
        "metrics",
    ]
    mine = next(line for line in lines if line.startswith("mine "))
    assert "2.0 KiB" in mine and "verified" in mine and "unverified" not in mine
    rn50 = next(line for line in lines if line.startswith("fcclip-rn50-coco "))
    assert "unverified" in rn50 and "ADE20K PQ 17.9 mAP 9.5 mIoU 23.3" in rn50
    assert zoo.main(["list", "--markdown"]) == 0
    assert capsys.readouterr().out == zoo.markdown_table()


def test_builtin_configs_exist_and_name_the_same_clip():
    from ovseg.config import load_config

    configs = Path(__file__).resolve().parents[2] / "ovseg" / "configs"
    for e in load_zoo_file(zoo.MANIFEST).values():
        path = configs / e.config
        assert path.is_file(), f"{e.name}: {path} is missing"
        backbone = load_config(path).model.backbone
        assert (backbone.name, backbone.pretrained) == (e.clip["model"], e.clip["pretrained"]), (
            e.name
        )


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("../../../escaped", {}),
        ("/tmp/absolute-victim.pth", {}),
        (".hidden", {}),
        ("ok-name", {"filename": ".."}),
        ("ok-name", {"filename": "/etc/passwd"}),
        ("ok-name", {"filename": "a\x00b"}),
    ],
)
def test_names_and_filenames_must_be_plain(make_zoo, tmp_path, name, fields):
    """Issue 18, case 3: a name or filename that would leave the cache is refused at load."""
    victim = tmp_path / "absolute-victim.pth"
    victim.write_bytes(b"user data")
    path = make_zoo({name: {"url": "https://x/y.pth", "sha256": "ab" * 32, **fields}})
    with pytest.raises(zoo.ZooFileError, match=r"plain (file )?name") as err:
        load_zoo_file(path)
    assert str(path) in str(err.value)
    assert victim.read_bytes() == b"user data"


def test_cached_path_refuses_a_hand_built_escaping_entry(tmp_path):
    from ovseg.zoo.downloader import cached_path
    from ovseg.zoo.registry import ZooEntry

    entry = ZooEntry(name="../escaped", urls=["https://x/y.pth"])
    with pytest.raises(zoo.ZooFileError, match="not a plain name"):
        cached_path(entry, tmp_path)
