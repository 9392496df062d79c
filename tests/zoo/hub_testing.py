"""Offline stand-ins for the Hugging Face Hub: a hand-built Hub cache and a loopback "Hub" server.

Both follow huggingface_hub's real layouts, so the code under test is the real
``hf_hub_download``: the cache is ``models--OWNER--REPO/{blobs/<etag>, refs/<branch>,
snapshots/<commit>/FILE -> ../../blobs/<etag>}``; the server answers ``HEAD``/``GET
/OWNER/REPO/resolve/<revision>/<file>`` with the ``X-Repo-Commit`` / ``ETag`` headers the Hub sends.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def fill_hub_cache(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, branch: str = "main"
) -> Path:
    """Lay ``files`` out as huggingface_hub's cache would after downloading them; returns the
    snapshot folder."""
    root = repo_folder(cache, repo_id)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / branch).write_text(commit)
    snap = root / "snapshots" / commit
    for name, data in files.items():
        etag = hashlib.sha256(data).hexdigest()
        (root / "blobs" / etag).write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "blobs" / etag, link.parent))
    return snap


def cache_files(cache: Path) -> set[str]:
    """Every file and link under the cache, relative, except huggingface_hub's lock files."""
    if not cache.exists():
        return set()
    return {
        str(p.relative_to(cache))
        for p in cache.rglob("*")
        if (p.is_file() or p.is_symlink()) and ".locks" not in p.parts
    }


class _HubHandler(http.server.BaseHTTPRequestHandler):
    repos: dict[str, dict[str, bytes]] = {}

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass

    def _lookup(self) -> bytes | None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        repo, file = "/".join(parts[:2]), "/".join(parts[4:])
        return self.repos.get(repo, {}).get(file)

    def _head(self, data: bytes | None) -> None:
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._head(self._lookup())

    def do_GET(self) -> None:  # noqa: N802
        data = self._lookup()
        self._head(data)
        if data is not None:
            self.wfile.write(data)


@contextmanager
def hub_server(repos: dict[str, dict[str, bytes]]) -> Iterator[str]:
    """Serve ``{repo_id: {file: bytes}}`` on 127.0.0.1; yields the endpoint URL."""
    handler = type("Handler", (_HubHandler,), {"repos": repos})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
