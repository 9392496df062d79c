"""Checksummed, resumable, cached downloads of zoo weights (stdlib ``urllib``; ``hf://`` URLs
go through ``huggingface_hub`` and its cache instead, see :mod:`ovseg.zoo.hub`).

The life of one download of ``FILE`` in ``$OVSEG_HOME/checkpoints`` (default
``~/.cache/ovseg/checkpoints``):

1. ``FILE`` exists and its sha256 matches the entry (or, for an entry without a sha256, the hash
   recorded in ``FILE.sha256`` when it was downloaded): return it.
2. Otherwise take ``FILE.lock`` (other processes and threads wait, then find the finished file).
3. Stream each URL in turn (mirrors) into ``FILE.partial`` with a progress bar. A partial file
   from an interrupted run is resumed with an HTTP ``Range`` request; a server that ignores the
   range (answers 200) is read from zero again. Dropped connections and 5xx answers are retried.
   Google Drive's "can't scan this file for viruses" page is answered by following its confirm
   form / link / ``download_warning`` cookie.
4. Check size and sha256; a mismatch deletes the partial file and fails with both hashes.
5. ``os.replace`` the partial file onto ``FILE``: the cache never holds a broken file under a
   final name. Entries without a sha256 get ``FILE.sha256`` (``sha256sum`` format) recording what
   was downloaded.

``OVSEG_OFFLINE=1`` never touches the network: cached files are checked and returned, anything
missing is named in the error.
"""

from __future__ import annotations

import errno
import hashlib
import html.parser
import http.client
import http.cookiejar
import logging
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from ovseg.utils.env import env_flag
from ovseg.utils.io import atomic_write_text
from ovseg.utils.paths import ovseg_home  # noqa: F401 (re-exported by ovseg.zoo)
from ovseg.zoo.lock import FileLock, lock_path
from ovseg.zoo.registry import ZooEntry, ZooFileError, ZooFiles, get_entry, is_plain_name

logger = logging.getLogger("ovseg.zoo")

ENV_HOME = "OVSEG_HOME"
ENV_OFFLINE = "OVSEG_OFFLINE"
CHUNK_BYTES = 1 << 16
MAX_HTML_BYTES = 1 << 21
RETRY_HTTP_CODES = (408, 425, 429, 500, 502, 503, 504)
USER_AGENT = "ovseg-zoo/0.1 (python urllib)"
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DownloadError(RuntimeError):
    """A zoo file could not be downloaded; the message names the URL and what to do."""


