"""The output folder of a labelling run: per-image results, failures, run.json, merged files.

Layout of ``OUT``::

    run.json            what the run is (config, weights, vocabulary, task, min_score, versions)
    inputs.txt          the image list, in order (image ids are positions in it, 1-based)
    per_image/<name>.json         one finished image (written atomically when it is done)
    per_image/<name>.failed.json  one image that could not be read / segmented, with the reason
    panoptic/<name>.png  (--save-png) the task's label PNG (panoptic: COCO RGB segment ids)
    annotations.json    merged COCO; failed.txt: "path<TAB>reason" per failed image
    panoptic.json       (panoptic + --save-png) merged COCO-panoptic

``<name>`` is the file name made safe (``[A-Za-z0-9._-]``, at most 80 characters) plus a hash of
the resolved path, so equal names in different folders do not collide and no name leaves the
folder. Several processes (torchrun ranks, Ray actors) can write into one ``OUT``: each image has
its own files, and only the merge (one process) writes the shared ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovseg.utils.io import atomic_write_json, atomic_write_text

RUN_FILE = "run.json"
#: run.json keys that must match for a rerun to continue a run.
IDENTITY_KEYS = ("config", "weights", "vocabulary", "task", "min_score", "save_png")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RunMismatchError(ValueError):
    """OUT holds a different run; the message names the first differing key."""


@dataclass(frozen=True)
class WorkItem:
    """One input image: its position in the input list (0-based), path and result name."""

    index: int
    path: str
    name: str


def result_name(path: str | os.PathLike) -> str:
    """A file-system-safe, collision-free name for ``path``'s results (no folder parts)."""
    p = Path(path)
    digest = hashlib.sha256(str(p.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    stem = _UNSAFE.sub("_", p.name).strip("._")[:80] or "image"
    return f"{stem}-{digest}"


def work_items(paths: Sequence[str | os.PathLike]) -> list[WorkItem]:
    """The input list as work items (index = position, the image id is index + 1)."""
    return [WorkItem(i, str(p), result_name(p)) for i, p in enumerate(paths)]


def input_root(paths: Sequence[str | os.PathLike]) -> Path:
    """The deepest folder holding every input: COCO ``file_name`` is relative to it."""
    if not paths:
        return Path.cwd()
    return Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths]))


class LabelStore:
    """Reads and writes one run's output folder ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.per_image = self.root / "per_image"
        self.png_dir = self.root / "panoptic"

    # ------------------------------------------------------------------ per image
    def result_path(self, item: WorkItem) -> Path:
        return self.per_image / f"{item.name}.json"

    def failure_path(self, item: WorkItem) -> Path:
        return self.per_image / f"{item.name}.failed.json"

    def png_path(self, item: WorkItem) -> Path:
        return self.png_dir / f"{item.name}.png"

    def finished(self) -> set[str]:
        """Names of the images with a result (one directory listing, not one stat per image)."""
        if not self.per_image.is_dir():
            return set()
        return {
            n[: -len(".json")]
            for n in os.listdir(self.per_image)
            if n.endswith(".json") and not n.endswith(".failed.json") and not n.startswith(".")
        }

    def pending(self, items: Sequence[WorkItem]) -> list[WorkItem]:
        """The items without a result yet (failed ones are tried again)."""
        done = self.finished()
        return [it for it in items if it.name not in done]

    def write_result(self, item: WorkItem, record: dict[str, Any]) -> Path:
        """Write one finished image (atomically; a stale failure record is removed)."""
        path = atomic_write_json(self.result_path(item), {"file": item.path, **record}, indent=None)
        self.failure_path(item).unlink(missing_ok=True)
        return path

    def write_failure(self, item: WorkItem, reason: str) -> Path:
        return atomic_write_json(self.failure_path(item), {"file": item.path, "reason": reason})

    def read_result(self, item: WorkItem) -> dict[str, Any] | None:
        path = self.result_path(item)
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def read_failure(self, item: WorkItem) -> str | None:
        path = self.failure_path(item)
        if not path.is_file():
            return None
        return str(json.loads(path.read_text(encoding="utf-8")).get("reason", "unknown"))

    # ------------------------------------------------------------------ the run
    def write_inputs(self, items: Sequence[WorkItem]) -> None:
        atomic_write_text(self.root / "inputs.txt", "".join(f"{it.path}\n" for it in items))

    def read_inputs(self) -> list[str]:
        path = self.root / "inputs.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass --input (no earlier run here)")
        return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln]

    def read_run(self) -> dict[str, Any] | None:
        path = self.root / RUN_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunMismatchError(f"{path} is not valid JSON ({e})") from None

    def check_run(self, run: dict[str, Any]) -> None:
        """Raise :class:`RunMismatchError` if OUT holds a run that differs from ``run`` in any
        of :data:`IDENTITY_KEYS`."""
        old = self.read_run()
        if old is None:
            if self.finished():
                raise RunMismatchError(f"{self.per_image} has results but {RUN_FILE} is missing")
            return
        for key in IDENTITY_KEYS:
            if old.get(key) != run.get(key):
                where, was, now = _first_difference(key, old.get(key), run.get(key))
                raise RunMismatchError(
                    f"{self.root / RUN_FILE} is a different run: its {where} is {_short(was)}, "
                    f"this run's is {_short(now)}"
                )

    def write_run(self, run: dict[str, Any]) -> None:
        atomic_write_json(self.root / RUN_FILE, run)

    def clear(self) -> None:
        """Remove a previous run's files (``--overwrite``); only the files this layout names."""
        for folder in (self.per_image, self.png_dir):
            if folder.is_dir():
                for f in folder.iterdir():
                    if f.is_file() and f.suffix in (".json", ".png", ".tmp"):
                        f.unlink()
        for name in (RUN_FILE, "inputs.txt", "annotations.json", "panoptic.json", "failed.txt"):
            (self.root / name).unlink(missing_ok=True)


def _first_difference(where: str, old: Any, new: Any) -> tuple[str, Any, Any]:
    """(path, old, new) of the first place two JSON values differ (YAML text: its line)."""
    if isinstance(old, str) and isinstance(new, str) and "\n" in old + new:
        a, b = old.splitlines(), new.splitlines()
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"{where} line {i + 1}", x.strip(), y.strip()
        n = min(len(a), len(b))
        return f"{where} line {n + 1}", "\n".join(a[n : n + 1]), "\n".join(b[n : n + 1])
    if isinstance(old, list) and isinstance(new, list):
        for i, (x, y) in enumerate(zip(old, new)):
            if x != y:
                return _first_difference(f"{where}[{i}]", x, y)
        return f"{where} length", len(old), len(new)
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return _first_difference(f"{where}.{k}", old.get(k), new.get(k))
    return where, old, new


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    text = text.replace("\n", " ")
    return repr(text if len(text) <= 60 else text[:57] + "...")
