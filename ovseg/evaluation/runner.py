"""Run a segmenter over a test set and score it: the library behind ``tools/test.py`` and the
trainer's periodic evaluation.

    from ovseg import Segmenter
    from ovseg.data.benchmarks import load_benchmark
    from ovseg.evaluation.runner import evaluate

    seg = Segmenter.from_config("fcclip/fcclip_convnext_large_eval_ade20k.yaml", "w.pth")
    metrics = evaluate(seg, load_benchmark("ade20k-150"), convention="detectron2")

A test set is either a config dataset (``build_dataset(cfg.data.test, train=False)``) or a
:class:`~ovseg.data.benchmarks.Benchmark`; :class:`EvalSource` gives both one face. Per image the
segmenter predicts once (task ``"all"`` when several tasks are scored) and
:class:`TaskEvaluators` feeds the three streaming evaluators, mapping vocabulary indices to the
dataset's category ids. Instance ground truth comes from the dataset's COCO instances JSON, or is
built per image from the panoptic thing segments (crowd segments kept as ``iscrowd`` 1, as
panopticapi's ``panoptic2detection_coco_format`` does); Cityscapes, whose records carry
``instanceIds`` PNGs, is scored with the official cityscapesscripts rules instead of COCO mask AP
(:mod:`ovseg.evaluation.cityscapes_instance`), as FC-CLIP's published Cityscapes AP is.

Under ``torch.distributed`` each rank takes ``indices[rank::world_size]`` (no padding) and the
evaluators reduce their statistics, so every rank returns the single-process numbers.
Images are resized to the segmenter's ``model.test.min_size`` / ``max_size``, then segmented
whole (``model.test.mode: whole``, FC-CLIP's protocol) or, for the semantic task only, in
overlapping windows (``mode: slide`` with ``crop_size`` / ``stride``, see
:mod:`ovseg.inference.sliding`); ``meta`` records which.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ovseg.data.catalog.cityscapes_labels import LABEL_IDS, THING_TRAIN_IDS
from ovseg.evaluation.cityscapes_instance import (
    CityscapesInstanceEvaluator,
    write_cityscapes_predictions,
)
from ovseg.evaluation.errors import EvaluationError
from ovseg.evaluation.instance import InstanceEvaluator, encode_mask
from ovseg.evaluation.panoptic import PanopticEvaluator, id2rgb, read_panoptic_png
from ovseg.evaluation.sem_seg import SemSegEvaluator, read_label_png
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.dist import all_gather_object, get_rank, is_distributed

if TYPE_CHECKING:
    from ovseg.data.benchmarks import Benchmark
    from ovseg.inference.segmenter import Segmenter
    from ovseg.structures import Prediction

logger = logging.getLogger(__name__)

TASKS = ("semantic", "panoptic", "instance")

# Kept for importers: the catalog's Cityscapes label table is the one home.
CITYSCAPES_LABEL_IDS = LABEL_IDS
CITYSCAPES_THING_TRAIN_IDS = THING_TRAIN_IDS


# ---------------------------------------------------------------------------------- sources
@dataclass
class EvalSource:
    """One test set, whatever it came from: records, ground truth readers, class-id mapping.

    Attributes:
        name: the dataset's name (results and messages).
        vocabulary: the classes predicted; ground-truth label k is ``vocabulary[k]``.
        tasks: the tasks the ground truth supports (subset of :data:`TASKS`).
        records: one dict per image: ``file_name``, ``image_id``, ``height``, ``width`` and the
            task fields (``sem_seg_file_name``, ``pan_seg_file_name`` + ``segments_info``,
            ``instance_image_id``, ``inst_seg_file_name``).
        category_ids: dataset category id of each vocabulary index (panoptic/instance results).
        num_classes / ignore_index / reduce_zero_label: semantic evaluator settings, applied to
            what :meth:`semantic_gt` returns.
        panoptic_categories: the panoptic json's categories (``id``, ``isthing``, ``name``).
        instances_json: COCO instances ground truth, when the dataset ships one.
        test_size: the benchmark's whole-image test size (short side, long side cap), if any.
        cityscapes_instances: score instances from the records' ``inst_seg_file_name``
            (``gtFine_instanceIds``) with the official Cityscapes evaluator, not COCO mask AP.
    """

    name: str
    vocabulary: Vocabulary
    tasks: tuple[str, ...]
    records: list[dict[str, Any]]
    category_ids: list[int]
    num_classes: int
    ignore_index: int = 255
    reduce_zero_label: bool = False
    panoptic_categories: list[dict[str, Any]] | None = None
    instances_json: Path | None = None
    test_size: tuple[int, int] | None = None
    cityscapes_instances: bool = False  # instance AP by the official Cityscapes rules
    semantic_reader: Any = None  # index -> (H, W) int labels; default: read sem_seg_file_name
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    # --------------------------------------------------------------- construction
    @classmethod
    def from_dataset(cls, dataset: Any, name: str | None = None) -> EvalSource:
        """Wrap a config dataset (:class:`~ovseg.data.CocoPanopticDataset` or
        :class:`~ovseg.data.SemanticFolderDataset`)."""
        from ovseg.data.datasets import CocoPanopticDataset, SemanticFolderDataset

        vocab = dataset.vocabulary
        if isinstance(dataset, CocoPanopticDataset):
            records = [dataset.get_eval_record(i) for i in range(len(dataset))]
            ignore = 255 if len(vocab) < 255 else 65535
            return cls(
                name=name or dataset.panoptic_json.stem,
                vocabulary=vocab,
                tasks=TASKS,
                records=records,
                category_ids=[int(c["id"]) for c in dataset.categories],
                num_classes=len(vocab),
                ignore_index=ignore,
                panoptic_categories=[dict(c) for c in dataset.categories],
                semantic_reader=functools.partial(dataset.load_semantic_gt, ignore_index=ignore),
            )
        if isinstance(dataset, SemanticFolderDataset):
            records = [dataset.get_eval_record(i) for i in range(len(dataset))]
            return cls(
                name=name or dataset.image_dir.parent.name or "semantic_folder",
                vocabulary=vocab,
                tasks=("semantic",),
                records=records,
                category_ids=list(range(len(vocab))),
                num_classes=len(vocab),
                ignore_index=dataset.ignore_index,
                # load_semantic_gt has already applied reduce_zero_label.
                semantic_reader=dataset.load_semantic_gt,
            )
        raise TypeError(
            f"cannot evaluate a {type(dataset).__name__}: pass a CocoPanopticDataset, a "
            "SemanticFolderDataset, a Benchmark or an EvalSource"
        )

    @classmethod
    def from_benchmark(cls, bench: Benchmark) -> EvalSource:
        """Wrap a prepared benchmark (:func:`ovseg.data.benchmarks.load_benchmark`): its category
        ids and instance evaluator are the dataset's catalog spec's, not a name branch."""
        vocab = Vocabulary.from_name(bench.vocabulary)
        if len(vocab) != bench.num_classes:
            raise EvaluationError(
                f"{bench.name}: vocabulary {bench.vocabulary!r} has {len(vocab)} classes but the "
                f"benchmark has {bench.num_classes}"
            )
        categories = None
        if bench.panoptic_json is not None:
            try:
                data = json.loads(Path(bench.panoptic_json).read_text(encoding="utf-8"))
                categories = [dict(c) for c in data["categories"]]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
                raise EvaluationError(
                    f"{bench.name}: cannot read {bench.panoptic_json}: {e}"
                ) from None
        if bench.category_ids is not None:
            if len(bench.category_ids) != len(vocab):
                raise EvaluationError(
                    f"{bench.name}: {bench.panoptic_json} has {len(bench.category_ids)} categories "
                    f"but vocabulary {bench.vocabulary!r} has {len(vocab)} classes"
                )
            category_ids = [int(i) for i in bench.category_ids]
        else:
            category_ids = list(range(len(vocab)))
        return cls(
            name=bench.name,
            vocabulary=vocab,
            tasks=tuple(t for t in TASKS if t in bench.tasks),
            records=list(bench.records),
            category_ids=category_ids,
            num_classes=bench.num_classes,
            ignore_index=bench.ignore_index,
            reduce_zero_label=bench.reduce_zero_label,
            panoptic_categories=categories,
            instances_json=Path(bench.instances_json) if bench.instances_json else None,
            test_size=(bench.min_size_test, bench.max_size_test),
            cityscapes_instances=bench.instance_evaluator == "cityscapes",
        )

    # --------------------------------------------------------------- ground truth
    def image(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of record ``index`` (EXIF orientation applied)."""
        from ovseg.utils.image import load_image

        return load_image(self.records[index]["file_name"])

    def stem(self, index: int) -> str:
        """A file-name stem unique within the set (prediction files are named by it)."""
        image_id = self.records[index].get("image_id")
        if isinstance(image_id, str) and image_id:
            return image_id.replace("/", "__")
        return Path(self.records[index]["file_name"]).stem

    def semantic_gt(self, index: int) -> np.ndarray:
        """(H, W) int64 labels as the semantic evaluator expects them (before its own
        ``reduce_zero_label``)."""
        if self.semantic_reader is not None:
            return np.asarray(self.semantic_reader(index)).astype(np.int64, copy=False)
        return read_label_png(self.records[index]["sem_seg_file_name"])

    def panoptic_gt(self, index: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """(H, W) int64 segment ids (0 = void) and the record's ``segments_info``."""
        record = self.records[index]
        return read_panoptic_png(record["pan_seg_file_name"]), list(record["segments_info"])

    def instance_categories(self) -> list[dict[str, Any]]:
        """The thing categories of a ground truth built from panoptic or instanceIds PNGs."""
        if self.panoptic_categories is not None:
            return [
                {"id": int(c["id"]), "name": c.get("name", str(c["id"])), "isthing": 1}
                for c in self.panoptic_categories
                if c.get("isthing")
            ]
        return [
            {"id": self.category_ids[k], "name": self.vocabulary[k].name, "isthing": 1}
            for k in range(len(self.vocabulary))
            if self.vocabulary[k].isthing
        ]

    def instance_gt(self, index: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The COCO ``image`` entry and annotations (compressed RLE) of record ``index``, built
        from a Cityscapes ``instanceIds`` PNG or from the panoptic thing segments."""
        record = self.records[index]
        image_id = record["image_id"]
        anns: list[dict[str, Any]] = []
        if "inst_seg_file_name" in record:
            ids = read_label_png(record["inst_seg_file_name"])
            height, width = ids.shape
            things = {LABEL_IDS[t] for t in THING_TRAIN_IDS}
            for value in np.unique(ids).tolist():
                label = value // 1000 if value >= 1000 else value
                if label not in things:
                    continue
                mask = ids == value
                anns.append(_annotation(image_id, label, mask, iscrowd=int(value < 1000)))
        else:
            png, segments = self.panoptic_gt(index)
            height, width = png.shape
            thing_ids = {c["id"] for c in self.instance_categories()}
            for s in segments:
                if int(s["category_id"]) not in thing_ids:
                    continue
                mask = png == int(s["id"])
                anns.append(
                    _annotation(image_id, int(s["category_id"]), mask, int(s.get("iscrowd", 0)),
                                s.get("area"))
                )  # fmt: skip
        info = {"id": image_id, "height": int(height), "width": int(width),
                "file_name": Path(record["file_name"]).name}  # fmt: skip
        return info, anns


def _annotation(
    image_id: Any, category_id: int, mask: np.ndarray, iscrowd: int, area: Any = None
) -> dict[str, Any]:
    rle = encode_mask(mask)
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)] if len(xs) else [0.0, 0.0, 0.0, 0.0]  # fmt: skip
    return {
        "image_id": image_id,
        "category_id": int(category_id),
        "segmentation": rle,
        "area": float(mask.sum() if area is None else area),
        "bbox": bbox,
        "iscrowd": int(iscrowd),
    }


def as_source(source: Any) -> EvalSource:
    """An :class:`EvalSource` from a config dataset, a ``Benchmark`` or an ``EvalSource``."""
    if isinstance(source, EvalSource):
        return source
    from ovseg.data.benchmarks import Benchmark

    if isinstance(source, Benchmark):
        return EvalSource.from_benchmark(source)
    return EvalSource.from_dataset(source)


# ---------------------------------------------------------------------------------- evaluators
def resolve_tasks(source: EvalSource, tasks: Sequence[str] | str | None) -> tuple[str, ...]:
    """The tasks to score: ``None`` / ``"all"`` = every task the source supports.

    Raises:
        EvaluationError: a task the source's ground truth cannot score.
    """
    if tasks is None or tasks == "all" or (not isinstance(tasks, str) and "all" in tasks):
        return source.tasks
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise EvaluationError(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)} or all")
    missing = [t for t in tasks if t not in source.tasks]
    if missing:
        raise EvaluationError(
            f"{source.name} has no {'/'.join(missing)} ground truth; it supports: "
            f"{', '.join(source.tasks)}"
        )
    return tuple(t for t in TASKS if t in tasks)


class TaskEvaluators:
    """The evaluators of one source, fed one prediction at a time.

    Args:
        source: the test set.
        tasks: the tasks to score (see :func:`resolve_tasks`).
        convention: semantic NaN rules, ``"detectron2"`` (FC-CLIP's tables) or ``"mmseg"``.
        export_dir: when set, predictions are also written in standard formats under it:
            ``semantic/<stem>.png`` (class index, 8- or 16-bit), ``panoptic/<stem>.png`` +
            ``panoptic.json`` (COCO panoptic, dataset category ids), ``instances_results.json``
            (COCO results, RLE) and, for built instance ground truth, ``instances_gt.json``.
    """

    def __init__(
        self,
        source: EvalSource,
        tasks: Sequence[str] | str | None = None,
        convention: str = "detectron2",
        export_dir: str | Path | None = None,
    ) -> None:
        self.source = source
        self.tasks = resolve_tasks(source, tasks)
        self.convention = convention
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.category_ids = list(source.category_ids)
        self.semantic: SemSegEvaluator | None = None
        self.panoptic: PanopticEvaluator | None = None
        if "semantic" in self.tasks:
            self.semantic = SemSegEvaluator(
                source.num_classes,
                ignore_index=source.ignore_index,
                reduce_zero_label=source.reduce_zero_label,
                convention=convention,
                class_names=source.vocabulary.names,
            )
        if "panoptic" in self.tasks:
            if not source.panoptic_categories:
                raise EvaluationError(f"{source.name}: no panoptic categories to evaluate")
            self.panoptic = PanopticEvaluator(source.panoptic_categories)
        # Instance: the ground truth may be built as we go, so detections wait for evaluate().
        self._instance_gt_images: list[dict[str, Any]] = []
        self._instance_gt_anns: list[dict[str, Any]] = []
        self._detections: dict[Any, list[dict[str, Any]]] = {}
        self._instance_cat_ids: set[int] | None = None
        self.cityscapes: CityscapesInstanceEvaluator | None = None
        if "instance" in self.tasks and source.cityscapes_instances:
            self.cityscapes = CityscapesInstanceEvaluator()
        elif "instance" in self.tasks:
            if source.instances_json is not None:
                self._instance_evaluator = InstanceEvaluator(source.instances_json)
                self._instance_cat_ids = set(self._instance_evaluator.coco_gt.cats)
            else:
                self._instance_evaluator = None
                self._instance_cat_ids = {c["id"] for c in source.instance_categories()}
        self._panoptic_export: list[dict[str, Any]] = []
        if self.export_dir is not None:
            for t in ("semantic", "panoptic"):
                if t in self.tasks:
                    (self.export_dir / t).mkdir(parents=True, exist_ok=True)
        self.num_images = 0

    @property
    def predict_task(self) -> str:
        """The segmenter task that yields every output needed."""
        return self.tasks[0] if len(self.tasks) == 1 else "all"

    def process(self, index: int, prediction: Prediction) -> None:
        """Score the prediction for record ``index`` (at the ground truth's resolution).

        Raises:
            EvaluationError: a missing output, size mismatch or unknown category (named).
        """
        record = self.source.records[index]
        name = str(record.get("file_name", index))
        stem = self.source.stem(index)
        if self.semantic is not None:
            if prediction.sem_seg is None:
                raise EvaluationError(f"{name}: the prediction has no semantic output")
            pred = prediction.semantic_map().cpu().numpy()
            gt_name = record.get("sem_seg_file_name", name)
            self.semantic.process(pred, self.source.semantic_gt(index), name, str(gt_name))
            if self.export_dir is not None:
                bits = np.uint8 if self.source.num_classes <= 256 else np.uint16
                Image.fromarray(pred.astype(bits)).save(
                    self.export_dir / "semantic" / f"{stem}.png"
                )
        if self.panoptic is not None:
            if prediction.panoptic_seg is None:
                raise EvaluationError(f"{name}: the prediction has no panoptic output")
            ids = prediction.panoptic_seg.cpu().numpy().astype(np.int64)
            segments = [
                {
                    "id": int(s["id"]),
                    "category_id": self._dataset_id(int(s["category_id"]), name),
                    "isthing": int(bool(s.get("isthing", False))),
                    **({"score": float(s["score"])} if "score" in s else {}),
                    "area": int(s.get("area", 0)),
                }
                for s in prediction.segments_info or []
            ]
            gt_ids, gt_segments = self.source.panoptic_gt(index)
            self.panoptic.process(gt_ids, gt_segments, ids, segments, image_id=record["image_id"])
            if self.export_dir is not None:
                Image.fromarray(id2rgb(ids)).save(self.export_dir / "panoptic" / f"{stem}.png")
                self._panoptic_export.append(
                    {"image_id": record["image_id"], "file_name": f"{stem}.png",
                     "segments_info": segments}
                )  # fmt: skip
        if "instance" in self.tasks and prediction.instances is None:
            raise EvaluationError(f"{name}: the prediction has no instance output")
        if self.cityscapes is not None:
            inst = prediction.instances
            label_ids = [self._dataset_id(int(k), name) for k in inst.labels.tolist()]
            gt = read_label_png(record["inst_seg_file_name"])
            self.cityscapes.process(record["image_id"], gt, inst.masks, label_ids, inst.scores)
            if self.export_dir is not None:
                write_cityscapes_predictions(self.export_dir / "cityscapes_instance", stem,
                                             inst.masks, label_ids, inst.scores.tolist())  # fmt: skip
        elif "instance" in self.tasks:
            if self._instance_evaluator is None:
                info, anns = self.source.instance_gt(index)
                self._instance_gt_images.append(info)
                self._instance_gt_anns.extend(anns)
                image_id = info["id"]
            else:
                image_id = record.get("instance_image_id", record["image_id"])
            inst = prediction.instances
            labels = inst.labels.tolist()
            scores = inst.scores.tolist()
            cids = [self._dataset_id(int(k), name) for k in labels]
            # classes the instance ground truth does not score (stuff) are dropped before encoding
            keep = [j for j, c in enumerate(cids) if c in self._instance_cat_ids]
            rles = _encode_masks(inst.masks, keep)
            dets = [
                {"image_id": image_id, "category_id": cids[j], "segmentation": rle,
                 "score": float(scores[j])}
                for j, rle in zip(keep, rles)
            ]  # fmt: skip
            self._detections[image_id] = dets
        self.num_images += 1

    def _dataset_id(self, vocab_index: int, name: str) -> int:
        if not 0 <= vocab_index < len(self.category_ids):
            raise EvaluationError(
                f"{name}: predicted class index {vocab_index} is outside the "
                f"{len(self.category_ids)}-class vocabulary of {self.source.name}"
            )
        return self.category_ids[vocab_index]

    def evaluate(self) -> dict[str, Any]:
        """Metrics over every rank's images: {task: the JSON of ``python -m ovseg.evaluation``}.

        Collective under ``torch.distributed``: every rank must call it; every rank gets the
        result. Exported JSON files are written by rank 0.
        """
        out: dict[str, Any] = {}
        if self.semantic is not None:
            out["semantic"] = self.semantic.evaluate()
        if self.panoptic is not None:
            out["panoptic"] = self.panoptic.evaluate()
        if self.cityscapes is not None:
            out["instance"] = self.cityscapes.evaluate()
        elif "instance" in self.tasks:
            evaluator = self._instance_evaluator
            gt_dict = None
            if evaluator is None:
                images: list[dict[str, Any]] = []
                anns: list[dict[str, Any]] = []
                for part in all_gather_object((self._instance_gt_images, self._instance_gt_anns)):
                    images += part[0]
                    anns += part[1]
                order = {r.get("image_id"): k for k, r in enumerate(self.source.records)}
                images.sort(key=lambda im: order.get(im["id"], len(order)))
                for k, a in enumerate(anns, start=1):
                    a["id"] = k
                gt_dict = {"images": images, "annotations": anns,
                           "categories": self.source.instance_categories()}  # fmt: skip
                evaluator = InstanceEvaluator(gt_dict)
            else:
                evaluator = self._subset_evaluator(evaluator)
            for image_id, dets in self._detections.items():
                evaluator.process(image_id, dets)
            out["instance"] = evaluator.evaluate()
            if self.export_dir is not None:
                dets = [d for part in all_gather_object(self._detections) for v in part.values()
                        for d in v]  # fmt: skip
                if get_rank() == 0:
                    _write_json(self.export_dir / "instances_results.json", dets)
                    if gt_dict is not None:
                        _write_json(self.export_dir / "instances_gt.json", gt_dict)
        if self.export_dir is not None and self.panoptic is not None:
            anns = [a for part in all_gather_object(self._panoptic_export) for a in part]
            if get_rank() == 0:
                _write_json(
                    self.export_dir / "panoptic.json",
                    {"annotations": anns, "categories": self.source.panoptic_categories},
                )
        return out

    def _subset_evaluator(self, evaluator: InstanceEvaluator) -> InstanceEvaluator:
        """The JSON ground truth restricted to the images processed on any rank (``limit``)."""
        done = {i for part in all_gather_object(list(self._detections)) for i in part}
        gt = evaluator.coco_gt.dataset
        if done == set(evaluator.coco_gt.imgs):
            evaluator.reset()
            return evaluator
        subset = {
            **gt,
            "images": [im for im in gt["images"] if im["id"] in done],
            "annotations": [a for a in gt["annotations"] if a["image_id"] in done],
        }
        return InstanceEvaluator(subset)


def _encode_masks(masks: torch.Tensor, keep: Sequence[int]) -> list[dict[str, Any]]:
    """Compressed RLEs of ``masks[keep]`` ((N, H, W) bool). One pycocotools call per mask: a
    batched call needs an (H, W, N) Fortran copy that costs more than it saves."""
    if not keep:
        return []
    sel = masks[torch.as_tensor(list(keep), dtype=torch.long, device=masks.device)]
    return [encode_mask(m) for m in sel.cpu().numpy()]


def _write_json(path: Path, obj: Any) -> None:
    from ovseg.utils.io import atomic_write_json

    atomic_write_json(path, obj)


# ---------------------------------------------------------------------------------- driver
def shard_indices(n: int, limit: int | None = None) -> list[int]:
    """This rank's images: ``range(min(n, limit))[rank::world_size]`` (no padding)."""
    total = n if limit is None else min(n, max(0, int(limit)))
    if not is_distributed():
        return list(range(total))
    import torch.distributed as dist

    return list(range(total))[dist.get_rank() :: dist.get_world_size()]


def evaluate(
    segmenter: Segmenter,
    source: Any,
    tasks: Sequence[str] | str | None = None,
    convention: str = "detectron2",
    out_dir: str | Path | None = None,
    save_predictions: bool = False,
    visualize: bool = False,
    limit: int | None = None,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Predict every image of ``source`` with ``segmenter`` and score the predictions.

    Args:
        segmenter: the model (its ``model.test.min_size`` / ``max_size`` set the test size).
        source: a config dataset, a ``Benchmark`` or an :class:`EvalSource`.
        tasks: ``"semantic"``, ``"panoptic"``, ``"instance"``, a list of them, or None / ``"all"``
            for every task the ground truth supports.
        convention: semantic NaN rules, ``"detectron2"`` (FC-CLIP) or ``"mmseg"``.
        out_dir: where ``metrics.json`` (rank 0) and the optional outputs go; None writes nothing.
        save_predictions: also export predictions under ``out_dir/predictions`` (see
            :class:`TaskEvaluators`).
        visualize: also write an overlay per image and task under ``out_dir/visualizations``.
        limit: evaluate only the first ``limit`` images (quick checks).
        progress: show a tqdm bar (rank 0).
        meta: extra entries for the result's ``meta`` (e.g. ``weights``, ``config``).
        num_workers: processes decoding images ahead of the model (0 = in this process).

    Returns:
        ``{"semantic": ..., "panoptic": ..., "instance": ..., "meta": {...}}`` with one key per
        task scored, each the JSON ``python -m ovseg.evaluation <task> --out`` writes; ``meta``
        holds ``dataset``, ``tasks``, ``test_size`` [min, max], ``test_mode`` (``"whole"`` or
        ``"slide"``, then also ``crop_size`` and ``stride`` [h, w]), ``num_images``, ``seconds``,
        ``images_per_second``, ``world_size``, ``convention`` and ``meta``'s entries. The same
        on every rank.
    """
    src = as_source(source)
    out_path = Path(out_dir) if out_dir is not None else None
    if (save_predictions or visualize) and out_path is None:
        raise EvaluationError("save_predictions / visualize need an out_dir")
    export = out_path / "predictions" if save_predictions and out_path is not None else None
    evaluators = TaskEvaluators(src, tasks, convention, export)
    try:
        segmenter.config.model.test.check_task(evaluators.tasks, asked="{} for " + src.name)
    except ValueError as e:
        raise EvaluationError(str(e)) from None
    vocab = src.vocabulary
    indices = shard_indices(len(src), limit)
    rank = get_rank()
    iterator: Iterable[tuple[int, np.ndarray]] = _image_loader(src, indices, num_workers)
    if progress and rank == 0:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"evaluating {src.name}", unit="img", disable=None,
                        total=len(indices))  # fmt: skip
    vis_dir = out_path / "visualizations" if visualize and out_path is not None else None
    if vis_dir is not None:
        vis_dir.mkdir(parents=True, exist_ok=True)
    segmenter.encode_vocabulary(vocab)  # text embeddings once, before the clock starts
    _sync(segmenter)
    start = time.perf_counter()
    for i, image in iterator:
        prediction = segmenter.predict(image, vocab, task=evaluators.predict_task)
        evaluators.process(i, prediction)
        if vis_dir is not None:
            from ovseg.visualization import visualize as draw

            for task in evaluators.tasks:
                if task == "instance" and not len(prediction.instances):
                    canvas = image  # nothing to draw (and segments_table fails on no instances)
                else:
                    canvas = draw(image, prediction, task)
                Image.fromarray(canvas).save(vis_dir / f"{src.stem(i)}_{task}.png")
    _sync(segmenter)
    seconds = time.perf_counter() - start
    # Wall time of the slowest rank; images of all ranks.
    per_rank = all_gather_object((seconds, len(indices)))
    seconds = max(s for s, _ in per_rank)
    num_images = sum(n for _, n in per_rank)
    result = evaluators.evaluate()
    t = segmenter.config.model.test
    result["meta"] = {
        "dataset": src.name,
        "tasks": list(evaluators.tasks),
        "test_size": [int(t.min_size), int(t.max_size)],
        "test_mode": t.mode,
        **({"crop_size": list(t.crop_size), "stride": list(t.stride)} if t.mode == "slide" else {}),
        "num_images": num_images,
        "seconds": seconds,
        "images_per_second": num_images / seconds if seconds > 0 else math.nan,
        "world_size": len(per_rank),
        "convention": convention,
        "device": str(segmenter.device),
        **dict(meta or {}),
    }
    if out_path is not None and rank == 0:
        _write_json(out_path / "metrics.json", result)
    return result


class _Images(torch.utils.data.Dataset):
    """``(index, (H, W, 3) uint8 RGB image)`` of a source's records, for a prefetching loader."""

    def __init__(self, source: EvalSource, indices: Sequence[int]) -> None:
        self.source = source
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray]:
        i = self.indices[k]
        return i, self.source.image(i)


def _keep(item: Any) -> Any:
    return item


def _image_loader(
    source: EvalSource, indices: Sequence[int], num_workers: int
) -> Iterable[tuple[int, np.ndarray]]:
    if num_workers <= 0:
        return ((i, source.image(i)) for i in indices)
    return torch.utils.data.DataLoader(
        _Images(source, indices), batch_size=None, num_workers=num_workers, collate_fn=_keep
    )


def _sync(segmenter: Segmenter) -> None:
    if segmenter.device.type == "cuda":
        torch.cuda.synchronize(segmenter.device)


# ---------------------------------------------------------------------------------- summaries
def summarize(result: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers in percent: ``PQ``, ``PQ_th``, ``PQ_st``, ``AP``, ``mIoU``, ``mAcc``,
    ``aAcc`` for the tasks present (NaN where undefined)."""
    out: dict[str, float] = {}
    if "panoptic" in result:
        s = result["panoptic"]["summary"]
        out["PQ"] = 100 * _f(s["All"]["pq"])
        out["SQ"] = 100 * _f(s["All"]["sq"])
        out["RQ"] = 100 * _f(s["All"]["rq"])
        out["PQ_th"] = 100 * _f(s["Things"]["pq"])
        out["PQ_st"] = 100 * _f(s["Stuff"]["pq"])
    if "instance" in result and "averages" in result["instance"]:  # official Cityscapes AP
        out["AP"] = 100 * _f(result["instance"]["averages"]["allAp"])
        out["AP50"] = 100 * _f(result["instance"]["averages"]["allAp50%"])
    elif "instance" in result:
        ap = _f(result["instance"]["stats"][0])
        out["AP"] = 100 * ap if ap >= 0 else math.nan
        ap50 = _f(result["instance"]["stats"][1])
        out["AP50"] = 100 * ap50 if ap50 >= 0 else math.nan
    if "semantic" in result:
        s = result["semantic"]["summary_percent"]
        for k in ("mIoU", "mAcc", "aAcc", "fwIoU"):
            out[k] = _f(s[k])
    return out


def _f(v: Any) -> float:
    return math.nan if v is None else float(v)


def format_summary(result: Mapping[str, Any]) -> str:
    """A short readable table of one evaluation: one row per task with its headline numbers."""
    s = summarize(result)
    meta = result.get("meta", {})
    lines = []
    head = meta.get("dataset", "")
    if meta:
        slide = meta.get("test_mode") == "slide"
        windows = f"slide {meta.get('crop_size')} stride {meta.get('stride')}, " if slide else ""
        head += (
            f"  ({meta.get('num_images', '?')} images, test size {meta.get('test_size')}, "
            f"{windows}{_num(meta.get('images_per_second'))} img/s)"
        )
    lines.append(head.strip())
    rows = []
    if "panoptic" in result:
        rows.append(("panoptic", [("PQ", s["PQ"]), ("SQ", s["SQ"]), ("RQ", s["RQ"]),
                                  ("PQ_th", s["PQ_th"]), ("PQ_st", s["PQ_st"])]))  # fmt: skip
    if "instance" in result:
        rows.append(("instance", [("AP", s["AP"]), ("AP50", s["AP50"])]))
    if "semantic" in result:
        rows.append(("semantic", [(k, s[k]) for k in ("mIoU", "mAcc", "aAcc", "fwIoU")]))
    for task, values in rows:
        lines.append(f"  {task:<9}" + "  ".join(f"{k} {_num(v, 6)}" for k, v in values))
    return "\n".join(lines)


def _num(v: Any, width: int = 0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return f"{'-':>{width}}"
    return f"{float(v):>{width}.2f}"
