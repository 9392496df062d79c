"""Readers for the zero-shot benchmark suite (FC-CLIP's table): one module per dataset.

``load_benchmark(name, root=None, tasks=None)`` returns a :class:`Benchmark` (records + what the
evaluators need) from the prepared layout under ``$OVSEG_DATA`` (default ``./data``); a missing
folder raises :class:`BenchmarkNotFoundError` naming the dataset, the expected paths and the
``tools/prepare_data.py`` command. Each module's docstring documents its layout.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence

from .ade20k import load_ade20k_150, load_ade20k_847
from .base import TASKS, Benchmark, BenchmarkNotFoundError, data_root
from .cityscapes import load_cityscapes
from .coco import load_coco_panoptic
from .mapillary import load_mapillary_vistas
from .pascal import (
    load_pascal_context_59,
    load_pascal_context_459,
    load_pascal_voc_20,
    load_pascal_voc_21,
)

BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
    "ade20k-150": load_ade20k_150,
    "ade20k-847": load_ade20k_847,
    "pascal-context-59": load_pascal_context_59,
    "pascal-context-459": load_pascal_context_459,
    "pascal-voc-20": load_pascal_voc_20,
    "pascal-voc-21": load_pascal_voc_21,
    "cityscapes": load_cityscapes,
    "mapillary-vistas": load_mapillary_vistas,
    "coco-panoptic": load_coco_panoptic,
}

# FC-CLIP's zero-shot table (README), in column order: (benchmark, tasks reported).
FCCLIP_SUITE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ade20k-150", ("panoptic", "instance", "semantic")),
    ("ade20k-847", ("semantic",)),
    ("pascal-context-459", ("semantic",)),
    ("pascal-context-59", ("semantic",)),
    ("pascal-voc-21", ("semantic",)),
    ("pascal-voc-20", ("semantic",)),
    ("cityscapes", ("panoptic", "instance", "semantic")),
    ("mapillary-vistas", ("panoptic", "semantic")),
    ("coco-panoptic", ("panoptic", "instance", "semantic")),
)


def benchmark_names() -> list[str]:
    """Names accepted by :func:`load_benchmark`."""
    return list(BENCHMARKS)


def load_benchmark(
    name: str, root: str | os.PathLike | None = None, tasks: Sequence[str] | None = None
) -> Benchmark:
    """Load a prepared benchmark split by name (see :func:`benchmark_names`).

    Raises:
        KeyError: unknown name (with the closest names).
        BenchmarkNotFoundError: the data is missing (names the paths and the prepare command).
    """
    key = name.lower().replace("_", "-")
    if key not in BENCHMARKS:
        close = difflib.get_close_matches(key, BENCHMARKS, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown benchmark {name!r}{hint} (known: {', '.join(BENCHMARKS)})")
    return BENCHMARKS[key](root, tasks)


__all__ = [
    "BENCHMARKS",
    "FCCLIP_SUITE",
    "TASKS",
    "Benchmark",
    "BenchmarkNotFoundError",
    "benchmark_names",
    "data_root",
    "load_benchmark",
]
