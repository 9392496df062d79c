"""Atomic file writing: the one home for "write to a temporary file, then rename".

Every result, cache entry, checkpoint and label ovseg writes goes through :func:`atomic_write`:
the data go to a temporary file in the destination's folder, are flushed and fsync'ed, get the
mode a plain ``open()`` would give (``0o666`` less the umask; ``mkstemp`` alone gives 0600), and
are renamed over the destination (``os.replace``, atomic on POSIX). If anything fails, a full
disk included, the temporary file is removed and a previous file at the destination is intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class AtomicWriteError(OSError):
    """Writing a file failed; the message names the file and the cause (e.g. no space left)."""


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", encoding: str | None = None
) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    Args:
        path: the destination; parent folders are created.
        mode: ``"wb"`` or ``"w"`` (text, ``encoding`` default utf-8).

    Raises:
        AtomicWriteError: the folder cannot be created or the write failed (the message names
            the file; ``errno.ENOSPC`` says "no space left on device").
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise AtomicWriteError(e.errno, f"cannot write {path}: {_reason(e)}") from None
    try:
        kwargs = {"encoding": encoding or "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, AtomicWriteError):
            raise AtomicWriteError(e.errno, f"cannot write {path}: {_reason(e)}") from e
        raise


def _reason(e: OSError) -> str:
    if e.strerror:
        return e.strerror
    return "No space left on device" if e.errno == errno.ENOSPC else str(e)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Numbers, tensors/numpy scalars, lists and dicts -> strict JSON values (NaN/inf -> null)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (NaN/inf become null), atomically."""
    with atomic_write(path, "w") as f:
        json.dump(to_jsonable(obj), f, indent=indent, allow_nan=False)
        f.write("\n")
    return Path(path)
