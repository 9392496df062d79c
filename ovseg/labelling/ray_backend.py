"""Labelling on Ray Data: ``map_batches`` over the input list with a stateful callable class.

Each actor builds the model once (:class:`~ovseg.inference.spec.ModelSpec`), adopts the text
classifier the driver encoded (one ``ray.put``, fetched once per actor) and writes the same
per-image results as the other backends; ``OUT`` must therefore be a folder every node can
write (a shared file system on a cluster). Needs ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.inference.spec import ModelSpec
from ovseg.labelling.engine import Counts, Labeller, classifier_from_payload, load_item
from ovseg.labelling.store import LabelStore, WorkItem
from ovseg.text.vocabulary import Vocabulary


def import_ray() -> Any:
    """``ray`` with ``ray.data``, or an ImportError that names the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"--backend ray needs Ray Data ({e}); install it with: pip install -e '.[ray]'"
        ) from None
    return ray


class LabelActor:
    """A Ray Data callable class: builds the model once per actor, then labels batches."""

    def __init__(
        self,
        spec: ModelSpec,
        vocabulary: Vocabulary,
        payload_ref: list,
        out: str,
        task: str,
        min_score: float,
        save_png: bool,
        device: str | None,
        threads: int,
    ):
        import ray
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        payload = ray.get(payload_ref[0])  # the driver's encoded classifier, not re-encoded
        self.labeller = Labeller(
            spec.build(device),
            vocabulary,
            LabelStore(out),
            task,
            min_score,
            save_png,
            text=classifier_from_payload(payload),
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            WorkItem(int(i), str(p), str(n))
            for i, p, n in zip(batch["index"], batch["path"], batch["name"])
        ]
        loaded = [load_item(it, *self.labeller.sizes) for it in items]
        counts = self.labeller.process(loaded)
        return {"done": np.array([counts.done]), "failed": np.array([counts.failed])}


def label_ray(
    spec: ModelSpec,
    vocabulary: Vocabulary,
    payload: dict[str, Any],
    out: str | Path,
    items: Sequence[WorkItem],
    task: str,
    min_score: float,
    save_png: bool,
    *,
    batch_size: int = 1,
    actors: int = 1,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_actor: float = 1.0,
    progress: bool = True,
) -> Counts:
    """Label ``items`` with ``actors`` Ray actors (one GPU each when the cluster has GPUs).

    Args:
        address: an existing cluster ("auto", "ray://host:10001"); None starts a local Ray
            instance (``num_cpus`` CPUs) for this run and stops it at the end.
        cpus_per_actor: CPUs reserved per actor (also its torch threads).
    """
    ray = import_ray()
    from tqdm import tqdm

    counts = Counts()
    if not items:
        return counts
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, object_store_memory=200 * 1024**2, **kwargs)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        device = spec.device or ("cuda" if gpus else "cpu")
        payload_ref = [ray.put(payload)]
        rows = [{"index": it.index, "path": it.path, "name": it.name} for it in items]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // batch_size))
        results = ds.map_batches(
            LabelActor,
            fn_constructor_kwargs={
                "spec": spec,
                "vocabulary": vocabulary,
                "payload_ref": payload_ref,
                "out": str(Path(out).resolve()),
                "task": task,
                "min_score": min_score,
                "save_png": save_png,
                "device": device,
                "threads": max(1, int(cpus_per_actor)),
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor,
            num_gpus=gpus,
        )
        bar = tqdm(total=len(items), desc="labelling (ray)", unit="img", disable=not progress,
                   file=sys.stderr)  # fmt: skip
        try:
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                done, failed = int(batch["done"].sum()), int(batch["failed"].sum())
                counts += Counts(done, failed)
                bar.update(done + failed)
        finally:
            bar.close()
    finally:
        if started:
            ray.shutdown()
    return counts