class ChecksumError(DownloadError):
    """Downloaded or cached bytes do not match the expected sha256 or size.

    Attributes:
        expected: the sha256 (or size) the zoo entry names.
        actual: what the file has.
    """

    def __init__(self, message: str, expected: str | int | None, actual: str | int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class OfflineError(DownloadError):
    """``OVSEG_OFFLINE=1`` and the file is not (correctly) in the cache."""


class DiskFullError(DownloadError):
    """Writing the download failed for lack of space; the partial file is kept for resume."""


class _Retryable(Exception):
    """A transient failure: dropped connection, timeout, 5xx."""


class _RangeNotSatisfiable(_Retryable):
    """HTTP 416: the partial file is not a prefix of what the server has."""


class _Unreachable(Exception):
    """The server cannot be reached at all (DNS, refused, no route)."""


# -- locations and switches -----------------------------------------------------------------------


def checkpoint_dir(cache_dir: str | Path | None = None) -> Path:
    """Where zoo weights are cached: ``cache_dir`` or ``$OVSEG_HOME/checkpoints``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else ovseg_home() / "checkpoints"


def is_offline() -> bool:
    """True when ``$OVSEG_OFFLINE`` is on (1/true/yes/on; a value that is not a switch is an
    error naming it)."""
    return env_flag(ENV_OFFLINE, False)


def cached_path(entry: ZooEntry, cache_dir: str | Path | None = None) -> Path:
    """The final cache path of an entry's file (whether or not it exists yet).

    Raises:
        ZooFileError: the entry's file name is not a plain name (an entry built by hand, not
            through a zoo file): nothing outside the cache is ever written or removed.
    """
    name = entry.cache_filename
    if not is_plain_name(name):
        raise ZooFileError(
            f"zoo entry {entry.name!r}: cache file name {name!r} is not a plain name"
        )
    return checkpoint_dir(cache_dir) / name


def sidecar_path(path: str | Path) -> Path:
    """``FILE.sha256``: the hash recorded for a file whose entry names none."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def partial_path(path: str | Path) -> Path:
    """``FILE.partial``: where a download streams to before the atomic rename."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Lowercase hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def read_sidecar(path: str | Path) -> str | None:
    """The sha256 recorded in ``FILE.sha256``, or None if absent or unreadable."""
    try:
        text = sidecar_path(path).read_text(encoding="utf-8").split()
    except OSError:
        return None
    if text and len(text[0]) == 64 and all(c in "0123456789abcdef" for c in text[0]):
        return text[0]
    return None


def read_sidecar_size(path: str | Path) -> int | None:
    """The byte count recorded in ``FILE.sha256`` (its ``# size N`` line), or None."""
    try:
        lines = sidecar_path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[:2] == ["#", "size"] and parts[2].isdigit():
            return int(parts[2])
    return None


def _write_sidecar(path: Path, digest: str, size: int) -> None:
    """``sha256sum`` format (``sha256sum -c`` reads it) plus the size, checked before hashing."""
    atomic_write_text(sidecar_path(path), f"{digest}  {path.name}\n# size {size}\n")


# -- the cache ------------------------------------------------------------------------------------


def check_cached(entry: ZooEntry, path: Path, record: bool = True) -> tuple[str, str | None]:
    """Inspect the cached file of an entry.

    Returns:
        ``(state, actual_sha256)`` with state ``"missing"``, ``"ok"`` (matches the entry's
        sha256 / the recorded hash and size), ``"mismatch"``, or ``"unverified"``: the entry
        names no sha256 and no hash was recorded for the file (its sidecar was removed, or it
        was copied in by hand), so nothing says it is whole; the downloader fetches it again
        rather than trust it. When the entry gives the size and it matches, such a file is
        accepted and its hash recorded (``record``).
    """
    if not path.is_file():
        return "missing", None
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return "mismatch", f"<{size} bytes, expected {entry.size}>"
    recorded_size = None if entry.sha256 else read_sidecar_size(path)
    if recorded_size is not None and size != recorded_size:
        return "mismatch", f"<{size} bytes, recorded {recorded_size}>"
    actual = sha256_file(path)
    expected = entry.sha256 or read_sidecar(path)
    if expected is None:
        if entry.size is None:
            return "unverified", actual
        if record:
            try:
                _write_sidecar(path, actual, size)
            except OSError:  # a read-only (shared) cache: nothing to record
                pass
        return "ok", actual
    return ("ok" if actual == expected else "mismatch"), actual


# -- HTTP -----------------------------------------------------------------------------------------


class _ConfirmPageParser(html.parser.HTMLParser):
    """Collects forms (action + inputs) and links of a Google-Drive-style confirmation page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.links: list[str] = []
        self._form: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = {"id": a.get("id", ""), "action": a.get("action", ""), "inputs": {}}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            if a.get("type", "text").lower() in ("hidden", "text", "submit") and "value" in a:
                self._form["inputs"][a["name"]] = a["value"]
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def normalise_drive_url(url: str) -> str:
    """Drive share links (``/file/d/ID/view``, ``open?id=ID``) -> ``uc?export=download&id=ID``."""
    parts = urlsplit(url)
    if parts.netloc not in ("drive.google.com", "docs.google.com"):
        return url
    segs = [s for s in parts.path.split("/") if s]
    file_id = None
    if "d" in segs and segs.index("d") + 1 < len(segs):
        file_id = segs[segs.index("d") + 1]
    elif segs[-1:] in (["open"], ["uc"]):
        file_id = dict(parse_qsl(parts.query)).get("id")
    if not file_id:
        return url
    return f"https://drive.google.com/uc?export=download&id={file_id}"


def confirm_url(page: str, page_url: str, cookies: http.cookiejar.CookieJar) -> str | None:
    """The URL that a large-file confirmation page (Google Drive) asks to request next.

    Tried in order: a ``download_warning*`` cookie (older Drive: re-request with
    ``confirm=TOKEN``), a form (``id="download-form"``, or any form carrying a ``confirm`` input,
    as on ``drive.usercontent.google.com``: its action plus its hidden inputs), a link with
    ``confirm=`` in it.

    Returns:
        The absolute URL, or None when the page is not a confirmation page.
    """
    for cookie in cookies:
        if cookie.name.startswith("download_warning") and cookie.value:
            return _with_query(page_url, confirm=cookie.value)
    parser = _ConfirmPageParser()
    try:
        parser.feed(page)
    except Exception:  # malformed HTML: fall through to "not a confirmation page"
        return None
    forms = [f for f in parser.forms if f["id"] == "download-form"]
    forms += [f for f in parser.forms if "confirm" in f["inputs"] and f not in forms]
    for form in forms:
        action = urljoin(page_url, form["action"] or page_url)
        return _with_query(action, **form["inputs"])
    for href in parser.links:
        if "confirm=" in href:
            return urljoin(page_url, href)
    return None


def _open(url: str, start: int, timeout_s: float) -> tuple[Any, int]:
    """Open ``url`` asking for bytes ``start``- and follow confirmation pages.

    Returns:
        ``(response, status)``: the open response whose body is the file (or its tail).

    Raises:
        _Retryable, _RangeNotSatisfiable, _Unreachable, DownloadError.
    """
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    current = normalise_drive_url(url)
    for _ in range(5):
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(current, headers=headers)
        try:
            response = opener.open(request, timeout=timeout_s)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and start > 0:
                raise _RangeNotSatisfiable(
                    f"HTTP 416 (range not satisfiable) from {current}"
                ) from None
            message = f"HTTP {e.code} {e.reason} from {current}"
            if e.code in RETRY_HTTP_CODES:
                raise _Retryable(message) from None
            if e.code in (401, 403, 404, 410):
                message += " (the file is gone, private, or the URL is wrong)"
            raise DownloadError(message) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"timed out connecting to {current}") from None
            raise _Unreachable(f"cannot reach {current} ({reason})") from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
            raise _Retryable(f"{type(e).__name__} from {current}: {e}") from None
        scheme = urlsplit(current).scheme
        if scheme == "file":
            return response, 200
        status = response.status
        if response.headers.get_content_type() != "text/html":
            return response, status
        page = response.read(MAX_HTML_BYTES).decode("utf-8", "replace")
        page_url = response.geturl()
        response.close()
        following = confirm_url(page, page_url, jar)
        if following is None:
            raise DownloadError(
                f"{current} returned an HTML page instead of the file (a login, quota or "
                "'file not found' page). Open the URL in a browser to see why; if it downloads "
                "there, put the file in the cache by hand (see `python -m ovseg.zoo info NAME`)."
            )
        logger.info("following the download confirmation of %s", current)
        current = following
    raise DownloadError(f"{url}: too many confirmation pages; download it by hand")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/1000"`` -> ``(100, 1000)``; total None when ``*``."""
    if not value or not value.startswith("bytes "):
        return None, None
    try:
        span, total = value[6:].split("/")
        first = int(span.split("-")[0])
        return first, (None if total.strip() == "*" else int(total))
    except ValueError:
        return None, None


def _hash_prefix(path: Path, nbytes: int) -> Any:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = nbytes
        while remaining > 0:
            block = f.read(min(1 << 20, remaining))
            if not block:
                break
            h.update(block)
            remaining -= len(block)
    return h


def _disk_full(partial: Path, e: OSError) -> DiskFullError:
    have = partial.stat().st_size if partial.exists() else 0
    return DiskFullError(
        f"no space left while writing {partial} ({e.strerror}); the {have} bytes written so far "
        f"are kept and the next run resumes them. Free space in {partial.parent} or point "
        f"${ENV_HOME} at a disk with room, then run again."
    )


def _fetch_once(
    url: str, partial: Path, entry: ZooEntry, progress: bool, timeout_s: float
) -> tuple[str, int]:
    """One attempt: append to ``partial`` from its current size; returns (sha256, size)."""
    start = partial.stat().st_size if partial.exists() else 0
    if entry.size is not None and start > entry.size:
        partial.unlink()
        start = 0
    hasher = _hash_prefix(partial, start) if start else hashlib.sha256()
    try:
        response, status = _open(url, start, timeout_s)
    except _RangeNotSatisfiable:
        partial.unlink(missing_ok=True)
        raise
    with response:
        total: int | None = None
        length = response.headers.get("Content-Length")
        length_i = int(length) if length and length.isdigit() else None
        if start > 0 and status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != start:
                partial.unlink(missing_ok=True)
                raise _Retryable(f"{url} answered a range from {first}, not {start}; restarting")
            if total is None and length_i is not None:
                total = start + length_i
            logger.info("resuming %s at byte %d", partial.name, start)
        else:
            if start > 0:
                logger.warning(
                    "%s ignored the Range request (HTTP %s): downloading from zero", url, status
                )
                start = 0
                hasher = hashlib.sha256()
            total = length_i
        if entry.size is not None and total is not None and total != entry.size:
            raise ChecksumError(
                f"{url} serves {total} bytes but the zoo entry {entry.name!r} expects "
                f"{entry.size}; the zoo entry or the URL is wrong",
                expected=entry.size,
                actual=total,
            )
        if total is not None:
            free = shutil.disk_usage(partial.parent).free
            if free < total - start:
                raise DiskFullError(
                    f"{partial.parent} has {free} bytes free but {entry.name} needs "
                    f"{total - start} more; free space or point ${ENV_HOME} at a disk with room"
                )
        from tqdm.auto import tqdm

        written = 0
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=entry.cache_filename,
            disable=not progress,
            file=sys.stderr,
        )
        with bar, open(partial, "ab" if start else "wb") as f:
            while True:
                try:
                    block = response.read(CHUNK_BYTES)
                except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
                    raise _Retryable(
                        f"connection to {url} broke after {start + written} bytes "
                        f"({type(e).__name__}: {e})"
                    ) from None
                if not block:
                    break
                try:
                    f.write(block)
                except OSError as e:
                    if e.errno in _DISK_FULL_ERRNOS:
                        raise _disk_full(partial, e) from None
                    raise
                hasher.update(block)
                written += len(block)
                bar.update(len(block))
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                if e.errno in _DISK_FULL_ERRNOS:
                    raise _disk_full(partial, e) from None
                raise
        got = start + written
        if total is not None and got < total:
            raise _Retryable(f"connection to {url} closed after {got} of {total} bytes")
        return hasher.hexdigest(), got


