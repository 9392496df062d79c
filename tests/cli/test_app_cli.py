"""``python demo/app.py``: set-up errors are one line (exit 2); the real script serves the page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from ovseg_testing import REPO

from ovseg.cli.app import main

pytest.importorskip("gradio", reason="the app needs gradio: pip install -e '.[app]'")


def test_setup_errors_are_one_line(capsys):
    assert main(["--config", "no/such/config.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not set up the model:")
    with pytest.raises(SystemExit) as e:
        main(["--model", "x.pth", "--weights", "y.pth"])
    assert e.value.code == 2


@pytest.mark.timeout(300)
def test_demo_app_serves_on_loopback(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(REPO / "demo" / "app.py"), "--config", "tests/fcclip_tiny.yaml",
           "--device", "cpu", "--port", str(port)]  # fmt: skip
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "no_proxy": "127.0.0.1"}
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    page = r.read().decode("utf-8", "replace")
                break
            except OSError:
                time.sleep(0.5)
        assert page is not None, log.read_text()[-2000:]
        assert "ovseg: open-vocabulary segmentation" in page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
