"""What the web app does per request, free of Gradio: vocabulary, one locked predict, outputs.

One :class:`SegmentService` wraps one loaded :class:`~ovseg.inference.segmenter.Segmenter` (one
model per process). Requests run one at a time under a lock (the ensemble α/β and the mask
threshold are model settings, set for the request and restored after). Text embeddings are cached
by the model's text encoder, per vocabulary, in a bounded LRU (``model.text.memory_cache_size``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.inference.segmenter import Segmenter
from ovseg.structures import Prediction
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.image import load_image
from ovseg.visualization import label_map, segments_table, visualize

TASKS = ("panoptic", "semantic", "instance")
BUILTIN_CHOICES = {
    "COCO (133)": "coco-panoptic",
    "ADE20K (150)": "ade20k-150",
    "LVIS (1203)": "lvis-1203",
}
"""Checkbox label -> built-in vocabulary (:meth:`Vocabulary.from_name`)."""
DEFAULT_BUILTINS = ("coco-panoptic", "ade20k-150")
"""The "segment everything" vocabulary when nothing is typed or ticked: COCO + ADE20K classes."""
MAX_CLASSES = 3000
MAX_VOCAB_CHARS = 20_000
MAX_IMAGE_SIDE = 2048  # larger uploads are shrunk first: bounded memory per request
MAX_ANNOTATIONS = 100  # masks sent to the page (the table lists every segment)


class RequestError(ValueError):
    """A bad request (vocabulary, image, task, setting): the message is shown in the page."""


@dataclass
class SegmentResult:
    """One request's outputs.

    Attributes:
        image: (H, W, 3) uint8 RGB, the segmented image (after any shrinking).
        prediction: what ``Segmenter.predict`` returned.
        task: "panoptic", "semantic" or "instance".
        segments: rows of :func:`~ovseg.visualization.segments_table` (id, category_id, label,
            isthing, score, area, bbox).
        annotations: ``(mask (H, W) bool, label)`` per segment, for ``gr.AnnotatedImage``.
        seconds: time spent in ``predict``.
    """

    image: np.ndarray
    prediction: Prediction
    task: str
    segments: list[dict[str, Any]]
    annotations: list[tuple[np.ndarray, str]] = field(default_factory=list)
    seconds: float = 0.0
    score_threshold: float = 0.0

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        """The CLI demo's drawing: tinted, outlined segments and the legend panel on the right."""
        return visualize(
            self.image,
            self.prediction,
            self.task,
            alpha=alpha,
            score_threshold=self.score_threshold,
        )

    def summary(self) -> str:
        n = len(self.prediction.vocabulary)
        return (
            f"{len(self.segments)} {self.task} segment(s) from a vocabulary of {n} class(es) "
            f"in {self.seconds:.2f} s"
        )


def parse_vocabulary(text: str | None, builtins: Sequence[str] = ()) -> Vocabulary:
    """The request's vocabulary: ``text`` in ovseg's syntax (``"a, a2; b; c [stuff]"``) plus the
    ticked built-in vocabularies; nothing at all gives the "segment everything" default.

    Only text is parsed: unlike ``resolve_vocabulary``, no file path is ever opened. Classes
    whose canonical name repeats an earlier one are dropped when sources are merged.

    Raises:
        RequestError: malformed text, an unknown built-in, or too many classes.
    """
    text = (text or "").strip()
    if len(text) > MAX_VOCAB_CHARS:
        raise RequestError(f"the vocabulary text is too long ({len(text)} > {MAX_VOCAB_CHARS})")
    names = [BUILTIN_CHOICES.get(b, b) for b in builtins]
    try:
        sources = [Vocabulary.parse(text)] if text else []
        sources += [Vocabulary.from_name(n) for n in names]
        if not sources:
            sources = [Vocabulary.from_name(n) for n in DEFAULT_BUILTINS]
    except KeyError as e:
        raise RequestError(f"bad vocabulary: {e.args[0] if e.args else e}") from None
    except (ValueError, TypeError) as e:
        raise RequestError(f"bad vocabulary: {e}") from None
    if len(sources) == 1:
        vocab = sources[0]
    else:
        seen: set[str] = set()
        classes, flags = [], []
        for v in sources:
            for c in v:
                key = c.name.lower()
                if key not in seen:
                    seen.add(key)
                    classes.append(", ".join(c.synonyms))
                    flags.append(c.isthing)
        vocab = Vocabulary(classes, isthing=flags, allow_duplicates=True)
    if len(vocab) > MAX_CLASSES:
        raise RequestError(f"the vocabulary has {len(vocab)} classes; at most {MAX_CLASSES}")
    return vocab


