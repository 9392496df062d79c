"""Labelling image collections at scale: COCO annotations from any vocabulary, resumable,
on one process, torchrun ranks or Ray Data actors (``tools/label.py``)."""

from ovseg.labelling.coco import categories, merge, merge_panoptic, prediction_record
from ovseg.labelling.engine import Counts, Labeller, label_local
from ovseg.labelling.merge import MergeSummary, merge_run
from ovseg.labelling.store import LabelStore, RunMismatchError, WorkItem, result_name, work_items

__all__ = [
    "Counts",
    "LabelStore",
    "Labeller",
    "MergeSummary",
    "RunMismatchError",
    "WorkItem",
    "categories",
    "label_local",
    "merge",
    "merge_panoptic",
    "merge_run",
    "prediction_record",
    "result_name",
    "work_items",
]
