"""CLIP with open_clip's ModifiedResNet image tower (RN50, RN101, RN50x4, ...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from torch import nn

from ovseg.models.backbones.base import Backbone
from ovseg.models.backbones.registry import BACKBONES
from ovseg.structures import ShapeSpec


@BACKBONES.register("clip_resnet")
class CLIPResNetBackbone(Backbone):
    """res2..res5 = layer1..layer4; ``clip_vis_dense`` = layer4's output; masks are pooled with
    the CLIP ``attnpool`` weights (FC-CLIP's ``visual_prediction_forward_resnet``).

    The stem is run explicitly (as FC-CLIP does); the fixture tests pin these numbers.
    """

    @classmethod
    def accepts(cls, visual: nn.Module) -> bool:
        return isinstance(visual, ModifiedResNet)

    def _read_shapes(self) -> dict[str, ShapeSpec]:
        v = self.clip_model.visual
        chans = [int(getattr(v, f"layer{k}")[-1].conv3.out_channels) for k in range(1, 5)]
        return {f"res{i + 2}": ShapeSpec(c, 2 ** (i + 2)) for i, c in enumerate(chans)}

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.clip_model.visual
        x = v.act1(v.bn1(v.conv1(x)))
        x = v.act2(v.bn2(v.conv2(x)))
        x = v.act3(v.bn3(v.conv3(x)))
        x = v.avgpool(x)
        out = {}
        for k in range(1, 5):
            x = getattr(v, f"layer{k}")(x)
            out[f"res{k + 1}"] = x
        out["clip_vis_dense"] = x
        return out

    def _pool(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self._attnpool_masks(dense, masks)

    def _attnpool_masks(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        pool = self.clip_model.visual.attnpool
        b, c, h, w = x.shape
        q = masks.shape[1]
        pos = pool.positional_embedding.to(x.dtype)
        g = int(round((int(pos.shape[0]) - 1) ** 0.5))  # int: a traced shape is a tensor
        spatial = pos[1:].T.reshape(1, c, g, g)
        spatial = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=False)
        spatial = spatial.permute(2, 3, 0, 1).reshape(h * w, 1, c)
        tokens = x.reshape(b, c, h * w).permute(2, 0, 1)  # (HW, B, C)
        key_value = tokens + spatial
        query = (tokens.mean(0, keepdim=True) + pos[:1, None, :]).repeat_interleave(q, dim=0)
        blocked = (masks.reshape(b, q, h * w) > 0).logical_not()
        attn_mask = (
            blocked.unsqueeze(1)
            .expand(-1, pool.num_heads, -1, -1)
            .reshape(b * pool.num_heads, q, h * w)
        )
        out = F.multi_head_attention_forward(
            query=query,
            key=key_value,
            value=key_value,
            embed_dim_to_check=c,
            num_heads=pool.num_heads,
            q_proj_weight=pool.q_proj.weight,
            k_proj_weight=pool.k_proj.weight,
            v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=pool.c_proj.weight,
            out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True,
            training=False,
            need_weights=False,
            attn_mask=attn_mask,
        )[0]
        return out.permute(1, 0, 2)
