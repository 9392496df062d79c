"""Loss settings (the ``model.loss`` section of a config): plain typed dataclass with defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ovseg.config.loader import ConfigError


@dataclass
class GKCConfig:
    """GKC (Han et al., ICCV 2023) training options, all off by default (``model.loss.gkc``);
    used by ``model.loss.type: gkc`` (see docs/gkc.md and :mod:`ovseg.models.losses.gkc`).

    Attributes:
        diversify: text diversification: each ground-truth segment is labelled with a synonym
            drawn from its class's synonyms; an extra cross-entropy against per-image columns.
        diversify_weight: weight of that cross-entropy (GKC: 10; the plain one keeps
            ``class_weight``, GKC: 2).
        synonym_clip_filter: draw only synonyms whose CLIP cosine score with the segment's
            grey-painted crop exceeds this (GKC: 0.1); null: every synonym.
        distill: text-guided knowledge distillation from the frozen CLIP's crop embeddings.
        distill_weight: weight of the distillation (its L2 and structure terms; GKC: 10).
        max_regions: at most this many matched segments per batch (per rank) are distilled.
        teacher_size: side of the crops fed to the frozen CLIP; null: the tower's image_size.
        teacher_batch: crops per frozen-CLIP forward (bounds the teacher's memory).
        seed: seeds the synonym draws with the draw counter and the image's dataset index.
    """

    diversify: bool = False
    diversify_weight: float = 10.0
    synonym_clip_filter: Optional[float] = None  # noqa: UP045 (OmegaConf needs Optional)
    distill: bool = False
    distill_weight: float = 10.0
    max_regions: int = 200
    teacher_size: Optional[int] = None  # noqa: UP045
    teacher_batch: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_regions < 1 or self.teacher_batch < 1:
            raise ConfigError(
                "model.loss.gkc.max_regions and teacher_batch must be >= 1; got "
                f"{self.max_regions}, {self.teacher_batch}"
            )
        if self.teacher_size is not None and self.teacher_size < 1:
            raise ConfigError(f"model.loss.gkc.teacher_size must be >= 1; got {self.teacher_size}")

    @property
    def enabled(self) -> bool:
        return self.diversify or self.distill


@dataclass
class LossConfig:
    """Mask2Former / FC-CLIP loss weights and point-sampling settings.

    Attributes:
        class_weight: weight of the classification loss and of the matcher's class cost.
        mask_weight: weight of the sigmoid BCE mask loss and matcher cost.
        dice_weight: weight of the dice loss and matcher cost.
        no_object_weight: cross-entropy weight of the "no object" class (``eos_coef``).
        train_num_points: points sampled per mask for the matcher and the mask losses.
        oversample_ratio: PointRend oversampling factor (>= 1).
        importance_sample_ratio: share of points chosen by uncertainty, in [0, 1].
        deep_supervision: also apply the losses to every intermediate decoder layer.
        type: the registered loss (``mask2former``: Hungarian matching + CE / BCE / dice;
            ``gkc``: the same plus the options of ``gkc``).
        gkc: GKC's text diversification and distillation (:class:`GKCConfig`).
        contrastive_weight: OneFormer's query-text contrastive loss (0 = off; the paper: 0.5).
        contrastive_temperature: its learnable temperature's initial value (clamped at 1/100).
    """

    type: str = "mask2former"  # a registered loss (ovseg.models.registry.LOSSES)
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    gkc: GKCConfig = field(default_factory=GKCConfig)
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.contrastive_weight < 0 or not self.contrastive_temperature > 0:
            raise ConfigError(
                "model.loss.contrastive_weight must be >= 0 and contrastive_temperature > 0; "
                f"got {self.contrastive_weight} and {self.contrastive_temperature}"
            )
        if isinstance(self.gkc, dict):
            self.gkc = GKCConfig(**self.gkc)
        if self.gkc.enabled and self.type != "gkc":
            raise ConfigError(
                f"model.loss.gkc.diversify/distill need model.loss.type=gkc; got {self.type!r}"
            )
