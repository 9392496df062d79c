"""Mask2Former's multi-scale deformable-attention pixel decoder, in pure PyTorch.

Parameter names match FC-CLIP/Mask2Former (``input_proj``, ``transformer.encoder.layers``,
``adapter_1``, ``layer_1``, ``mask_features``) so official checkpoints load by a prefix rename.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ovseg.config.schema import PixelDecoderConfig
from ovseg.models.layers import (
    ConvNorm,
    add_into,
    blocked_rows_ok,
    build_norm,
    c2_xavier_fill,
    row_blocks,
)
from ovseg.models.ops.ms_deform_attn import MSDeformAttn
from ovseg.models.position_encoding import PositionEmbeddingSine
from ovseg.models.registry import PIXEL_DECODERS
from ovseg.structures import ShapeSpec


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + ReLU FFN."""

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        dropout: float,
        n_levels: int,
        n_heads: int,
        n_points: int,
        impl: str = "auto",
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, impl=impl)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes):
        """(N, S, C) tokens of all levels -> the same shape."""
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes)
        if blocked_rows_ok(src, attn):
            return self._residual_ffn_blocked(attn, src)
        # The residual adds and the ReLU write into the fresh (N, S, C) / (N, S, d_ffn) outputs
        # of the layers before them (no new full-size buffers; autograd needs none of them).
        src = self.norm1(add_into(self.dropout1(attn), src))
        src2 = self.linear2(self.dropout2(F.relu(self.linear1(src), inplace=True)))
        return self.norm2(add_into(self.dropout3(src2), src))

    def _residual_ffn_blocked(self, attn: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """The layer after the attention, for CPU inference, a block of tokens at a time:
        every op is row-wise, so the values are the full-size ops' (the GEMMs split by rows),
        while the (rows, d_ffn) hidden block stays in the cache instead of a fresh (N, S, d_ffn)
        buffer (73 MB at the ADE size). Dropout is the identity in eval."""

        def block(rows: slice) -> torch.Tensor:
            x = self.norm1(add_into(self.dropout1(attn[:, rows]), src[:, rows]))
            y = self.linear2(self.dropout2(F.relu(self.linear1(x), inplace=True)))
            return self.norm2(add_into(self.dropout3(y), x))

        # A block holds the rows of every image: (N, rows, d_ffn) hidden values.
        hidden_bytes = src.shape[0] * self.linear1.out_features * attn.element_size()
        blocks = iter(row_blocks(src.shape[1], hidden_bytes))
        first = next(blocks)
        y = block(first)
        out = y.new_empty(src.shape)  # the norm's dtype, as the full-size path returns it
        out[:, first] = y
        for rows in blocks:
            out[:, rows] = block(rows)
        return out


class MSDeformAttnEncoder(nn.Module):
    """The encoder layers in sequence. With ``activation_checkpointing`` (true: every layer;
    an integer N: the first N), a forward that needs gradients keeps only those layers'
    inputs and recomputes them in backward."""

    def __init__(
        self,
        layers: Sequence[MSDeformAttnEncoderLayer],
        activation_checkpointing: bool | int = False,
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.activation_checkpointing = activation_checkpointing
        _ = self.checkpointed_layers  # a bad value fails when the model is built

    @property
    def checkpointed_layers(self) -> int:
        """How many of the first layers a training forward recomputes in backward."""
        value = self.activation_checkpointing
        if isinstance(value, bool):
            return len(self.layers) if value else 0
        if not isinstance(value, int) or value < 0:
            raise ValueError(
                "model.pixel_decoder.activation_checkpointing must be true, false or a number "
                f"of encoder layers >= 0; got {value!r}"
            )
        return min(value, len(self.layers))

    @staticmethod
    def reference_points(spatial_shapes, batch: int, device, dtype) -> torch.Tensor:
        """Pixel-centre reference points of every level, (B, S, L, 2) in [0, 1] (no padding)."""
        refs = []
        for h, w in spatial_shapes:
            # arange + 0.5 equals linspace(0.5, h - 0.5, h) exactly (integers + 0.5 are exact
            # in fp32) and, unlike linspace, keeps h symbolic under torch.export.
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=device) + 0.5,
                indexing="ij",
            )
            refs.append(torch.stack((xs.reshape(-1) / w, ys.reshape(-1) / h), -1))
        ref = torch.cat(refs, 0)[None, :, None].expand(batch, -1, len(spatial_shapes), -1)
        return ref.to(dtype)

    def forward(self, src, spatial_shapes, pos):
        ref = self.reference_points(spatial_shapes, src.shape[0], src.device, src.dtype)
        recompute = self.checkpointed_layers if torch.is_grad_enabled() else 0
        for i, layer in enumerate(self.layers):
            if i < recompute:
                src = checkpoint(layer, src, pos, ref, spatial_shapes, use_reentrant=False)
            else:
                src = layer(src, pos, ref, spatial_shapes)
        return src


