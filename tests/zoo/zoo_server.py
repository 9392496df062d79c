"""A local HTTP file server (127.0.0.1, in-process thread) with switches for misbehaving.

Each served path has a :class:`Route` telling the server how to answer: drop the connection at
an offset, ignore ``Range``, answer an HTTP error a number of times, redirect, play Google Drive's
large-file confirmation page, or trickle the bytes slowly. Every request is recorded in
``server.log`` so tests can assert on what the downloader asked for.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml


@dataclass
class Route:
    """How to serve one path.

    Attributes:
        data: the file's bytes (None for pure redirects / error routes).
        drop_at: close the connection once the body reaches this absolute byte offset.
        drop_times: how many responses get dropped (then the route behaves).
        ignore_range: answer 200 with the whole file even when asked for a range.
        error: HTTP status to answer instead of the file ...
        error_times: ... this many times (then serve the file).
        redirect: answer 302 with this Location.
        drive: ``"form"`` (drive.usercontent-style form with hidden inputs), ``"cookie"``
            (download_warning cookie + confirm=TOKEN) or ``"html"`` (an HTML page that is not a
            confirmation page).
        delay_s: sleep between 16 KiB chunks (to make concurrent downloads overlap).
    """

    data: bytes | None = None
    drop_at: int | None = None
    drop_times: int = 0
    ignore_range: bool = False
    error: int | None = None
    error_times: int = 0
    redirect: str | None = None
    drive: str | None = None
    delay_s: float = 0.0


@dataclass
class Hit:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass
class FileServer:
    host: str
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    log: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def add(self, path: str, data: bytes | None = None, **switches: object) -> str:
        self.routes[path] = Route(data=data, **switches)  # type: ignore[arg-type]
        return self.url(path)

    def hits(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.log if urlsplit(h.path).path == path]

    def body_bytes(self, path: str) -> int:
        return sum(h.body_bytes for h in self.hits(path))


DRIVE_TOKEN = "t0k3n"
DRIVE_UUID = "6a1f-uuid"


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "ovseg-test/1.0"
    protocol_version = "HTTP/1.0"  # one request per connection: a drop is a plain close

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    @property
    def fs(self) -> FileServer:
        return self.server.fs  # type: ignore[attr-defined]

    def _record(self, status: int, nbytes: int) -> Hit:
        hit = Hit("GET", self.path, self.headers.get("Range"), status, nbytes)
        with self.fs.lock:
            self.fs.log.append(hit)
        return hit

    def _simple(self, status: int, body: bytes = b"", ctype: str = "text/plain", extra=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self._record(status, 0)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = self.fs.routes.get(parts.path)
        if route is None:
            self._simple(404, b"not found")
            return
        if route.redirect:
            self._simple(302, extra=[("Location", route.redirect)])
            return
        if route.error is not None and route.error_times > 0:
            route.error_times -= 1
            self._simple(route.error, f"error {route.error}".encode())
            return
        if route.drive and not self._drive_confirmed(route, parts.path, query):
            return
        self._serve(route)

    def _drive_confirmed(self, route: Route, path: str, query: dict[str, str]) -> bool:
        """Play Drive's confirmation step; True when the request may get the file."""
        html = "text/html; charset=utf-8"
        if route.drive == "html":
            self._simple(200, b"<html><body>Quota exceeded</body></html>", html)
            return False
        if route.drive == "cookie":
            if query.get("confirm") == DRIVE_TOKEN and DRIVE_TOKEN in self.headers.get(
                "Cookie", ""
            ):
                return True
            page = b"<html><body>Google Drive can't scan this file for viruses.</body></html>"
            cookie = f"download_warning_13058876669334088843_abc={DRIVE_TOKEN}; Path=/"
            self._simple(200, page, html, extra=[("Set-Cookie", cookie)])
            return False
        # "form": the page at PATH posts to PATH/download with hidden inputs
        if path.endswith("/download"):
            if query.get("confirm") == DRIVE_TOKEN and query.get("uuid") == DRIVE_UUID:
                return True
            self._simple(403, b"bad confirmation")
            return False
        page = (
            "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
            "<body><p>Google Drive can't scan this file for viruses.</p>"
            f'<form id="download-form" action="{path}/download" method="get">'
            '<input type="submit" id="uc-download-link" value="Download anyway"/>'
            f'<input type="hidden" name="id" value="{query.get("id", "")}">'
            '<input type="hidden" name="export" value="download">'
            f'<input type="hidden" name="confirm" value="{DRIVE_TOKEN}">'
            f'<input type="hidden" name="uuid" value="{DRIVE_UUID}">'
            "</form></body></html>"
        ).encode()
        self._simple(200, page, html)
        return False

    def _serve(self, route: Route) -> None:
        data = route.data or b""
        start = 0
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not route.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self._simple(416, extra=[("Content-Range", f"bytes */{len(data)}")])
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            status = 206
        else:
            self.send_response(200)
            status = 200
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "none" if route.ignore_range else "bytes")
        self.end_headers()
        end = len(data)
        if route.drop_at is not None and route.drop_times > 0:
            route.drop_times -= 1
            end = max(start, min(route.drop_at, len(data)))  # past drop_at: drop at once
        # Recorded before the body goes out: the client may be done before this thread resumes.
        hit = self._record(status, end - start)
        sent = 0
        pos = start
        try:
            while pos < end:
                chunk = data[pos : min(end, pos + (1 << 14))]
                self.wfile.write(chunk)
                self.wfile.flush()
                pos += len(chunk)
                sent += len(chunk)
                if route.delay_s:
                    time.sleep(route.delay_s)
        except (BrokenPipeError, ConnectionResetError):
            hit.body_bytes = sent
        if end < len(data):
            self.close_connection = True  # the client sees fewer bytes than Content-Length


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def payload(size: int = 300_000, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_zoo(path: Path, entries: dict[str, dict]) -> Path:
    """Write a user zoo file."""
    path.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    return path
