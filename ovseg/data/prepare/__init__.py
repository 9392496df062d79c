"""Convert each benchmark's official download into the layout its reader expects
(:mod:`ovseg.data.benchmarks`), and verify a prepared data root.

    from ovseg.data.prepare import prepare, verify
    prepare("pascal-voc", src="~/downloads", dst="data")        # writes data/pascal_voc_d2
    report = verify("pascal-voc-21", "data")                      # counts and label ranges
    print(report.text()); assert report.ok

``tools/prepare_data.py NAME --src RAW --dst DATA [--verify]`` is the command line. Each module's
docstring documents the raw input it reads. ADE20K-847 is converted from the full ADE20K release
(``ADE20K_2021_17_01/index_ade20k.pkl`` + ``*_seg.png``) into the files FC-CLIP's
``prepare_ade20k_full_sem_seg.py`` writes, with the class mapping derived from the release's object
names (:mod:`.ade20k_full`).
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovseg.data.catalog import DATASETS, suite_specs

from .ade20k import prepare_ade20k
from .ade20k_full import prepare_ade20k_full
from .cityscapes import prepare_cityscapes, prepare_mapillary
from .coco import prepare_coco
from .common import PrepareError
from .pascal import prepare_pascal_context, prepare_pascal_voc


def _preparers() -> dict[str, tuple[Callable[..., list[str]], tuple[str, ...]]]:
    """converter name -> (function, the benchmarks it writes), from the dataset catalog."""
    out: dict[str, tuple[Callable[..., list[str]], list[str]]] = {}
    for _, spec in DATASETS.items():
        if spec.preparer is not None:
            fn = out.get(spec.converter, (spec.load_preparer(), []))
            out[spec.converter] = (fn[0], [*fn[1], spec.name])
    order = {s.name: i for i, s in enumerate(suite_specs())}
    return {
        k: (fn, tuple(sorted(b, key=lambda n: order.get(n, len(order)))))
        for k, (fn, b) in out.items()
    }


def _aliases() -> dict[str, str]:
    """other accepted name -> converter name (a spec's aliases, a sibling's own name)."""
    out: dict[str, str] = {}
    for _, spec in DATASETS.items():
        for alias in spec.aliases:
            out[alias] = spec.converter
        if spec.preparer is not None and spec.converter != spec.name:
            out[spec.name] = spec.converter
    return out


def _expected_images() -> dict[str, int]:
    return {n: s.expected_images for n, s in DATASETS.items() if s.expected_images is not None}


PREPARERS = _preparers()
ALIASES = _aliases()
# benchmark name -> why ovseg cannot convert it (every benchmark is converted today)
NOT_CONVERTED: dict[str, str] = {
    n: f"{n}: ovseg has no converter for this dataset; prepare its layout by hand"
    for n, s in DATASETS.items()
    if s.preparer is None
}
# Validation images of each benchmark (the catalog's numbers).
EXPECTED_IMAGES = _expected_images()


def names() -> list[str]:
    """Every name :func:`prepare` and :func:`verify` accept."""
    return sorted({*PREPARERS, *ALIASES, *NOT_CONVERTED, *EXPECTED_IMAGES})


def _key(name: str) -> str:
    key = name.lower().replace("_", "-")
    if key in names():
        return key
    close = difflib.get_close_matches(key, names(), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise KeyError(f"unknown dataset {name!r}{hint} (known: {', '.join(names())})")


def benchmarks_of(name: str) -> tuple[str, ...]:
    """The benchmark names a converter name stands for (``pascal-voc`` -> VOC 21 and 20)."""
    key = _key(name)
    key = ALIASES.get(key, key)
    if key in PREPARERS:
        return PREPARERS[key][1]
    return (key,)


def prepare(name: str, src: str | os.PathLike, dst: str | os.PathLike, link: bool = False,
            **kwargs) -> list[str]:  # fmt: skip
    """Convert the official download under ``src`` into the benchmark layout under ``dst``.

    Args:
        name: a converter or benchmark name (see :func:`names`).
        src: the folder holding the extracted official files.
        dst: the data root (``$OVSEG_DATA``).
        link: symlink images (and files kept as shipped) instead of copying them.
        **kwargs: converter options (``split_file`` for Pascal Context; ``mapping`` and
            ``training`` for ADE20K-847).

    Returns:
        the benchmarks written.

    Raises:
        KeyError: unknown name. PrepareError: raw files missing (named, with where to get them).
        NotImplementedError: a benchmark ovseg cannot convert yet (none today).
    """
    key = _key(name)
    if key in NOT_CONVERTED:
        raise NotImplementedError(NOT_CONVERTED[key])
    key = ALIASES.get(key, key)
    converter = PREPARERS[key][0]
    accepted = set(inspect.signature(converter).parameters) - {"src", "dst", "link"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise PrepareError(
            f"{key} takes no option {', '.join(unknown)}"
            f"{' (it takes: ' + ', '.join(sorted(accepted)) + ')' if accepted else ''}"
        )
    src_path, dst_path = Path(src).expanduser(), Path(dst).expanduser()
    if not src_path.is_dir():
        raise PrepareError(f"{key}: --src folder not found: {src_path}")
    dst_path.mkdir(parents=True, exist_ok=True)
    return converter(src_path, dst_path, link=link, **kwargs)


@dataclass
class VerifyReport:
    """What :func:`verify` found: ``ok`` and one line per check (problems name files/values)."""

    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def fail(self, line: str) -> None:
        self.ok = False
        self.lines.append(f"FAIL {line}")

    def good(self, line: str) -> None:
        self.lines.append(f"ok   {line}")

    def text(self) -> str:
        return "\n".join(self.lines)


def verify(
    name: str,
    root: str | os.PathLike | None = None,
    expected: dict[str, int] | None = None,
    max_listed: int = 5,
) -> VerifyReport:
    """Check a prepared benchmark: every task's files are there, the image count is the official
    one, every semantic label value is a class index or the ignore value, and every panoptic
    segment's category is one of the json's.

    Args:
        name: a converter or benchmark name (``pascal-voc`` checks VOC 21 and 20).
        root: the data root (default ``$OVSEG_DATA``).
        expected: image counts that replace :data:`EXPECTED_IMAGES` (tests, subsets).
        max_listed: how many offending files a line names.
    """
    from ovseg.data.benchmarks import BenchmarkNotFoundError, load_benchmark
    from ovseg.utils.image import ImageLoadError

    from .common import progress, read_array

    counts = {**EXPECTED_IMAGES, **(expected or {})}
    report = VerifyReport()
    for bench_name in benchmarks_of(name):
        try:
            bench = load_benchmark(bench_name, root)
        except (BenchmarkNotFoundError, ValueError) as e:
            bench = None
            failures = [str(e)]
            # which tasks are there at all?
            for task in ("semantic", "panoptic", "instance"):
                try:
                    part = load_benchmark(bench_name, root, [task])
                except (BenchmarkNotFoundError, ValueError) as e2:
                    if "has no" not in str(e2):
                        failures.append(f"{task}: {e2}")
                    continue
                bench = bench or part
            report.fail(f"{bench_name}: " + " | ".join(dict.fromkeys(failures)))
            if bench is None:
                continue
        n, want = len(bench.records), counts.get(bench_name)
        if want is not None and n != want:
            report.fail(f"{bench_name}: {n} images, expected {want}")
        else:
            report.good(f"{bench_name}: {n} images ({', '.join(bench.tasks)})")
        if "semantic" in bench.tasks:
            top = bench.num_classes + (1 if bench.reduce_zero_label else 0)
            bad, unreadable = [], []
            for r in progress(bench.records, f"checking {bench_name} labels"):
                try:
                    values = np.unique(read_array(Path(r["sem_seg_file_name"])))
                except ImageLoadError:
                    unreadable.append(Path(r["sem_seg_file_name"]).name)
                    continue
                wrong = values[(values >= top) & (values != bench.ignore_index)]
                if len(wrong):
                    bad.append(
                        f"{Path(r['sem_seg_file_name']).name} ({', '.join(map(str, wrong[:5]))})"
                    )
            if unreadable:
                report.fail(
                    f"{bench_name}: {len(unreadable)} label map(s) cannot be read (truncated or "
                    f"not an image): {', '.join(unreadable[:max_listed])}"
                    f"{' ...' if len(unreadable) > max_listed else ''}"
                )
            if bad:
                report.fail(
                    f"{bench_name}: {len(bad)} label map(s) with values outside 0..{top - 1} and "
                    f"ignore {bench.ignore_index}: {', '.join(bad[:max_listed])}"
                    f"{' ...' if len(bad) > max_listed else ''}"
                )
            elif not unreadable:
                report.good(
                    f"{bench_name}: semantic labels in 0..{top - 1} (+ {bench.ignore_index})"
                )
        if "panoptic" in bench.tasks and bench.category_ids is not None:
            known = set(bench.category_ids)
            bad = sorted({str(s["category_id"]) for r in bench.records
                          for s in r["segments_info"] if s["category_id"] not in known})  # fmt: skip
            if bad:
                report.fail(f"{bench_name}: panoptic segments with unknown category ids {bad[:10]}")
            else:
                report.good(
                    f"{bench_name}: panoptic segments use the json's {len(known)} categories"
                )
    return report


__all__ = [
    "EXPECTED_IMAGES",
    "PREPARERS",
    "PrepareError",
    "VerifyReport",
    "benchmarks_of",
    "names",
    "prepare",
    "prepare_ade20k",
    "prepare_ade20k_full",
    "prepare_cityscapes",
    "prepare_coco",
    "prepare_mapillary",
    "prepare_pascal_context",
    "prepare_pascal_voc",
    "verify",
]
