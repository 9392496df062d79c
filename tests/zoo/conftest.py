"""Fixtures of the zoo tests: a local HTTP server and an isolated cache/environment."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from zoo_server import FileServer, Handler, Server, write_zoo


@pytest.fixture
def server():
    """A running :class:`FileServer` on 127.0.0.1 (port chosen by the OS)."""
    httpd = Server(("127.0.0.1", 0), Handler)
    fs = FileServer("127.0.0.1", httpd.server_address[1])
    httpd.fs = fs  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fs
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cache in a temporary $OVSEG_HOME; no user zoo files; online; no proxies for 127.0.0.1."""
    home = tmp_path / "ovseg_home"
    monkeypatch.setenv("OVSEG_HOME", str(home))
    monkeypatch.delenv("OVSEG_ZOO", raising=False)
    monkeypatch.delenv("OVSEG_OFFLINE", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return home


@pytest.fixture
def make_zoo(tmp_path: Path):
    """``make_zoo({name: fields})`` -> path of a zoo file in tmp_path."""
    counter = iter(range(1000))

    def make(entries: dict[str, dict]) -> Path:
        return write_zoo(tmp_path / f"zoo{next(counter)}.yaml", entries)

    return make
