"""One dataset catalog: a registered :class:`DatasetSpec` per benchmark (see :mod:`.spec`).

Adding a dataset = one module with its reader and a ``register_dataset(DatasetSpec(...))`` line,
imported by :mod:`ovseg.data.benchmarks` (or by the user's own code before evaluating), plus its
vocabulary file in ``ovseg/text/builtin``.
"""

from __future__ import annotations

import ovseg.data.benchmarks  # noqa: E402,F401  (registers the built-in datasets)

from .spec import (
    DATASETS,
    INSTANCE_EVALUATORS,
    TASK_METRIC,
    TASKS,
    DatasetSpec,
    canonical,
    get_spec,
    register_dataset,
    suite_specs,
)

__all__ = [
    "DATASETS",
    "INSTANCE_EVALUATORS",
    "TASKS",
    "TASK_METRIC",
    "DatasetSpec",
    "canonical",
    "get_spec",
    "register_dataset",
    "suite_specs",
]
