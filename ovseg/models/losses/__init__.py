"""Mask2Former matching and losses: Hungarian matcher, set criterion, point sampling; GKC."""

from ovseg.config.loss import LossConfig

from .criterion import (
    SetCriterion,
    build_criterion,
    dice_loss,
    matched_masks,
    sigmoid_ce_loss,
)
from .gkc import GKCCriterion, build_gkc_criterion
from .matcher import HungarianMatcher, batch_dice_cost, batch_sigmoid_ce_cost, mask_feature_rows
from .point_sample import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    point_sample_rows,
)

__all__ = [
    "GKCCriterion",
    "HungarianMatcher",
    "LossConfig",
    "SetCriterion",
    "batch_dice_cost",
    "batch_sigmoid_ce_cost",
    "build_criterion",
    "build_gkc_criterion",
    "calculate_uncertainty",
    "dice_loss",
    "get_uncertain_point_coords_with_randomness",
    "mask_feature_rows",
    "matched_masks",
    "point_sample",
    "point_sample_rows",
    "sigmoid_ce_loss",
]
