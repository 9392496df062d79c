"""Loss settings (the ``model.loss`` section of a config): plain typed dataclass with defaults."""

from __future__ import annotations

from dataclasses import dataclass

from ovseg.config.loader import ConfigError


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
        type: the registered loss (``mask2former``: Hungarian matching + CE / BCE / dice).
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
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.contrastive_weight < 0 or not self.contrastive_temperature > 0:
            raise ConfigError(
                "model.loss.contrastive_weight must be >= 0 and contrastive_temperature > 0; "
                f"got {self.contrastive_weight} and {self.contrastive_temperature}"
            )
