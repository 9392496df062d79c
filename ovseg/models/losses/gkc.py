"""GKC's training losses (Han et al., ICCV 2023, "Global Knowledge Calibration for Fast
Open-Vocabulary Segmentation"), implemented from the paper's description (docs/gkc.md).

Both are added to Mask2Former's set criterion (``model.loss.type: gkc``), on the same Hungarian
matching of each decoder layer:

* **Text diversification** (``model.loss.gkc.diversify``): per image, every ground-truth segment
  is labelled with a synonym drawn uniformly from its class's (allowed) synonyms. The image's
  classifier starts with one column per class (its first synonym, the class name); the first
  draw for a class replaces that class's column, a different synonym drawn later for the same
  class adds a column. A cross-entropy over these per-image columns (void last, the plain
  no-object weight) is computed from the decoder's ``class_embed``; a matched query's softmax
  leaves out the other columns of its own class (they are not negatives).
* **Text-guided knowledge distillation** (``model.loss.gkc.distill``): for each matched segment
  (at most ``max_regions`` per batch), the frozen CLIP's global embedding ``v`` of the segment
  alone (outside the mask painted grey 128, cropped to the mask box, resized to the tower's
  input size) teaches ``c = norm(W class_embed)`` of the matched query (``W`` learnt). Loss:
  ``sum_i ||v_i - c_i||^2 / N`` plus the structure term ``mean_ij (s t_i.t_j - v_i.c_j)^2``
  (``t`` the text rows of the regions' classes, ``s`` learnt, init 1), over the regions of the
  global batch (gathered across ranks under DDP).

Synonym draws come from a generator seeded by (``gkc.seed``, the criterion's draw counter, the
sample's dataset index): the counter is a checkpointed buffer, so a resumed run draws what the
straight run drew, and the draws do not depend on how the batch is split over ranks.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovseg.config.loader import ConfigError
from ovseg.config.loss import GKCConfig, LossConfig
from ovseg.models.heads.transformer_decoder import classification_logits
from ovseg.models.registry import LOSSES
from ovseg.utils import dist

from .criterion import Indices, SetCriterion, build_criterion

GREY = 128.0


# ---------------------------------------------------------------------- text diversification
def draw_seed(seed: int, step: int, index: int) -> int:
    """A 63-bit generator seed from (run seed, draw step, sample index), well mixed."""
    digest = hashlib.sha256(f"gkc:{seed}:{step}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class SynonymColumns:
    """One image's diversified classifier.

    Attributes:
        rows: (K,) the text-classifier row (synonym) of each column; ``rows[c]`` for c < C is
            class c's column.
        classes: (K,) the class of each column.
        targets: (N,) the column each ground-truth segment is labelled with.
    """

    rows: list[int]
    classes: list[int]
    targets: list[int]


def synonym_columns(
    labels: Sequence[int],
    num_synonyms: Sequence[int],
    generator: torch.Generator,
    allowed: Sequence[Sequence[int]] | None = None,
) -> SynonymColumns:
    """Draw a synonym per segment and build the image's columns (see the module doc).

    Args:
        labels: (N,) class of each ground-truth segment, in target order.
        num_synonyms: (C,) synonyms per class; class c's rows are
            ``sum(num_synonyms[:c]) + k`` for k < ``num_synonyms[c]`` (class-major).
        generator: one ``torch.randint`` draw per segment, in order.
        allowed: per segment, the synonym numbers k it may draw (the CLIP-score filter);
            None: all of its class's synonyms.
    """
    first = np.concatenate([[0], np.cumsum(num_synonyms)[:-1]]).astype(int).tolist()
    rows = list(first)
    classes = list(range(len(num_synonyms)))
    drawn: dict[int, list[int]] = {}  # class -> its columns in this image
    targets = []
    for j, c in enumerate(int(x) for x in labels):
        choices = list(allowed[j]) if allowed is not None else list(range(num_synonyms[c]))
        k = choices[int(torch.randint(len(choices), (), generator=generator))]
        row = first[c] + k
        cols = drawn.get(c)
        if cols is None:  # first draw for the class: it takes over the class's column
            rows[c] = row
            drawn[c] = [c]
            targets.append(c)
            continue
        same = [col for col in cols if rows[col] == row]
        if same:
            targets.append(same[0])
        else:  # another synonym of a class already drawn: a new column
            rows.append(row)
            classes.append(c)
            cols.append(len(rows) - 1)
            targets.append(len(rows) - 1)
    return SynonymColumns(rows, classes, targets)


def diversified_ce_sums(
    class_embed: torch.Tensor,
    columns: torch.Tensor,
    column_classes: torch.Tensor,
    logit_scale: torch.Tensor,
    src: torch.Tensor,
    target_columns: torch.Tensor,
    eos_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's weighted cross-entropy against its own columns, as (sum w*ce, sum w).

    Args:
        class_embed: (Q, D) the queries' class embeddings.
        columns: (K + 1, D) normalised text columns, void last.
        column_classes: (K,) the class of each non-void column.
        logit_scale: the decoder's log logit scale (``exp`` clamped at 100).
        src: (M,) matched queries; target_columns: (M,) their columns.
        eos_coef: weight of the void target (unmatched queries).
    """
    k = columns.shape[0] - 1
    index = torch.arange(k + 1, device=columns.device)
    logits = classification_logits(class_embed[None], columns, logit_scale, index[:-1], k)[0]
    target = torch.full((class_embed.shape[0],), k, dtype=torch.int64, device=logits.device)
    target[src] = target_columns
    # A matched query's other columns of its own class are synonyms, not negatives.
    own = torch.zeros_like(logits, dtype=torch.bool)
    if len(src):
        cls = column_classes[target_columns]
        own[src, :k] = (column_classes[None] == cls[:, None]) & (
            index[None, :k] != target_columns[:, None]
        )
    logits = logits.masked_fill(own, float("-inf"))
    weight = torch.where(target == k, eos_coef, 1.0).to(logits.dtype)
    ce = F.cross_entropy(logits, target, reduction="none")
    return (weight * ce).sum(), weight.sum()


