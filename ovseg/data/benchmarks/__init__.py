"""Readers for the zero-shot benchmark suite (FC-CLIP's table): one module per dataset.

``load_benchmark(name, root=None, tasks=None)`` returns a :class:`Benchmark` (records + what the
evaluators need) from the prepared layout under ``$OVSEG_DATA`` (default ``./data``); a missing
folder raises :class:`BenchmarkNotFoundError` naming the dataset, the expected paths and the
``tools/prepare_data.py`` command. Each module's docstring documents its layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence

from ovseg.data.catalog.spec import DATASETS, get_spec, suite_specs
from ovseg.utils.registry import RegistryError

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


class _BenchmarkView(Mapping):
    """Read-only ``name -> loader`` view of the dataset catalog (the old ``BENCHMARKS`` dict)."""

    def __getitem__(self, name: str) -> Callable[..., Benchmark]:
        if name not in DATASETS:
            raise KeyError(name)
        return DATASETS.get(name).loader

    def __iter__(self) -> Iterator[str]:
        return iter(benchmark_names())

    def __len__(self) -> int:
        return len(DATASETS)


BENCHMARKS: Mapping[str, Callable[..., Benchmark]] = _BenchmarkView()


def benchmark_names() -> list[str]:
    """Names accepted by :func:`load_benchmark`: the suite in FC-CLIP's order, then the rest."""
    suite = [s.name for s in suite_specs()]
    return suite + [n for n in DATASETS.names() if n not in suite]


def __getattr__(name: str):
    if name == "FCCLIP_SUITE":  # FC-CLIP's zero-shot table: (benchmark, tasks reported)
        return tuple((s.name, s.suite_tasks) for s in suite_specs())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_benchmark(
    name: str, root: str | os.PathLike | None = None, tasks: Sequence[str] | None = None
) -> Benchmark:
    """Load a prepared benchmark split by name (see :func:`benchmark_names`); its test size,
    category ids and instance evaluator come from the dataset's catalog spec.

    Raises:
        KeyError: unknown name (a RegistryError naming the closest names).
        BenchmarkNotFoundError: the data is missing (names the paths and the prepare command).
    """
    try:
        spec = get_spec(name)
    except RegistryError as e:
        raise RegistryError(f"{e} (unknown benchmark)") from None
    bench = spec.loader(root, tasks)
    bench.min_size_test, bench.max_size_test = spec.min_size_test, spec.max_size_test
    if bench.category_ids is None and spec.category_ids is not None:
        bench.category_ids = list(spec.category_ids)
    bench.instance_evaluator = spec.instance_evaluator
    return bench


__all__ = [
    "BENCHMARKS",
    "FCCLIP_SUITE",
    "TASKS",
    "Benchmark",
    "BenchmarkNotFoundError",
    "benchmark_names",
    "data_root",
    "load_ade20k_150",
    "load_ade20k_847",
    "load_benchmark",
    "load_cityscapes",
    "load_coco_panoptic",
    "load_mapillary_vistas",
    "load_pascal_context_59",
    "load_pascal_context_459",
    "load_pascal_voc_20",
    "load_pascal_voc_21",
]
