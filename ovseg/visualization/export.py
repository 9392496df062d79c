"""Write one image's prediction to disk: overlay PNG, raw label PNG and a JSON of segments.

This is what ``demo/demo.py`` does per image, as a function so that scripts and integrations can do
the same without the CLI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ovseg.structures import Prediction
from ovseg.utils.image import id2rgb, save_label_png
from ovseg.visualization.overlay import visualize
from ovseg.visualization.segments import check_task, label_map, segments_table

#: How each task's raw label PNG encodes its values (also written into the JSON).
LABEL_ENCODINGS = {
    "semantic": "class index into the vocabulary (8-bit grey PNG for <= 256 classes, else 16-bit)",
    "panoptic": "segment id in COCO panoptic RGB encoding: id = R + 256 * G + 256**2 * B; 0 = void",
    "instance": "instance id (16-bit grey PNG): 1..K as in 'segments', 0 = no instance",
}


def output_paths(out_dir: str | os.PathLike, stem: str, task: str) -> dict[str, Path]:
    """The three files :func:`save_prediction` writes: ``overlay``, ``labels`` and ``json``."""
    out = Path(out_dir)
    return {
        "overlay": out / f"{stem}_overlay.png",
        "labels": out / f"{stem}_{task}.png",
        "json": out / f"{stem}.json",
    }


def save_prediction(
    prediction: Prediction,
    image: np.ndarray,
    out_dir: str | os.PathLike,
    stem: str,
    task: str,
    *,
    alpha: float = 0.5,
    score_threshold: float = 0.0,
    source: str | None = None,
) -> dict[str, Path]:
    """Write ``<stem>_overlay.png``, ``<stem>_<task>.png`` and ``<stem>.json`` into ``out_dir``.

    Args:
        prediction: what ``Segmenter.predict`` returned for ``image``.
        image: (H, W, 3) uint8 RGB, the image the prediction was made from.
        out_dir: an existing directory.
        stem: file-name stem for the three outputs.
        task: "semantic", "panoptic" or "instance".
        alpha: overlay tint opacity.
        score_threshold: instances scoring below it are left out of all three files.
        source: where the image came from (recorded in the JSON).

    Returns:
        The written paths, keyed "overlay", "labels" and "json".

    The JSON holds ``image`` (source), ``image_size`` ([H, W]), ``task``, ``vocabulary`` (list of
    ``{"name", "isthing"}``), ``label_map`` (file name and encoding), ``score_threshold`` (instance
    task) and ``segments`` (rows of :func:`~ovseg.visualization.segments_table`).
    """
    check_task(prediction, task)
    paths = output_paths(out_dir, stem, task)
    labels = label_map(prediction, task, score_threshold)
    rows = segments_table(prediction, task, score_threshold)

    canvas = visualize(image, prediction, task, alpha=alpha, score_threshold=score_threshold)
    Image.fromarray(canvas).save(paths["overlay"], format="PNG")
    if task == "semantic":
        save_label_png(paths["labels"], labels, bits=8 if len(prediction.vocabulary) <= 256 else 16)
    elif task == "panoptic":
        save_label_png(paths["labels"], id2rgb(labels))
    else:
        if len(rows) > 65535:
            raise ValueError(f"{len(rows)} instances do not fit a 16-bit PNG; raise the threshold")
        save_label_png(paths["labels"], labels, bits=16)

    record: dict[str, Any] = {
        "image": source,
        "image_size": [int(labels.shape[0]), int(labels.shape[1])],
        "task": task,
        "vocabulary": prediction.vocabulary.to_json(),
        "label_map": {"file": paths["labels"].name, "encoding": LABEL_ENCODINGS[task]},
        "overlay": paths["overlay"].name,
    }
    if task == "instance":
        record["score_threshold"] = score_threshold
    record["segments"] = rows
    paths["json"].write_text(_dumps(record), encoding="utf-8")
    return paths


def _dumps(record: dict[str, Any]) -> str:
    """JSON with one line per top-level key, per vocabulary class and per segment (easy to read and
    to diff) instead of one line per number."""
    lines = []
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join(f"  {json.dumps(v, allow_nan=False)}" for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, allow_nan=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"
