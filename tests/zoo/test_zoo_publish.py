"""tools/publish_model.py: strip a training checkpoint, hash-named file, zoo entry round trip."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from zoo_server import write_zoo

from ovseg import zoo
from ovseg.cli.publish_model import main as publish_main
from ovseg.zoo.publish import publish_model

REPO = Path(__file__).resolve().parents[2]


def _training_checkpoint(path: Path) -> dict:
    """A checkpoint as the trainer writes it (plain dict of tensors and primitives)."""
    g = torch.Generator().manual_seed(0)
    model = {
        "pixel_decoder.proj.weight": torch.randn(8, 4, generator=g),
        "predictor.class_embed.bias": torch.randn(8, generator=g),
    }
    ckpt = {
        "format": "ovseg",
        "version": 1,
        "config": "model:\n  num_queries: 4\n",
        "model": model,
        "meta": {"clip": {"model": "RN50", "pretrained": "openai"}, "iteration": 10},
        "optimizer": {"state": {0: {"exp_avg": torch.ones(8, 4)}}, "param_groups": [{"lr": 1e-4}]},
        "scheduler": {"last_epoch": 10},
        "scaler": {},
        "rng": {"torch": torch.get_rng_state()},
        "iteration": 10,
        "sampler": {"epoch": 0},
    }
    torch.save(ckpt, path)
    return ckpt


def test_publish_round_trip(tmp_path, server, make_zoo):
    src = tmp_path / "last.pth"
    ckpt = _training_checkpoint(src)

    result = publish_model(
        src, "tiny-model", out_dir=tmp_path / "release", url_prefix=server.url("/r")
    )

    digest = hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert result.sha256 == digest
    assert result.path.name == f"tiny-model-{digest[:8]}.pth"
    assert result.size == result.path.stat().st_size
    assert result.stripped == ["iteration", "optimizer", "rng", "sampler", "scaler", "scheduler"]
    assert [p.name for p in result.path.parent.iterdir()] == [result.path.name]  # no temp left

    loaded = torch.load(result.path, map_location="cpu", weights_only=True)
    assert sorted(loaded) == ["config", "format", "meta", "model", "version"]
    assert loaded["config"] == ckpt["config"] and loaded["format"] == "ovseg"
    for k, v in ckpt["model"].items():
        assert torch.equal(loaded["model"][k], v)

    fields = yaml.safe_load(result.entry_yaml)["tiny-model"]
    assert fields["sha256"] == digest and fields["size"] == result.size
    assert fields["urls"] == [server.url(f"/r/{result.path.name}")]
    assert fields["clip"] == {"model": "RN50", "pretrained": "openai"}

    # the printed entry is a working zoo file: serve the file and download it verified
    server.add(f"/r/{result.path.name}", result.path.read_bytes())
    zoo_file = make_zoo(yaml.safe_load(result.entry_yaml))
    path = zoo.download("tiny-model", zoo_file=zoo_file, progress=False)
    assert path.name == result.path.name and path.read_bytes() == result.path.read_bytes()


def test_publish_cli_prints_entry(tmp_path, capsys):
    src = tmp_path / "ckpt.pth"
    _training_checkpoint(src)
    assert publish_main([str(src), "--name", "cli-model", "--out", str(tmp_path / "o")]) == 0
    out, err = capsys.readouterr()
    entry = yaml.safe_load(out)["cli-model"]
    published = tmp_path / "o" / entry["filename"]
    assert published.is_file() and entry["urls"] == [published.resolve().as_uri()]
    assert "stripped: iteration, optimizer" in err
    # file:// URLs work for local zoo files too
    zoo_file = write_zoo(tmp_path / "z.yaml", {"cli-model": entry})
    assert zoo.download("cli-model", zoo_file=zoo_file, progress=False).read_bytes() == (
        published.read_bytes()
    )


def test_publish_rejects_foreign_checkpoints(tmp_path, capsys):
    foreign = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "iteration": 3}, foreign)
    with pytest.raises(ValueError, match="is not an ovseg checkpoint"):
        publish_model(foreign, "x")
    assert publish_main([str(foreign), "--name", "x"]) == 1
    assert "not an ovseg checkpoint" in capsys.readouterr().err
    with pytest.raises(ValueError, match="plain name"):
        publish_model(foreign, "a/b")


def test_tools_script_help():
    commands = [["tools/publish_model.py"], ["tools/download.py"], ["-m", "ovseg.zoo"]]
    for cmd in commands:
        out = subprocess.run(
            [sys.executable, *cmd, "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
        )
        assert out.returncode == 0, out.stderr
        assert "usage:" in out.stdout
