"""OpenSD's decoupled thing / stuff decoding (Li et al., 2023) on FC-CLIP's masked-attention decoder.

The queries are split in two groups: the first ``num_thing_queries`` are *thing* queries, the
last ``num_stuff_queries`` *stuff* queries. Every layer runs

1. masked cross-attention to the pixel features, with separate layers (weights) per group, each
   group under its own queries' attention masks;
2. one self-attention over all queries (shared, so things and stuff still see each other);
3. a feed-forward layer per group.

The prediction heads (mask embedding, CLIP-space class head, logit scale) are shared, so the
outputs have FC-CLIP's keys and shapes with Q = thing + stuff queries; the training outputs add
``query_is_thing`` (Q,) bool, which makes :class:`ovseg.models.losses.HungarianMatcher` match
thing queries to thing targets only and stuff queries to stuff targets only.

OpenSD guides the thing queries' cross-attention by their boxes (deformable attention); here both
groups use Mask2Former's masked attention. At inference every query is classified over the whole
vocabulary by FC-CLIP's in- / out-of-vocabulary classifiers and ensemble (no thing / stuff
restriction), so inference, export and post-processing are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ovseg.config import ConfigError
from ovseg.config.schema import TransformerDecoderConfig
from ovseg.models.heads.transformer_decoder import (
    CrossAttentionLayer,
    FFNLayer,
    MaskedTransformerDecoder,
)
from ovseg.models.registry import TRANSFORMER_DECODERS


class DecoupledTransformerDecoder(MaskedTransformerDecoder):
    """:class:`MaskedTransformerDecoder` with separate thing and stuff query groups.

    The thing group reuses the parent's ``transformer_cross_attention_layers`` and
    ``transformer_ffn_layers``; the stuff group has ``stuff_cross_attention_layers`` and
    ``stuff_ffn_layers``; ``transformer_self_attention_layers`` is shared.

    Args:
        in_channels: channels of the pixel decoder's multi-scale features.
        num_thing_queries, num_stuff_queries: queries per group (both >= 1).
        **kwargs: the parent's sizes (``hidden_dim``, ``num_heads``, ...), ``num_queries`` aside.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_thing_queries: int = 200,
        num_stuff_queries: int = 50,
        hidden_dim: int = 256,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        num_layers: int = 9,
        pre_norm: bool = False,
        **kwargs,
    ):
        if num_thing_queries < 1 or num_stuff_queries < 1:
            raise ValueError(
                f"the decoupled decoder needs >= 1 thing and >= 1 stuff query; got "
                f"{num_thing_queries} thing and {num_stuff_queries} stuff queries"
            )
        super().__init__(
            in_channels,
            hidden_dim=hidden_dim,
            num_queries=num_thing_queries + num_stuff_queries,
            num_heads=num_heads,
            dim_feedforward=dim_feedforward,
            num_layers=num_layers,
            pre_norm=pre_norm,
            **kwargs,
        )
        self.num_thing_queries = num_thing_queries
        self.num_stuff_queries = num_stuff_queries
        self.stuff_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, num_heads, pre_norm) for _ in range(num_layers)
        )
        self.stuff_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, pre_norm) for _ in range(num_layers)
        )
        is_thing = torch.arange(self.num_queries) < num_thing_queries
        # Derived from the sizes, so not part of checkpoints.
        self.register_buffer("query_is_thing", is_thing, persistent=False)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        mask_features: torch.Tensor,
        text_classifier: torch.Tensor,
        synonym_index: torch.Tensor,
        num_classes: int,
        aux_outputs: bool = True,
    ) -> dict:
        """The parent's outputs; with ``aux_outputs`` (training) every output dict also has
        ``query_is_thing`` (Q,) bool, True for the first ``num_thing_queries`` queries."""
        out = super().forward(
            features, mask_features, text_classifier, synonym_index, num_classes, aux_outputs
        )
        if aux_outputs:
            for o in (out, *out["aux_outputs"]):
                o["query_is_thing"] = self.query_is_thing
        return out

    def cross_attend(self, i, output, src, pos, query_embed, attn_mask, keys=None) -> torch.Tensor:
        """Layer ``i``'s masked cross-attention: thing queries through the thing layer under their
        own rows of ``attn_mask``, stuff queries through the stuff layer under theirs.

        Args:
            output, query_embed: (Q, B, hidden) query features and positions.
            src, pos: per-level (HW, B, hidden) memories and their positions.
            attn_mask: (B, Q, HW) bool "may not attend" (every head's).
            keys: per-level ``src + pos`` where already formed (inference), else None.

        Returns:
            (Q, B, hidden).
        """
        level = i % self.num_feature_levels
        t = self.num_thing_queries
        # A query whose mask covers nothing would attend to nothing: let it see everything.
        attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False
        groups = (
            (self.transformer_cross_attention_layers[i], slice(0, t)),
            (self.stuff_cross_attention_layers[i], slice(t, None)),
        )
        return torch.cat(
            [
                layer(
                    output[rows],
                    src[level],
                    memory_mask=attn_mask[..., rows, :],
                    pos=pos[level],
                    query_pos=query_embed[rows],
                    key=None if keys is None else keys[level],
                )
                for layer, rows in groups
            ]
        )

    def _layer(self, i, output, src, pos, query_embed, attn_mask, keys=None):
        output = self.cross_attend(i, output, src, pos, query_embed, attn_mask, keys)
        output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
        t = self.num_thing_queries
        return torch.cat(
            [self.transformer_ffn_layers[i](output[:t]), self.stuff_ffn_layers[i](output[t:])]
        )


@TRANSFORMER_DECODERS.register("decoupled")
def build_decoupled_decoder(
    cfg: TransformerDecoderConfig, *, in_channels: int, mask_dim: int, embed_dim: int
) -> DecoupledTransformerDecoder:
    """``model.decoder`` (``type: decoupled``) -> :class:`DecoupledTransformerDecoder`.

    Raises:
        ConfigError: ``num_thing_queries`` / ``num_stuff_queries`` unset (< 1), or their sum is
            not ``num_queries``.
    """
    things, stuff = cfg.num_thing_queries, cfg.num_stuff_queries
    if things < 1 or stuff < 1:
        raise ConfigError(
            "model.decoder.type=decoupled needs model.decoder.num_thing_queries >= 1 and "
            f"model.decoder.num_stuff_queries >= 1; got {things} and {stuff}"
        )
    if things + stuff != cfg.num_queries:
        raise ConfigError(
            f"model.decoder.num_queries={cfg.num_queries} must equal num_thing_queries + "
            f"num_stuff_queries = {things} + {stuff} = {things + stuff}"
        )
    return DecoupledTransformerDecoder(
        in_channels,
        num_thing_queries=things,
        num_stuff_queries=stuff,
        hidden_dim=cfg.hidden_dim,
        num_heads=cfg.num_heads,
        dim_feedforward=cfg.dim_feedforward,
        num_layers=cfg.num_layers,
        pre_norm=cfg.pre_norm,
        mask_dim=mask_dim,
        enforce_input_proj=cfg.enforce_input_proj,
        clip_embedding_dim=embed_dim,
    )
