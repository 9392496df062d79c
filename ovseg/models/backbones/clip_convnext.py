"""CLIP with a timm ConvNeXt image tower (FC-CLIP's default, e.g. ``convnext_large_d_320``)."""

from __future__ import annotations

import torch
from torch import nn

from ovseg.models.backbones.base import Backbone
from ovseg.models.backbones.registry import BACKBONES
from ovseg.models.layers import mask_pooling
from ovseg.structures import ShapeSpec


@BACKBONES.register("clip_convnext")
class CLIPConvNeXtBackbone(Backbone):
    """res2..res5 = the four ConvNeXt stages; ``clip_vis_dense`` = ``norm_pre`` of the last one.

    The stages are run explicitly (``stem`` then ``stages[i]``): it is what FC-CLIP does and
    the official fixture tests pin these numbers.
    """

    @classmethod
    def accepts(cls, visual: nn.Module) -> bool:
        trunk = getattr(visual, "trunk", None)
        return trunk is not None and hasattr(trunk, "stages") and hasattr(trunk, "feature_info")

    def _read_shapes(self) -> dict[str, ShapeSpec]:
        info = self.clip_model.visual.trunk.feature_info[-4:]
        return {
            f"res{i + 2}": ShapeSpec(int(f["num_chs"]), 2 ** (i + 2)) for i, f in enumerate(info)
        }

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        trunk = self.clip_model.visual.trunk
        out = {}
        x = trunk.stem(x)
        for i in range(4):
            x = trunk.stages[i](x)
            out[f"res{i + 2}"] = x
        out["clip_vis_dense"] = trunk.norm_pre(x)
        return out

    def visual_context(self, dense: torch.Tensor) -> torch.Tensor:
        """The global token (mean-pooled map) and every position through the CLIP head."""
        with torch.no_grad():
            b, c, h, w = dense.shape
            x = torch.cat([dense.mean((2, 3))[:, None], dense.flatten(2).transpose(1, 2)], 1)
            x = self.clip_model.visual.trunk.head(x.reshape(-1, c, 1, 1))
            return self.clip_model.visual.head(x).view(b, 1 + h * w, -1)

    def _pool(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mean-pool inside each mask, then the CLIP head (trunk head + projection)."""
        pooled = mask_pooling(dense, masks)
        b, q, c = pooled.shape
        x = self.clip_model.visual.trunk.head(pooled.reshape(b * q, c, 1, 1))
        x = self.clip_model.visual.head(x)
        return x.view(b, q, -1)