# ---------------------------------------------------------------------- distillation
def grey_crop(image: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """The segment alone, as the teacher sees it.

    Args:
        image: (3, H, W) RGB on the 0-255 scale (uint8 or float).
        mask: (H, W) bool, not empty.
        size: output side.

    Returns:
        (3, size, size) float 0-255: pixels outside ``mask`` painted (128, 128, 128), cropped to
        the mask's box, resized bilinearly (``align_corners=False``).
    """
    ys, xs = torch.nonzero(mask, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    crop = image[:, y0:y1, x0:x1].float()
    crop = torch.where(mask[None, y0:y1, x0:x1].bool(), crop, torch.full_like(crop, GREY))
    if crop.shape[-2:] == (size, size):
        return crop
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def tower_input_size(backbone: nn.Module) -> int:
    """The CLIP image tower's input side (open_clip's ``image_size``; 224 if it has none)."""
    size = getattr(backbone.clip_model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


@torch.no_grad()
def crop_embeddings(
    backbone: nn.Module,
    images: torch.Tensor,
    masks: Sequence[tuple[int, torch.Tensor]],
    size: int,
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    chunk: int = 32,
) -> torch.Tensor:
    """(N, D) L2-normalised global embeddings of the frozen CLIP for the grey crops of
    ``masks`` ((image number, (H, W) mask) pairs) of ``images`` (B, 3, H, W) 0-255, ``chunk``
    crops per forward. The global embedding is the tower's dense map pooled over the whole
    crop through the CLIP head (:meth:`Backbone.pool_masks` with an all-inside mask)."""
    out = []
    for start in range(0, len(masks), chunk):
        part = masks[start : start + chunk]
        crops = torch.stack([grey_crop(images[b], m, size) for b, m in part])
        x = (crops.to(pixel_mean.device) - pixel_mean) / pixel_std
        dense = backbone(x)["clip_vis_dense"]
        inside = torch.ones(
            (len(part), 1, *dense.shape[-2:]), dtype=dense.dtype, device=dense.device
        )
        out.append(F.normalize(backbone.pool_masks(dense, inside)[:, 0].float(), dim=-1))
    return torch.cat(out)


def distillation_terms(
    v: torch.Tensor, c: torch.Tensor, t: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """GKC's distillation on N regions.

    Args:
        v: (N, D) teacher embeddings; c: (N, D) students; t: (N, D) text rows of the regions'
            classes; s: scalar scale of the text similarities.

    Returns:
        ``sum_i ||v_i - c_i||^2`` (divide by the region count) and the structure term
        ``mean_ij (s * t_i.t_j - v_i.c_j)^2``.
    """
    l2 = ((v - c) ** 2).sum()
    structure = ((s * (t @ t.T) - v @ c.T) ** 2).mean()
    return l2, structure


def _global_count(n: int) -> float:
    """Average count per rank over the global batch, at least 1 (the mask losses' normaliser)."""
    total = float(dist.all_reduce_sum(np.array([n], dtype=np.float64))[0])
    return max(total / dist.get_world_size(), 1.0)


# ---------------------------------------------------------------------- the criterion
@dataclass
class _Batch:
    """What the GKC terms of one training forward share across decoder layers."""

    columns: list[torch.Tensor] | None  # per image (K_b + 1, D), void last
    column_classes: list[torch.Tensor] | None  # per image (K_b,)
    segment_columns: list[torch.Tensor] | None  # per image (N_b,)
    regions: list[tuple[int, int]]  # distilled (image, target) pairs
    teacher: torch.Tensor | None  # (len(regions), D)
    region_text: torch.Tensor | None  # (len(regions), D)
    logit_scale: torch.Tensor


class GKCCriterion(SetCriterion):
    """:class:`SetCriterion` plus GKC's diversified cross-entropy (every decoder layer, as the
    plain one) and text-guided distillation (last layer). Extra loss entries:
    ``loss_gkc_ce`` (``_i`` per auxiliary layer), ``loss_gkc_distill``, ``loss_gkc_structure``.

    Args:
        gkc: the options; embed_dim: width D of the class embeddings and of the CLIP space.
        Other arguments: :class:`SetCriterion`'s.
    """

    wants_context = True  # FCCLIP.forward passes the model, batch and text classifier

    def __init__(self, *args: Any, gkc: GKCConfig, embed_dim: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gkc = gkc
        # Training forwards so far: part of the synonym draws' seed, restored on resume.
        self.register_buffer("draw_step", torch.zeros((), dtype=torch.int64))
        if gkc.distill:
            self.distill_proj = nn.Linear(embed_dim, embed_dim)
            self.structure_scale = nn.Parameter(torch.ones(()))
        self._batch: _Batch | None = None

    def forward(
        self, outputs: dict, targets: list[dict], context: Mapping[str, Any] | None = None
    ) -> dict[str, torch.Tensor]:
        """:meth:`SetCriterion.forward`; with ``context`` (``model``, ``batch``, ``text``,
        ``vocabulary``, from :meth:`FCCLIP.forward`) also the GKC terms."""
        if context is None:
            return super().forward(outputs, targets)
        step = int(self.draw_step)
        with torch.no_grad():
            self.draw_step += 1
        self._batch = self._prepare(outputs, targets, context, step)
        try:
            return super().forward(outputs, targets)
        finally:
            self._batch = None

    def _prepare(self, outputs: dict, targets: list[dict], context: Mapping[str, Any], step: int):
        model, batch, text, vocab = (context[k] for k in ("model", "batch", "text", "vocabulary"))
        g = self.gkc
        num_synonyms = [len(c.synonyms) for c in vocab]
        emb = text.embeddings.to(model.device).float()
        if emb.shape[0] != sum(num_synonyms):
            raise ConfigError(
                f"model.loss.gkc needs one text-classifier row per synonym ({sum(num_synonyms)}); "
                f"the text encoder gives {emb.shape[0]} (use model.text.synonym_combination=max "
                "and no class descriptions)"
            )
        first = torch.as_tensor(
            np.concatenate([[0], np.cumsum(num_synonyms)[:-1]]), dtype=torch.long
        )
        images = batch["images"].to(model.device)
        segments = [(b, j) for b, t in enumerate(targets) for j in range(len(t["labels"]))]
        regions = segments[: g.max_regions] if g.distill else []
        need = segments if (g.diversify and g.synonym_clip_filter is not None) else regions
        size = g.teacher_size or tower_input_size(model.backbone)
        teacher = None
        if need:
            masks = [(b, targets[b]["masks"][j].bool()) for b, j in need]
            masks = [(b, m[: images.shape[-2], : images.shape[-1]]) for b, m in masks]
            teacher = crop_embeddings(
                model.backbone, images, masks, size, model.pixel_mean, model.pixel_std,
                g.teacher_batch,
            )  # fmt: skip
        columns = column_classes = segment_columns = None
        if g.diversify:
            indices = batch.get("indices") or list(range(len(targets)))
            with_void = model.classifier_with_void(emb)
            columns, column_classes, segment_columns = [], [], []
            n = 0
            for b, t in enumerate(targets):
                labels = t["labels"].tolist()
                allowed = None
                if g.synonym_clip_filter is not None:
                    allowed = []
                    for j, c in enumerate(labels):
                        rows = emb[first[c] : first[c] + num_synonyms[c]]
                        keep = torch.nonzero(rows @ teacher[n + j] > g.synonym_clip_filter)
                        allowed.append(keep.flatten().tolist() or [0])
                n += len(labels)
                gen = torch.Generator().manual_seed(draw_seed(g.seed, step, int(indices[b])))
                cols = synonym_columns(labels, num_synonyms, gen, allowed)
                rows = torch.as_tensor(cols.rows, device=emb.device)
                columns.append(torch.cat([emb[rows], with_void[-1:]]))
                column_classes.append(torch.as_tensor(cols.classes, device=emb.device))
                segment_columns.append(torch.as_tensor(cols.targets, dtype=torch.long))
        region_text = None
        if regions:
            labels = torch.stack([targets[b]["labels"][j] for b, j in regions]).cpu()
            region_text = emb[first[labels].to(emb.device)]
            if need is not regions:  # the filter's crops cover every segment, regions first
                teacher = teacher[: len(regions)]
        return _Batch(
            columns, column_classes, segment_columns, regions, teacher, region_text,
            model.predictor.logit_scale,
        )  # fmt: skip

    def _compute(self, outputs: dict, targets: list[dict], num_masks: float, suffix: str) -> dict:
        if self._batch is None:
            return super()._compute(outputs, targets, num_masks, suffix)
        indices = self.matcher(outputs, targets)
        out: dict[str, torch.Tensor] = {}
        for group in self.losses:
            fn = self.loss_labels if group == "labels" else self.loss_masks
            for name, value in fn(outputs, targets, indices, num_masks).items():
                out[name + suffix] = value * self._weight(name, suffix)
        if self.gkc.diversify:
            out["loss_gkc_ce" + suffix] = self._diversified_ce(outputs, indices) * self._weight(
                "loss_gkc_ce", suffix
            )
        if self.gkc.distill and not suffix:
            l2, structure = self._distill(outputs, indices)
            out["loss_gkc_distill"] = l2 * self._weight("loss_gkc_distill", "")
            out["loss_gkc_structure"] = structure * self._weight("loss_gkc_structure", "")
        return out

    def _weight(self, name: str, suffix: str) -> float:
        return self.weight_dict.get(name + suffix, self.weight_dict[name])

    def _diversified_ce(self, outputs: dict, indices: Indices) -> torch.Tensor:
        state = self._batch
        emb = outputs["class_embed"].float()
        num = emb.new_zeros(())
        den = emb.new_zeros(())
        for b, (src, tgt) in enumerate(indices):
            cols = state.segment_columns[b][tgt.cpu()].to(emb.device)
            n, d = diversified_ce_sums(
                emb[b], state.columns[b], state.column_classes[b], state.logit_scale,
                src.to(emb.device), cols, self.eos_coef,
            )  # fmt: skip
            num, den = num + n, den + d
        return num / den

    def _distill(self, outputs: dict, indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
        state = self._batch
        emb = outputs["class_embed"].float()
        query = [dict(zip(tgt.tolist(), src.tolist())) for src, tgt in indices]
        q = torch.as_tensor([query[b][j] for b, j in state.regions], dtype=torch.long)
        b = torch.as_tensor([b for b, _ in state.regions], dtype=torch.long)
        # Even without regions the projection runs (on 0 rows): every parameter gets a
        # gradient and every rank joins the gathers (DDP).
        c = F.normalize(self.distill_proj(emb[b.to(emb.device), q.to(emb.device)]), dim=-1)
        v = state.teacher if state.regions else c.new_zeros(c.shape)
        t = state.region_text if state.regions else c.new_zeros(c.shape)
        l2 = ((v - c) ** 2).sum() / _global_count(len(state.regions))
        # The structure term pairs the regions of the whole global batch (gathered over ranks).
        v_all, c_all, t_all = (
            dist.all_gather_with_grad(v),
            dist.all_gather_with_grad(c),
            dist.all_gather_with_grad(t),
        )
        s = self.structure_scale
        if v_all.shape[0] == 0:
            return l2 + emb.sum() * 0, s * 0 + c.sum() * 0
        _, structure = distillation_terms(v_all, c_all, t_all, s)
        return l2, structure

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gkc={self.gkc}"


@LOSSES.register("gkc")
def build_gkc_criterion(
    cfg: LossConfig | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    num_decoder_layers: int = 0,
    embed_dim: int = 768,
) -> GKCCriterion:
    """:func:`build_criterion`'s criterion with GKC's terms (``cfg.gkc``) on top; ``embed_dim``
    is the text-embedding width D (the distillation's projection is D x D)."""
    if cfg is not None and not isinstance(cfg, LossConfig):
        cfg = LossConfig(**{"type": "gkc", **dict(cfg.items())})
    cfg = cfg or LossConfig(type="gkc")
    plain = build_criterion(cfg, num_classes, num_decoder_layers)
    g = cfg.gkc
    weights = dict(plain.weight_dict)
    weights.update(
        loss_gkc_ce=g.diversify_weight,
        loss_gkc_distill=g.distill_weight,
        loss_gkc_structure=g.distill_weight,
    )
    args = {f: getattr(plain, f) for f in ("num_classes", "matcher", "eos_coef", "losses")}
    args.update(
        {
            f: getattr(plain, f)
            for f in ("num_points", "oversample_ratio", "importance_sample_ratio")
        }
    )
    return GKCCriterion(
        weight_dict=weights,
        deep_supervision=plain.deep_supervision,
        gkc=dataclasses.replace(g),
        embed_dim=embed_dim,
        **args,
    )
