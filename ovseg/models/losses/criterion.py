"""Mask2Former's set criterion: classification + point-sampled BCE and dice mask losses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ovseg.config.loss import LossConfig
from ovseg.models.registry import LOSSES

from .matcher import HungarianMatcher, mask_feature_rows
from .point_sample import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

Indices = list[tuple[torch.Tensor, torch.Tensor]]


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss summed over masks and divided by ``num_masks``.

    Args:
        inputs: (M, P) float mask logits.
        targets: (M, P) float binary targets.
        num_masks: normaliser (the number of target masks in the global batch).

    Returns:
        scalar float: ``sum_m (1 - (2 sum(x*y) + 1) / (sum(x) + sum(y) + 1)) / num_masks`` with
        x = sigmoid(inputs).
    """
    inputs = inputs.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy averaged over points, summed over masks, divided by ``num_masks``.

    Args:
        inputs: (M, P) float mask logits.
        targets: (M, P) float binary targets.
        num_masks: normaliser.

    Returns:
        scalar float.
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


class SetCriterion(nn.Module):
    """Hungarian-matched losses of Mask2Former (and FC-CLIP).

    1. Match the queries of each image (and of each auxiliary decoder layer) to the targets.
    2. Cross-entropy over ``num_classes + 1`` classes; unmatched queries must predict the last
       ("no object") class, down-weighted by ``eos_coef``.
    3. Sigmoid BCE and dice of the matched masks at ``num_points`` points per mask, 75 % of them
       (``importance_sample_ratio``) chosen where the prediction is most uncertain.

    All mask losses are divided by the number of target masks in the global batch (all-reduced
    over ranks when :mod:`torch.distributed` is initialised, at least 1).

    Args:
        num_classes: number of real classes C (the logits have C + 1 entries); None takes C from
            ``pred_logits`` at each call (open vocabulary: the classifier follows the vocabulary).
        matcher: the query-to-target matcher.
        weight_dict: loss name (``loss_ce``, ``loss_mask``, ``loss_dice``) → weight; the
            auxiliary copies ``loss_ce_0`` ... use the same weight as their base loss unless given.
        eos_coef: cross-entropy weight of the no-object class.
        losses: which loss groups to compute, from ``("labels", "masks")``.
        num_points: points per mask for the mask losses.
        oversample_ratio: PointRend oversampling factor.
        importance_sample_ratio: share of points chosen by uncertainty.
        deep_supervision: apply the losses to ``aux_outputs`` too; when False they are ignored.
    """

    def __init__(
        self,
        num_classes: int | None,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        eos_coef: float = 0.1,
        losses: Sequence[str] = ("labels", "masks"),
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        unknown = set(losses) - {"labels", "masks"}
        if unknown:
            raise ValueError(
                f"unknown loss groups {sorted(unknown)}; choose from 'labels', 'masks'"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.deep_supervision = deep_supervision
        if num_classes is not None:
            # Not persistent: checkpoints hold trainable weights only; this buffer is derived.
            self.register_buffer("empty_weight", self._empty_weight(num_classes), persistent=False)
        else:
            self.register_buffer("empty_weight", None, persistent=False)

    def _empty_weight(self, num_classes: int) -> torch.Tensor:
        weight = torch.ones(num_classes + 1)
        weight[-1] = self.eos_coef
        return weight

    # ----------------------------------------------------------------- losses
    def loss_labels(
        self, outputs: dict, targets: list[dict], indices: Indices, num_masks: float
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy of (B, Q, C + 1) ``pred_logits``; unmatched queries target class C."""
        src_logits = outputs["pred_logits"].float()
        num_classes = src_logits.shape[-1] - 1
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(
                f"pred_logits has {num_classes + 1} classes, expected num_classes + 1 = "
                f"{self.num_classes + 1} (the last one is 'no object')"
            )
        empty_weight = self.empty_weight
        if empty_weight is None:
            empty_weight = self._empty_weight(num_classes)
        batch_idx, src_idx = _src_permutation_idx(indices)
        target_classes_o = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(
            src_logits.device, torch.int64
        )
        target_classes = torch.full(
            src_logits.shape[:2],
            num_classes,
            dtype=torch.int64,
            device=src_logits.device,
        )
        target_classes[batch_idx.to(src_logits.device), src_idx.to(src_logits.device)] = (
            target_classes_o
        )
        loss_ce = F.cross_entropy(
            src_logits.transpose(1, 2),
            target_classes,
            empty_weight.to(src_logits.device),
        )
        return {"loss_ce": loss_ce}

    def loss_masks(
        self, outputs: dict, targets: list[dict], indices: Indices, num_masks: float
    ) -> dict[str, torch.Tensor]:
        """BCE and dice of the matched (B, Q, h, w) ``pred_masks`` at importance-sampled points."""
        pred_masks = outputs["pred_masks"]
        device = pred_masks.device
        src_masks = matched_masks(outputs, indices).float()  # (M, h, w)
        if src_masks.shape[0] == 0:
            # No target anywhere in the batch: keep the graph connected so DDP sees every param.
            source = outputs.get("mask_embed", pred_masks)
            zero = source.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        per_image = [t["masks"][j.to(t["masks"].device)] for t, (_, j) in zip(targets, indices)]
        height = max(m.shape[-2] for m in per_image)
        width = max(m.shape[-1] for m in per_image)
        # Targets normally share the padded batch size; pad at the bottom/right if they do not
        # (Mask2Former's nested tensors do the same).
        target_masks = torch.cat(
            [
                F.pad(
                    m.to(device).to(src_masks.dtype),
                    (0, width - m.shape[-1], 0, height - m.shape[-2]),
                )
                for m in per_image
            ]
        )  # (M, H, W)
        src_masks = src_masks[:, None]
        target_masks = target_masks[:, None]
        with torch.no_grad():
            point_coords = get_uncertain_point_coords_with_randomness(
                src_masks,
                calculate_uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
            point_labels = point_sample(target_masks, point_coords, align_corners=False).squeeze(1)
        point_logits = point_sample(src_masks, point_coords, align_corners=False).squeeze(1)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    # ----------------------------------------------------------------- forward
    def get_num_masks(self, targets: list[dict], device: torch.device) -> float:
        """Average number of target masks per rank over the global batch, at least 1."""
        num_masks = torch.as_tensor(
            float(sum(len(t["labels"]) for t in targets)),
            dtype=torch.float,
            device=device,
        )
        world_size = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            world_size = dist.get_world_size()
        return torch.clamp(num_masks / world_size, min=1).item()

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Compute the weighted losses.

        Args:
            outputs: ``pred_logits`` (B, Q, C + 1) float, ``pred_masks`` (B, Q, H/4, W/4) float
                and optionally ``aux_outputs``: a list of L dicts with the same two keys, one per
                intermediate decoder layer.
            targets: B dicts with ``labels`` (N,) int64 in [0, C) and ``masks`` (N, H, W)
                bool/float at the padded input resolution.

        Returns:
            ``loss_ce``, ``loss_mask``, ``loss_dice`` and ``loss_ce_i``, ``loss_mask_i``,
            ``loss_dice_i`` for i in [0, L), each a scalar float already multiplied by its weight.
        """
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(
                f"{len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]} images"
            )
        num_classes = outputs["pred_logits"].shape[-1] - 1
        labels = torch.cat([t["labels"].reshape(-1) for t in targets])
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"target labels {sorted(set(labels.tolist()))} fall outside the {num_classes} "
                "classes of pred_logits: the dataset's classes and the training vocabulary differ"
            )
        num_masks = self.get_num_masks(targets, outputs["pred_logits"].device)
        main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        rows = mask_feature_rows(main)
        if rows is not None:
            main["mask_feature_rows"] = rows
        losses = self._compute(main, targets, num_masks, suffix="")
        aux_outputs = (outputs.get("aux_outputs") or []) if self.deep_supervision else []
        for i, aux in enumerate(aux_outputs):
            if rows is not None and aux.get("mask_features") is main["mask_features"]:
                aux = {**aux, "mask_feature_rows": rows}  # the decoder's layers share one map
            losses.update(self._compute(aux, targets, num_masks, suffix=f"_{i}"))
        return losses

    def _compute(self, outputs: dict, targets: list[dict], num_masks: float, suffix: str) -> dict:
        indices = self.matcher(outputs, targets)
        out: dict[str, torch.Tensor] = {}
        for group in self.losses:
            fn = self.loss_labels if group == "labels" else self.loss_masks
            for name, value in fn(outputs, targets, indices, num_masks).items():
                out[name + suffix] = value * self.weight_dict.get(
                    name + suffix, self.weight_dict[name]
                )
        return out

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={self.losses}, "
            f"weight_dict={self.weight_dict}, num_points={self.num_points}, "
            f"oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}, "
            f"deep_supervision={self.deep_supervision}"
        )


def matched_masks(outputs: dict, indices: Indices) -> torch.Tensor:
    """(M, h, w) mask logits of the matched queries, image by image in ``indices`` order.

    Where the decoder hands ``mask_embed`` (B, Q, mask_dim) and ``mask_features``
    (B, mask_dim, h, w) beside a detached ``pred_masks`` (training), the rows of ``pred_masks``
    are taken as they are and their gradient goes to ``mask_embed`` and ``mask_features`` through
    those M rows only, instead of through a dense (B, Q, h, w) gradient that is zero but for
    them. Otherwise ``pred_masks`` is indexed.
    """
    pred_masks = outputs["pred_masks"]
    batch_idx, src_idx = _src_permutation_idx(indices)
    batch_idx, src_idx = batch_idx.to(pred_masks.device), src_idx.to(pred_masks.device)
    rows = pred_masks[batch_idx, src_idx]
    if "mask_embed" not in outputs or not torch.is_grad_enabled():
        return rows
    return _MatchedMasks.apply(
        outputs["mask_embed"], outputs["mask_features"], rows, batch_idx, src_idx
    )


class _MatchedMasks(torch.autograd.Function):
    """``rows`` = ``einsum("bqc,bchw->bqhw", embed, features)[batch_idx, src_idx]``, already
    computed (without gradient) by the decoder; backward is that product's, for these rows."""

    @staticmethod
    def forward(ctx, embed, features, rows, batch_idx, src_idx):
        ctx.save_for_backward(embed, features, batch_idx, src_idx)
        return rows.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        embed, features, batch_idx, src_idx = ctx.saved_tensors
        grad_embed = torch.zeros_like(embed)
        per_image = []
        for b in range(features.shape[0]):
            sel = batch_idx == b
            if not bool(sel.any()):
                per_image.append(torch.zeros_like(features[b]))
                continue
            g = grad[sel].flatten(1).to(features.dtype)  # (M_b, h * w)
            q = src_idx[sel]
            grad_embed[b, q] = (g @ features[b].flatten(1).T).to(embed.dtype)
            per_image.append((embed[b, q].T.to(g.dtype) @ g).view_as(features[b]))
        grad_features = per_image[0][None] if len(per_image) == 1 else torch.stack(per_image)
        return grad_embed, grad_features, None, None, None


def _src_permutation_idx(indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for src, _ in indices])
    return batch_idx, src_idx


