"""Streaming, distributed-aware evaluators that reproduce the official tools' numbers.

* :class:`SemSegEvaluator` — mIoU / mAcc / aAcc / fwIoU (mmseg or detectron2 conventions);
* :class:`PanopticEvaluator` — PQ / SQ / RQ (panopticapi);
* :class:`InstanceEvaluator` — COCO mask AP (pycocotools);
* :class:`CityscapesInstanceEvaluator` — Cityscapes instance AP (cityscapesscripts' rules).

Each has ``reset()``, ``process(...)`` per image and ``evaluate() -> dict``; under
``torch.distributed`` the per-rank statistics are combined in ``evaluate``.
``python -m ovseg.evaluation`` evaluates predictions saved on disk; :func:`evaluate` (in
``runner``) runs a model over a dataset or benchmark and scores it (tools/test.py, training).
"""

from ovseg.evaluation.cityscapes_instance import (
    CityscapesInstanceEvaluator,
    evaluate_cityscapes_instance_dirs,
)
from ovseg.evaluation.errors import EvaluationError
from ovseg.evaluation.instance import InstanceEvaluator, evaluate_instance_files
from ovseg.evaluation.panoptic import (
    PanopticEvaluator,
    evaluate_panoptic_files,
    id2rgb,
    read_panoptic_png,
    rgb2id,
)
from ovseg.evaluation.sem_seg import SemSegEvaluator, evaluate_semantic_dirs, read_label_png


def __getattr__(name: str):
    # The runner imports the model stack; keep ``import ovseg.evaluation`` light.
    if name in ("evaluate", "EvalSource", "summarize"):
        from ovseg.evaluation import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'ovseg.evaluation' has no attribute {name!r}")


__all__ = [
    "CityscapesInstanceEvaluator",
    "EvalSource",
    "EvaluationError",
    "InstanceEvaluator",
    "PanopticEvaluator",
    "SemSegEvaluator",
    "evaluate",
    "evaluate_cityscapes_instance_dirs",
    "evaluate_instance_files",
    "evaluate_panoptic_files",
    "evaluate_semantic_dirs",
    "id2rgb",
    "read_label_png",
    "read_panoptic_png",
    "rgb2id",
    "summarize",
]