def _fetch(
    url: str,
    partial: Path,
    entry: ZooEntry,
    progress: bool,
    retries: int,
    timeout_s: float,
    backoff_s: float,
) -> tuple[str, int]:
    """``_fetch_once`` with retries; an attempt that made progress does not use up a retry."""
    failures = 0
    while True:
        before = partial.stat().st_size if partial.exists() else 0
        try:
            return _fetch_once(url, partial, entry, progress, timeout_s)
        except _Retryable as e:
            after = partial.stat().st_size if partial.exists() else 0
            if after <= before or isinstance(e, _RangeNotSatisfiable):
                failures += 1
            if failures > retries:
                kept = (
                    f"; {after} bytes are kept in {partial} for the next run to resume"
                    if after
                    else ""
                )
                raise DownloadError(
                    f"{e} (gave up after {failures} failed attempts){kept}"
                ) from None
            logger.warning("%s; retrying", e)
            time.sleep(backoff_s * (2 ** max(0, failures - 1)))


# -- the public entry point -----------------------------------------------------------------------


def download(
    name_or_entry: str | ZooEntry,
    zoo_file: ZooFiles = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    *,
    retries: int = 3,
    timeout_s: float = 60.0,
    backoff_s: float = 1.0,
) -> Path:
    """Return the local, verified file of a zoo model, downloading it on first use.

    Args:
        name_or_entry: a zoo model name or a :class:`ZooEntry`.
        zoo_file: extra zoo file(s) to look the name up in (besides ``$OVSEG_ZOO``).
        cache_dir: directory for the file; default ``$OVSEG_HOME/checkpoints``.
        progress: show a tqdm progress bar on stderr.
        retries: attempts per URL after a transient failure that made no progress (dropped
            connection, timeout, HTTP 5xx/429).
        timeout_s: socket timeout per connect/read.
        backoff_s: wait before the first retry; doubles after each failure.

    Returns:
        Path of the cached file, whose sha256 matches the entry's (or, for an entry without
        sha256, the hash recorded when it was downloaded, see :func:`read_sidecar`).

    Raises:
        UnknownModelError: no such model (a KeyError listing close names).
        OfflineError: ``$OVSEG_OFFLINE`` is set and the file is missing or does not match.
        ChecksumError: the downloaded bytes do not match (both hashes in the message).
        DiskFullError: the disk filled up; the partial file is kept for resume.
        DownloadError: every URL failed (each one's URL and reason in the message).
    """
    entry = (
        name_or_entry if isinstance(name_or_entry, ZooEntry) else get_entry(name_or_entry, zoo_file)
    )
    if any(u.startswith("hf://") for u in entry.urls):
        found, entry = _download_hub(entry)
        if found is not None:
            return found
    final = cached_path(entry, cache_dir)
    state, actual = check_cached(entry, final)
    if state == "ok":
        return final
    if is_offline():
        _raise_offline(entry, final, state, actual)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"cannot create the cache directory {final.parent} ({e.strerror}); set ${ENV_HOME} "
            "or pass cache_dir= to use a writable directory"
        ) from None

    def waiting(lock: Path) -> None:
        print(f"ovseg.zoo: waiting for another download of {final.name} ({lock})", file=sys.stderr)

    with FileLock(lock_path(final), on_wait=waiting):
        state, actual = check_cached(entry, final)  # another process may have finished it
        if state == "ok":
            return final
        if state == "unverified":
            logger.warning(
                "cached %s has no recorded sha256 (%s is missing) and the zoo names none: "
                "downloading it again to verify it",
                final,
                sidecar_path(final),
            )
        if state == "mismatch":
            expected = entry.sha256 or read_sidecar(final)
            logger.warning(
                "cached %s has sha256 %s but %s is expected: downloading it again",
                final,
                actual,
                expected,
            )
            final.unlink()
            sidecar_path(final).unlink(missing_ok=True)
        return _download_locked(entry, final, progress, retries, timeout_s, backoff_s)


