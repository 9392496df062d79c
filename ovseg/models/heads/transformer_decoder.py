"""FC-CLIP's masked-attention transformer decoder (Mask2Former with a CLIP-space classifier).

Each query's class embedding is ``class_embed(proj(mask-pooled pixel features) + query)``,
compared by cosine similarity with the text classifier; parameter names match FC-CLIP's
``sem_seg_head.predictor`` so official checkpoints load by a prefix rename.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.config.schema import TransformerDecoderConfig
from ovseg.models.layers import MLP, c2_xavier_fill, mask_pooling, mask_pooling_layers
from ovseg.models.position_encoding import PositionEmbeddingSine
from ovseg.models.registry import TRANSFORMER_DECODERS


def classification_logits(
    x: torch.Tensor,
    text_classifier: torch.Tensor,
    logit_scale: torch.Tensor,
    synonym_index: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """Cosine logits against every synonym, max over each class's synonyms, void column last.

    Args:
        x: (B, Q, D) embeddings (any norm).
        text_classifier: (S + 1, D) L2-normalised synonym embeddings, void embedding last, or
            (B, S + 1, D): one classifier per image (DenseCLIP's context-aware prompts).
        logit_scale: scalar log-scale; ``exp`` is clamped at 100 (CLIP / FC-CLIP).
        synonym_index: (S,) int64 class of each synonym row (class-major, see
            :attr:`ovseg.structures.TextClassifier.synonym_index`).
        num_classes: C.

    Returns:
        (B, Q, C + 1) logits.
    """
    x = F.normalize(x, dim=-1)
    logits = torch.clamp(logit_scale.exp(), max=100) * x @ text_classifier.transpose(-2, -1)
    return synonym_max(logits, synonym_index, num_classes)


def synonym_max(
    logits: torch.Tensor, synonym_index: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """(..., S + 1) -> (..., C + 1): max over each class's synonyms; last column passes through.

    A tensor-only formulation (one ``scatter_reduce``), so traced and exported graphs take any
    vocabulary."""
    syn, void = logits[..., :-1], logits[..., -1:]
    if isinstance(num_classes, int) and syn.shape[-1] == num_classes:
        return logits  # one synonym per class
    shape = (*syn.shape[:-1], num_classes)
    out = torch.full(shape, float("-inf"), dtype=syn.dtype, device=syn.device)
    index = synonym_index.to(syn.device).expand_as(syn)
    out = out.scatter_reduce(-1, index, syn, reduce="amax", include_self=True)
    return torch.cat([out, void], dim=-1)


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        if self.normalize_before:
            t = self.norm(tgt)
            q = t + query_pos
            return tgt + self.self_attn(q, q, value=t, need_weights=False)[0]
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, value=tgt, need_weights=False)[0])


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tgt, memory, memory_mask, pos, query_pos, key=None):
        """tgt / query_pos (Q, B, C) queries, memory / pos (HW, B, C), memory_mask (B, Q, HW)
        bool, True where a query may not attend -> (Q, B, C). ``key``: ``memory + pos`` where
        the caller has formed it (inference forms it once per level for all its layers)."""
        t = self.norm(tgt) if self.normalize_before else tgt
        key = memory + pos if key is None else key
        out = masked_attention(self.multihead_attn, t + query_pos, key, memory, memory_mask)
        return tgt + out if self.normalize_before else self.norm(tgt + out)


def masked_attention(
    attn: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """``attn(query, key, value, attn_mask=..., need_weights=False)[0]`` with one mask per image
    that all heads share.

    ``nn.MultiheadAttention`` takes per-image masks only as (B * heads, Q, S), a copy per head,
    which it then turns into a float ``-inf`` mask: at the ADE size and batch 2, a 218 MB
    buffer per layer at the finest level, filled, masked and copied again (the decoder took
    1.03 s per image at batch 2 against 0.47 s at batch 1; 0.51 s with this). Here the float
    mask is (B, 1, Q, S), broadcast over the heads by ``scaled_dot_product_attention``. The
    other ops are ``F.multi_head_attention_forward``'s (its projections, views and SDPA call),
    so the values are the module's (tested bitwise) and the state dict is unchanged.

    Args:
        attn: a sequence-first module with packed in-projection, no bias_k / bias_v and no
            dropout (as the decoder builds it).
        query: (Q, B, C). key, value: (S, B, C), distinct tensors.
        mask: (B, Q, S) bool, True where a query may not attend.

    Returns:
        (Q, B, C).
    """
    if attn.batch_first or not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.dropout:
        raise ValueError(
            "masked_attention computes a sequence-first nn.MultiheadAttention with a packed "
            "in-projection, no bias_k / bias_v and dropout 0; got batch_first="
            f"{attn.batch_first}, packed={attn._qkv_same_embed_dim}, "
            f"bias_kv={attn.bias_k is not None}, dropout={attn.dropout}"
        )
    q_len, b, c = query.shape
    if mask.shape != (b, q_len, key.shape[0]):
        raise ValueError(
            f"mask must be (B, Q, S) = ({b}, {q_len}, {key.shape[0]}), one per image shared by "
            f"the heads; got {tuple(mask.shape)}"
        )
    heads = attn.num_heads
    hd = c // heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = (None,) * 3 if attn.in_proj_bias is None else attn.in_proj_bias.chunk(3)

    def heads_first(x: torch.Tensor) -> torch.Tensor:  # (L, B, C) -> (B, heads, L, hd)
        return x.view(x.shape[0], b * heads, hd).transpose(0, 1).view(b, heads, -1, hd)

    q = heads_first(F.linear(query, w_q, b_q))
    k = heads_first(F.linear(key, w_k, b_k))
    v = heads_first(F.linear(value, w_v, b_v))
    # As the module's ``_canonical_mask``: the query's dtype, -inf where masked.
    additive = torch.zeros_like(mask, dtype=query.dtype).masked_fill_(mask, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, additive.unsqueeze(1))
    out = out.permute(2, 0, 1, 3).reshape(b * q_len, c)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias).view(q_len, b, c)


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int, normalize_before: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        if self.normalize_before:
            return tgt + self.linear2(F.relu(self.linear1(self.norm(tgt))))
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


def _sequence_first(x: torch.Tensor) -> torch.Tensor:
    """(B, C, HW) -> (HW, B, C), the layout the attention layers take. For one image the
    permuted view is a transposed matrix that the linear layers read as it is; for several it
    is not a matrix, and every key and value projection of every layer copied it, so it is
    copied once here (the same values either way)."""
    x = x.permute(2, 0, 1)
    return x if x.shape[1] == 1 else x.contiguous()


def _may_not_attend(mask_logits: torch.Tensor) -> torch.Tensor:
    """(B, Q, h, w) mask logits -> (B, Q, h * w) bool attention mask, True where a query's mask
    is below 0.5 (Mask2Former's masked attention; every head's)."""
    return (mask_logits.sigmoid().flatten(2) < 0.5).detach()


class MaskedTransformerDecoder(nn.Module):
    """Mask2Former decoder with FC-CLIP's CLIP-space class head.

    Args:
        in_channels: channels of the pixel decoder's multi-scale features.
        hidden_dim, num_queries, num_heads, dim_feedforward: transformer sizes.
        num_layers: decoder layers (prediction heads run ``num_layers + 1`` times).
        mask_dim: channels of the mask features.
        clip_embedding_dim: text-embedding dimension the class head projects to.
    """

    num_feature_levels = 3

    def __init__(
        self,
        in_channels: int,
        *,
        hidden_dim: int = 256,
        num_queries: int = 250,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        num_layers: int = 9,
        pre_norm: bool = False,
        mask_dim: int = 256,
        enforce_input_proj: bool = False,
        clip_embedding_dim: int = 768,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.num_queries = num_queries
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, num_heads, pre_norm) for _ in range(num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, num_heads, pre_norm) for _ in range(num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, pre_norm) for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_proj:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                c2_xavier_fill(conv)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self._mask_pooling_proj = nn.Sequential(
            nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, hidden_dim)
        )
        self.class_embed = MLP(hidden_dim, hidden_dim, clip_embedding_dim, 3)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def forward(
        self,
        features: Sequence[torch.Tensor],
        mask_features: torch.Tensor,
        text_classifier: torch.Tensor,
        synonym_index: torch.Tensor,
        num_classes: int,
        aux_outputs: bool = True,
        query_offset: torch.Tensor | None = None,
    ) -> dict:
        """
        Args:
            features: three (B, C, h, w) memories at strides 32, 16, 8.
            mask_features: (B, mask_dim, H/4, W/4).
            text_classifier: (S + 1, D) normalised synonym embeddings + void.
            synonym_index: (S,) int64 class of each synonym row; num_classes: C.
            aux_outputs: also return the intermediate predictions (training needs them).
            query_offset: (B, hidden_dim) added to every initial query feature (OneFormer's
                task token, :mod:`ovseg.models.oneformer`), optional.

        Returns:
            ``pred_logits`` (B, Q, C + 1), ``pred_masks`` (B, Q, H/4, W/4) and, if asked,
            ``aux_outputs``: a list of ``num_layers`` dicts with the same keys and ``queries``
            (B, Q, hidden_dim): the last layer's normalised query features. With
            ``aux_outputs`` (training) ``pred_masks`` carries no gradient and every dict also
            has ``class_embed`` (B, Q, D), ``mask_embed`` (B, Q, mask_dim) and
            ``mask_features``: ``pred_masks = einsum("bqc,bchw->bqhw", mask_embed,
            mask_features)``, whose gradient the loss forms for the matched queries' rows only
            (:func:`ovseg.models.losses.matched_masks`).
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} feature levels, got {len(features)}"
            )
        src, pos, sizes = [], [], []
        for i, x in enumerate(features):
            sizes.append(x.shape[-2:])
            pos.append(_sequence_first(self.pe_layer(x).flatten(2)))
            src.append(
                _sequence_first(
                    self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]
                )
            )
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)
        if query_offset is not None:
            output = output + query_offset.to(output.dtype).unsqueeze(0)

        if not aux_outputs:
            return self._forward_inference(
                output,
                src,
                pos,
                query_embed,
                sizes,
                mask_features,
                text_classifier,
                synonym_index,
                num_classes,
            )
        # Each layer's masks (without gradient, see _mask_head) come first and steer the next
        # layer's attention; the class heads, which nothing downstream in the loop reads, run
        # after the loop, on one mask pooling of all layers (one backward for all of them).
        heads = [self._mask_head(output, mask_features, sizes[0])]
        for i in range(self.num_layers):
            output = self._layer(i, output, src, pos, query_embed, heads[-1][3])
            heads[-1] = heads[-1][:3]  # the attention mask is spent
            heads.append(
                self._mask_head(output, mask_features, sizes[(i + 1) % self.num_feature_levels])
            )
        pooled = mask_pooling_layers(mask_features, [mask for _, _, mask, *_ in heads])
        predictions = []
        for (decoder_output, mask_embed, mask, *_), p in zip(heads, pooled):
            cls, class_embed = self._class_head(
                p, decoder_output, text_classifier, synonym_index, num_classes
            )
            predictions.append((cls, mask, class_embed, mask_embed))
        # ``class_embed`` (B, Q, D): the queries' embeddings before the text classifier (losses
        # that build their own classifier or distil into them read it, e.g. GKC's).
        # ``mask_embed`` (B, Q, mask_dim) with ``mask_features``: what the gradient of the
        # (detached) ``pred_masks`` flows through (``ovseg.models.losses.matched_masks``).
        keys = ("pred_logits", "pred_masks", "class_embed", "mask_embed")
        out = dict(zip(keys, predictions[-1]), mask_features=mask_features)
        out["aux_outputs"] = [
            dict(zip(keys, p), mask_features=mask_features) for p in predictions[:-1]
        ]
        out["queries"] = self.decoder_norm(output).transpose(0, 1)
        return out

    def _layer(self, i, output, src, pos, query_embed, attn_mask, keys=None):
        """Decoder layer ``i``; ``keys``: each level's ``src + pos``, where already formed."""
        level = i % self.num_feature_levels
        # A query whose mask covers nothing would attend to nothing: let it see everything.
        attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False
        output = self.transformer_cross_attention_layers[i](
            output,
            src[level],
            memory_mask=attn_mask,
            pos=pos[level],
            query_pos=query_embed,
            key=None if keys is None else keys[level],
        )
        output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
        return self.transformer_ffn_layers[i](output)

    def _forward_inference(
        self,
        output,
        src,
        pos,
        query_embed,
        sizes,
        mask_features,
        text_classifier,
        synonym_index,
        num_classes,
    ):
        """Inference needs only the last layer's classes and masks. Intermediate masks only feed
        the next layer's attention mask at a coarse level, and the mask-embedding product
        commutes with bilinear resizing, so they are computed on mask features resized once to
        each level's size instead of at stride 4 (same numbers up to float rounding)."""
        small = [
            F.interpolate(mask_features, size=sz, mode="bilinear", align_corners=False)
            for sz in sizes
        ]
        attn_mask = self._attn_mask(output, small[0])
        # Each level's attention key, formed once for the layers that attend to it (training
        # forms it per layer: one sum per use keeps autograd's gradient sums as they were).
        keys = [m + p for m, p in zip(src, pos)]
        for i in range(self.num_layers):
            output = self._layer(i, output, src, pos, query_embed, attn_mask, keys)
            if i + 1 < self.num_layers:
                attn_mask = self._attn_mask(output, small[(i + 1) % self.num_feature_levels])
        cls, mask = self._heads(output, mask_features, text_classifier, synonym_index, num_classes)
        return {"pred_logits": cls, "pred_masks": mask}

    def _attn_mask(self, output, features):
        mask_embed = self.mask_embed(self.decoder_norm(output).transpose(0, 1))
        attn = torch.einsum("bqc,bchw->bqhw", mask_embed, features)
        return _may_not_attend(attn)

    def _heads(self, output, mask_features, text_classifier, synonym_index, num_classes):
        """Inference's last layer: (B, Q, C + 1) class logits and (B, Q, H/4, W/4) masks."""
        decoder_output, _, outputs_mask, _ = self._mask_head(output, mask_features, None, False)
        pooled = mask_pooling(mask_features, outputs_mask)
        outputs_class, _ = self._class_head(
            pooled, decoder_output, text_classifier, synonym_index, num_classes
        )
        return outputs_class, outputs_mask

    def _mask_head(self, output, mask_features, attn_size, detach_masks: bool = True):
        """A layer's (B, Q, D) normalised queries, (B, Q, mask_dim) ``mask_embed``, (B, Q, H/4,
        W/4) mask logits and, at ``attn_size``, the next layer's attention mask (else None).

        ``detach_masks`` (training) computes the stride-4 masks without gradient: they feed
        the matcher, the attention masks and the pooling weights, none of which
        back-propagates into them; the loss routes the matched rows' gradient to
        ``mask_embed`` / ``mask_features`` (``matched_masks``), so no (B, Q, H/4, W/4)
        gradient is ever formed."""
        decoder_output = self.decoder_norm(output).transpose(0, 1)
        mask_embed = self.mask_embed(decoder_output)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_masks):
            outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        if attn_size is None:
            return decoder_output, mask_embed, outputs_mask, None
        attn = F.interpolate(outputs_mask, size=attn_size, mode="bilinear", align_corners=False)
        return decoder_output, mask_embed, outputs_mask, _may_not_attend(attn)

    def _class_head(self, pooled, decoder_output, text_classifier, synonym_index, num_classes):
        """(B, Q, C + 1) class logits and the (B, Q, D) class embeddings they compare, from a
        layer's (B, Q, mask_dim) mask-pooled pixel features and its normalised queries."""
        class_embed = self.class_embed(self._mask_pooling_proj(pooled) + decoder_output)
        outputs_class = classification_logits(
            class_embed, text_classifier, self.logit_scale, synonym_index, num_classes
        )
        return outputs_class, class_embed


@TRANSFORMER_DECODERS.register("masked_attention")
def build_masked_attention_decoder(
    cfg: TransformerDecoderConfig, *, in_channels: int, mask_dim: int, embed_dim: int
) -> MaskedTransformerDecoder:
    """``model.decoder`` -> :class:`MaskedTransformerDecoder` (Mask2Former with FC-CLIP's
    text-embedding classifier of width ``embed_dim``) over ``in_channels``-wide pixel features."""
    return MaskedTransformerDecoder(
        in_channels,
        hidden_dim=cfg.hidden_dim,
        num_queries=cfg.num_queries,
        num_heads=cfg.num_heads,
        dim_feedforward=cfg.dim_feedforward,
        num_layers=cfg.num_layers,
        pre_norm=cfg.pre_norm,
        mask_dim=mask_dim,
        enforce_input_proj=cfg.enforce_input_proj,
        clip_embedding_dim=embed_dim,
    )