@LOSSES.register("mask2former")
def build_criterion(
    cfg: LossConfig | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    num_decoder_layers: int = 0,
) -> SetCriterion:
    """Build the matcher and criterion from a :class:`LossConfig`.

    Args:
        cfg: loss settings; a mapping (e.g. an OmegaConf section) with LossConfig's keys, or
            None for the defaults (FC-CLIP's recipe).
        num_classes: number of real classes C of the training vocabulary; None (default) reads
            it from ``pred_logits`` at each call.
        num_decoder_layers: number L of auxiliary outputs, used only to list the aux weights in
            ``weight_dict`` (the criterion accepts any number of ``aux_outputs``).

    Returns:
        the :class:`SetCriterion`; its ``weight_dict`` names every loss it returns.

    Raises:
        TypeError: a mapping with keys that LossConfig does not have (named).
    """
    if cfg is None:
        cfg = LossConfig()
    elif not isinstance(cfg, LossConfig):
        values = dict(cfg.items()) if hasattr(cfg, "items") else vars(cfg)
        values.setdefault("type", "mask2former")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(LossConfig)})
        if unknown:
            raise TypeError(
                f"unknown loss setting(s) {unknown}; LossConfig has {list(vars(LossConfig()))}"
            )
        cfg = LossConfig(**values)
    matcher = HungarianMatcher(
        cost_class=cfg.class_weight,
        cost_mask=cfg.mask_weight,
        cost_dice=cfg.dice_weight,
        num_points=cfg.train_num_points,
    )
    weight_dict = {
        "loss_ce": cfg.class_weight,
        "loss_mask": cfg.mask_weight,
        "loss_dice": cfg.dice_weight,
    }
    if cfg.deep_supervision:
        for i in range(num_decoder_layers):
            weight_dict.update({f"{k}_{i}": v for k, v in list(weight_dict.items())[:3]})
    return SetCriterion(
        num_classes=num_classes,
        matcher=matcher,
        weight_dict=weight_dict,
        eos_coef=cfg.no_object_weight,
        losses=("labels", "masks"),
        num_points=cfg.train_num_points,
        oversample_ratio=cfg.oversample_ratio,
        importance_sample_ratio=cfg.importance_sample_ratio,
        deep_supervision=cfg.deep_supervision,
    )