def _download_hub(entry: ZooEntry) -> tuple[Path | None, ZooEntry]:
    """Try the entry's ``hf://`` URLs in order (huggingface_hub's cache, ovseg's sha256 check).

    Returns:
        ``(path, entry)`` on success; ``(None, entry with only the other URLs)`` when every Hub
        URL failed and plain URLs remain to be tried.

    Raises:
        ChecksumError, DownloadError: every URL is a Hub URL and all failed.
    """
    import dataclasses

    from ovseg.zoo.hub import fetch_hub_url

    errors: list[DownloadError] = []
    for url in [u for u in entry.urls if u.startswith("hf://")]:
        try:
            return fetch_hub_url(url, entry.sha256, what=entry.name), entry
        except DownloadError as e:
            errors.append(e)
    rest = [u for u in entry.urls if not u.startswith("hf://")]
    if rest:
        for e in errors:
            logger.warning("%s; trying the next URL", e)
        return None, dataclasses.replace(entry, urls=rest)
    if len(errors) == 1:
        raise errors[0]
    lines = "\n".join(f"  - {e}" for e in errors)
    raise DownloadError(f"{entry.name}: all {len(errors)} Hub URLs failed:\n{lines}")


def _raise_offline(entry: ZooEntry, final: Path, state: str, actual: str | None) -> None:
    if state == "missing":
        raise OfflineError(
            f"{entry.name}: {final} is not in the cache and {ENV_OFFLINE}=1 forbids downloading "
            f"it from {entry.urls[0]}. Unset {ENV_OFFLINE}, or fetch it elsewhere with "
            f"`python -m ovseg.zoo download {entry.name}` and copy it to {final}."
        )
    if state == "unverified":
        raise OfflineError(
            f"{entry.name}: cached {final} cannot be verified: the zoo names no sha256 and its "
            f"recorded hash ({sidecar_path(final)}) is missing, and {ENV_OFFLINE}=1 forbids "
            "downloading it again. Unset it to re-download, or, if you trust the file, record its "
            f"hash: sha256sum {final} > {sidecar_path(final)}"
        )
    expected = entry.sha256 or read_sidecar(final)
    raise OfflineError(
        f"{entry.name}: cached {final} has sha256 {actual} but {expected} is expected, and "
        f"{ENV_OFFLINE}=1 forbids downloading it again. Unset {ENV_OFFLINE} to re-download it."
    )


