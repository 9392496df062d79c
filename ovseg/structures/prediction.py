"""Structured results of open-vocabulary inference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ovseg.structures.classes import ClassList


@dataclass
class Instances:
    """Instance predictions at the input image's resolution.

    Attributes:
        masks: (N, H, W) bool.
        scores: (N,) float, class probability x mean mask probability (FC-CLIP).
        labels: (N,) int64 index into the vocabulary.
    """

    masks: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.numel())


@dataclass
class Prediction:
    """What :meth:`ovseg.Segmenter.predict` returns; fields the task did not compute are None.

    Attributes:
        vocabulary: the classes that ``category_id`` / ``labels`` index into.
        image_size: (H, W) of the input image.
        sem_seg: (C, H, W) float per-class scores (not probabilities summing to one). When
            C x H x W exceeds ``model.test.max_score_elements`` (large images, big
            vocabularies) the scores are kept at a reduced (C, h, w) instead, and the full
            resolution argmax is in ``sem_seg_labels`` / ``sem_seg_label_scores``: use
            :meth:`semantic_map` / :meth:`semantic_top`, which work either way.
        sem_seg_labels: (H, W) int64 argmax class, set when ``sem_seg`` is reduced.
        sem_seg_label_scores: (H, W) float score of that class, set with ``sem_seg_labels``.
        panoptic_seg: (H, W) int32 segment ids, 0 = void.
        segments_info: one dict per panoptic segment: id, category_id (vocabulary index),
            isthing, score, label (canonical class name), area.
        instances: instance masks, scores and labels.
    """

    vocabulary: ClassList
    image_size: tuple[int, int]
    sem_seg: torch.Tensor | None = None
    sem_seg_labels: torch.Tensor | None = None
    sem_seg_label_scores: torch.Tensor | None = None
    panoptic_seg: torch.Tensor | None = None
    segments_info: list[dict[str, Any]] | None = None
    instances: Instances | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def semantic_map(self) -> torch.Tensor:
        """(H, W) int64 argmax class index of the semantic scores, at the image's resolution."""
        return self.semantic_top()[0]

    def semantic_top(self) -> tuple[torch.Tensor, torch.Tensor]:
        """((H, W) int64 argmax class, (H, W) float its score) at the image's resolution."""
        if self.sem_seg_labels is not None and self.sem_seg_label_scores is not None:
            return self.sem_seg_labels, self.sem_seg_label_scores
        if self.sem_seg is None:
            raise ValueError(
                "this prediction has no semantic output; predict with task='semantic' or 'all'"
            )
        scores, labels = self.sem_seg.max(0)
        return labels, scores