def read_image(src: Any, max_pixels: int = 0) -> np.ndarray:
    """An uploaded image (path, PIL image or array) as (H, W, 3) uint8 RGB, its longer side at
    most :data:`MAX_IMAGE_SIDE`; one over ``max_pixels`` (0 = no limit) is refused from its
    header, before it is decoded.

    Raises:
        RequestError: no image, or one that cannot be read (the reason, not a traceback).
    """
    from PIL import Image

    from ovseg.utils.image import ImageLoadError

    if src is None:
        raise RequestError("upload an image first")
    try:
        rgb = load_image(src, max_pixels=max_pixels)
    except ImageLoadError as e:
        msg = str(e)
        if isinstance(src, (str, Path)) and str(src):  # the upload's name, not the server's path
            msg = msg.replace(str(src), Path(src).name)
        raise RequestError(f"cannot read the uploaded image: {msg}") from None
    h, w = rgb.shape[:2]
    if max(h, w) > MAX_IMAGE_SIDE:
        s = MAX_IMAGE_SIDE / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
    return rgb


class SegmentService:
    """One model, serialised requests.

    Args:
        segmenter: a loaded segmenter (PyTorch or export backend).
    """

    def __init__(self, segmenter: Segmenter):
        self.segmenter = segmenter
        self._lock = threading.Lock()
        model = segmenter.model
        self.defaults = {
            "alpha": float(getattr(model, "alpha", 0.4)),
            "beta": float(getattr(model, "beta", 0.8)),
            "threshold": float(getattr(model, "object_mask_threshold", 0.0)),
        }

    def segment(
        self,
        image: Any,
        vocabulary: str | None = None,
        task: str = "panoptic",
        builtins: Sequence[str] = (),
        alpha: float | None = None,
        beta: float | None = None,
        threshold: float | None = None,
    ) -> SegmentResult:
        """Segment one image.

        Args:
            image: a path, PIL image or (H, W, 3) uint8 array.
            vocabulary: text in ovseg's syntax; see :func:`parse_vocabulary`.
            task: "panoptic", "semantic" or "instance".
            builtins: checkbox labels of :data:`BUILTIN_CHOICES` (or built-in names) to add.
            alpha, beta: ensemble weights of the out-of-vocabulary branch for seen / unseen
                classes (None: the model's).
            threshold: panoptic: drop queries scoring below it (``object_mask_threshold``);
                instance: drop instances scoring below it; semantic: unused. None: the model's.

        Raises:
            RequestError: bad input, named.
        """
        if task not in TASKS:
            raise RequestError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        settings = {
            "alpha": self.defaults["alpha"] if alpha is None else float(alpha),
            "beta": self.defaults["beta"] if beta is None else float(beta),
            "threshold": self.defaults["threshold"] if threshold is None else float(threshold),
        }
        for k, v in settings.items():
            if not 0.0 <= v <= 1.0:
                raise RequestError(f"{k} must lie in [0, 1], got {v}")
        vocab = parse_vocabulary(vocabulary, builtins)
        rgb = read_image(image, self.segmenter.config.model.test.max_image_pixels)
        try:
            self.segmenter.config.model.test.check_task(task)
        except ValueError as e:
            raise RequestError(str(e)) from None
        model = self.segmenter.model
        wanted = {"alpha": settings["alpha"], "beta": settings["beta"]}
        if task == "panoptic":
            wanted["object_mask_threshold"] = settings["threshold"]
        with self._lock:
            # an export's host model has none of these (the ensemble is inside its graph)
            saved = {k: getattr(model, k) for k in wanted if hasattr(model, k)}
            for k in saved:
                setattr(model, k, wanted[k])
            start = time.perf_counter()
            try:
                pred = self.segmenter.predict(rgb, vocab, task=task)
            finally:
                for k, v in saved.items():
                    setattr(model, k, v)
            seconds = time.perf_counter() - start
        score_threshold = settings["threshold"] if task == "instance" else 0.0
        rows = segments_table(pred, task, score_threshold)
        labels = label_map(pred, task, score_threshold)
        annotations = [
            (labels == row["id"], row["label"]) for row in rows[:MAX_ANNOTATIONS] if row["area"]
        ]
        return SegmentResult(rgb, pred, task, rows, annotations, seconds, score_threshold)