class MSDeformAttnTransformer(nn.Module):
    """Encoder-only deformable transformer over flattened multi-scale features."""

    def __init__(
        self,
        d_model,
        nhead,
        num_layers,
        dim_feedforward,
        dropout,
        num_levels,
        n_points,
        impl: str = "auto",
        activation_checkpointing: bool | int = False,
    ):
        super().__init__()
        self.encoder = MSDeformAttnEncoder(
            [
                MSDeformAttnEncoderLayer(
                    d_model, dim_feedforward, dropout, num_levels, nhead, n_points, impl
                )
                for _ in range(num_layers)
            ],
            activation_checkpointing,
        )
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]):
        shapes = [(s.shape[2], s.shape[3]) for s in srcs]  # no int(): symbolic under export
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1)
                for i, p in enumerate(pos_embeds)
            ],
            1,
        )
        return self.encoder(src_flat, shapes, pos_flat), shapes


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder: deformable encoder over the coarse levels + FPN up to ``common_stride``.

    Args:
        input_shape: backbone outputs used, name -> ShapeSpec (channels, stride).
        transformer_in_features: the levels the deformable encoder sees (res3..res5).
        conv_dim / mask_dim: hidden channels / mask-feature channels.
        deform_attn_impl: "auto" (gather for CPU inference, else grid_sample),
            "grid_sample" (reference), "gather" (the same arithmetic by row gathers) or
            "embedding_bag" (fastest on CPU, float-rounding differences).
        activation_checkpointing: recompute the deformable encoder layers in backward
            (true: all, an integer N: the first N; training memory for time; see
            :class:`MSDeformAttnEncoder`).

    Forward returns ``mask_features`` (B, mask_dim, H/4, W/4) and ``multi_scale_features``:
    three (B, conv_dim, h, w) maps at strides 32, 16, 8 (the decoder's memory).
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        transformer_in_features: Sequence[str] = ("res3", "res4", "res5"),
        conv_dim: int = 256,
        mask_dim: int = 256,
        norm: str = "GN",
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        common_stride: int = 4,
        deform_attn_impl: str = "auto",
        activation_checkpointing: bool | int = False,
    ):
        super().__init__()
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in ordered]
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"transformer_in_features {missing} are not backbone outputs {self.in_features}"
            )
        t_ordered = [(k, v) for k, v in ordered if k in transformer_in_features]
        self.transformer_in_features = [k for k, _ in t_ordered]
        t_channels = [v.channels for _, v in t_ordered]
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in t_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.transformer = MSDeformAttnTransformer(
            conv_dim,
            num_heads,
            num_layers,
            dim_feedforward,
            dropout,
            len(t_ordered),
            num_points,
            deform_attn_impl,
            activation_checkpointing,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        c2_xavier_fill(self.mask_features)
        self.num_outputs = 3
        min_stride = min(v.stride for _, v in t_ordered)
        self.num_fpn_levels = int(math.log2(min_stride) - math.log2(common_stride))
        use_bias = norm == ""
        self.lateral_names, self.output_names = [], []
        for idx, (_, spec) in enumerate(ordered[: self.num_fpn_levels]):
            lateral = ConvNorm(
                spec.channels,
                conv_dim,
                kernel_size=1,
                bias=use_bias,
                norm=build_norm(norm, conv_dim),
            )
            output = ConvNorm(
                conv_dim,
                conv_dim,
                kernel_size=3,
                padding=1,
                bias=use_bias,
                norm=build_norm(norm, conv_dim),
                activation=torch.relu_,  # in the norm's fresh output (GN's backward needs its input)
            )
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            self.lateral_names.append(f"adapter_{idx + 1}")
            self.output_names.append(f"layer_{idx + 1}")

    def forward(
        self, features: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name]
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        memory, shapes = self.transformer(srcs, pos)
        b = memory.shape[0]
        splits = [h * w for h, w in shapes]
        # Contiguous (B, C, h, w): the transposed views are channels-last in memory, which
        # made the FPN's upsampling and the ops after it copy full-resolution maps.
        outs = [
            z.transpose(1, 2).reshape(b, -1, h, w).contiguous()
            for z, (h, w) in zip(memory.split(splits, dim=1), shapes)
        ]
        fpn_in = self.in_features[: self.num_fpn_levels][::-1]
        for name, lat_name, out_name in zip(
            fpn_in, self.lateral_names[::-1], self.output_names[::-1]
        ):
            cur = getattr(self, lat_name)(features[name])  # fresh: the sum goes into it
            y = add_into(
                cur,
                F.interpolate(outs[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False),
            )
            outs.append(getattr(self, out_name)(y))
        return self.mask_features(outs[-1]), outs[: self.num_outputs]


@PIXEL_DECODERS.register("msdeform")
def build_msdeform_pixel_decoder(
    cfg: PixelDecoderConfig, input_shape: dict[str, ShapeSpec]
) -> MSDeformAttnPixelDecoder:
    """``model.pixel_decoder`` -> :class:`MSDeformAttnPixelDecoder` over the backbone outputs
    named in ``cfg.in_features``."""
    shapes = {k: v for k, v in input_shape.items() if k in cfg.in_features}
    return MSDeformAttnPixelDecoder(
        shapes,
        transformer_in_features=cfg.transformer_in_features,
        conv_dim=cfg.conv_dim,
        mask_dim=cfg.mask_dim,
        norm=cfg.norm,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        num_points=cfg.num_points,
        dim_feedforward=cfg.dim_feedforward,
        dropout=cfg.dropout,
        common_stride=cfg.common_stride,
        deform_attn_impl=cfg.deform_attn_impl,
        activation_checkpointing=cfg.activation_checkpointing,
    )