def _download_locked(
    entry: ZooEntry, final: Path, progress: bool, retries: int, timeout_s: float, backoff_s: float
) -> Path:
    partial = partial_path(final)
    errors: list[DownloadError] = []
    unreachable = False
    where = f" (zoo entry {entry.name!r} in {entry.zoo_file})" if entry.zoo_file else ""
    for url in entry.urls:
        try:
            digest, size = _fetch(url, partial, entry, progress, retries, timeout_s, backoff_s)
        except DiskFullError:
            raise
        except _Unreachable as e:
            unreachable = True
            errors.append(DownloadError(str(e)))
            continue
        except ChecksumError as e:
            partial.unlink(missing_ok=True)
            errors.append(e)
            continue
        except DownloadError as e:
            errors.append(e)
            continue
        if entry.size is not None and size != entry.size:
            partial.unlink(missing_ok=True)
            errors.append(
                ChecksumError(
                    f"{entry.name}: {url} gave {size} bytes, expected {entry.size}; the partial "
                    "download was deleted",
                    expected=entry.size,
                    actual=size,
                )
            )
            continue
        if entry.sha256 is not None and digest != entry.sha256:
            partial.unlink(missing_ok=True)
            errors.append(
                ChecksumError(
                    f"{entry.name}: sha256 mismatch for {url}: expected {entry.sha256}, got "
                    f"{digest} ({size} bytes). The partial download was deleted. If the file was "
                    f"updated upstream, fix the zoo entry{where}; otherwise try again later.",
                    expected=entry.sha256,
                    actual=digest,
                )
            )
            continue
        if entry.sha256 is None:
            _write_sidecar(final, digest, size)
            logger.warning(
                "%s has no sha256 in the zoo: recorded %s in %s (unverified)",
                entry.name,
                digest,
                sidecar_path(final),
            )
        os.replace(partial, final)
        return final
    hint = (
        f" Check your network connection or proxy; to use only files already in the cache, set "
        f"{ENV_OFFLINE}=1."
        if unreachable
        else ""
    )
    if len(errors) == 1:
        e = errors[0]
        message = f"{entry.name}: {e}{where}.{hint}"
        if isinstance(e, ChecksumError):
            raise ChecksumError(str(e), e.expected, e.actual)
        raise type(e)(message)
    lines = "\n".join(f"  - {e}" for e in errors)
    cls = ChecksumError if all(isinstance(e, ChecksumError) for e in errors) else DownloadError
    message = (
        f"{entry.name}: all {len(errors)} URLs failed{where}:\n{lines}\n{hint.strip()}".rstrip()
    )
    if cls is ChecksumError:
        raise ChecksumError(message, errors[-1].expected, errors[-1].actual)  # type: ignore[attr-defined]
    raise DownloadError(message)
