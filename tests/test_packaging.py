"""The wheel works on its own: build it, install it into a fresh venv, run from another folder.

Modelled on detectron2's tests/test_packaging.py. The fresh venv sees this interpreter's
site-packages through a ``.pth`` file (torch etc. are not reinstalled) and gets ovseg only from
the wheel (``--no-deps``); the repository is kept off ``sys.path``.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{cmd[0]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv with the repository's wheel installed; returns (its bin dir, a clean env)."""
    tmp = tmp_path_factory.mktemp("pkg")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    whl_dir = tmp / "wheel"
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(whl_dir), str(REPO)],
        tmp,
        env,
    )
    (wheel,) = whl_dir.glob("ovseg-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    (purelib,) = (venv / "lib").glob("python*/site-packages")
    (purelib / "_ci_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    bindir = venv / "bin"
    _run(
        [str(bindir / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        tmp,
        env,
    )
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return bindir, env


def test_import_and_shipped_config_outside_repo(installed, tmp_path):
    bindir, env = installed
    out = _run(
        [
            str(bindir / "python"),
            "-c",
            "import ovseg; from ovseg.config import load_config; "
            "c = load_config('tests/fcclip_tiny.yaml'); print(ovseg.__file__); "
            "print(c.model.backbone.name)",
        ],
        tmp_path,
        env,
    )
    where, name = out.split()
    assert Path(where).is_relative_to(bindir.parent), where
    assert not Path(where).is_relative_to(REPO), where
    assert name == "convnext_fcclip_tiny_a"


def test_console_scripts_outside_repo(installed, tmp_path):
    bindir, env = installed
    info = _run([str(bindir / "ovseg-zoo"), "info", "fcclip-convnext-large-coco"], tmp_path, env)
    assert "fcclip/" in info
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    _run(
        [str(bindir / "ovseg-demo"), "--config", "tests/fcclip_tiny.yaml"]
        + ["--input", "a.png", "--vocab", "cat; dog", "--output", "out", "--device", "cpu"],
        tmp_path,
        env,
    )
    assert any((tmp_path / "out").iterdir())
