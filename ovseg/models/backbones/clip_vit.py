"""CLIP with an open_clip VisionTransformer image tower (ViT-B/16, ...) and a trainable simple
feature pyramid (ViTDet) built from the last block's patch tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn

from ovseg.models.backbones.base import Backbone
from ovseg.models.backbones.registry import BACKBONES
from ovseg.models.layers import mask_pooling
from ovseg.structures import ShapeSpec


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """1x1 conv + norm, 3x3 conv + norm (ViTDet's lateral + output convs)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.GroupNorm(32 if cout % 32 == 0 else 1, cout),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(32 if cout % 32 == 0 else 1, cout),
    )


@BACKBONES.register("clip_vit")
class CLIPViTBackbone(Backbone):
    """res2..res5 from a stride-16 patch map: 2 deconvs (4), 1 deconv (8), identity (16),
    maxpool (32); ``clip_vis_dense`` = patch tokens after ``ln_post`` and ``proj`` (B, D, h, w).

    The pyramid (``pyramid.``) is trainable; the CLIP tower stays frozen. The explicit token
    path (not open_clip's ``forward_intermediates``) is used because the positional embedding
    must be interpolated to the input grid.

    Args:
        pyramid_channels: channels of res2..res5.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        name: str = "",
        pretrained: str | None = None,
        pyramid_channels: int = 256,
    ):
        self.pyramid_channels = pyramid_channels
        super().__init__(clip_model, name, pretrained)
        v = clip_model.visual
        width = int(v.conv1.out_channels)
        self.patch = int(v.conv1.kernel_size[0])
        half = width // 2
        c = pyramid_channels
        self.pyramid = nn.ModuleDict(
            {
                "res2": nn.Sequential(
                    nn.ConvTranspose2d(width, half, 2, 2),
                    nn.GroupNorm(1, half),
                    nn.GELU(),
                    nn.ConvTranspose2d(half, half // 2, 2, 2),
                    _conv_block(half // 2, c),
                ),
                "res3": nn.Sequential(nn.ConvTranspose2d(width, half, 2, 2), _conv_block(half, c)),
                "res4": _conv_block(width, c),
                "res5": nn.Sequential(nn.MaxPool2d(2), _conv_block(width, c)),
            }
        )

    @classmethod
    def accepts(cls, visual: nn.Module) -> bool:
        return isinstance(visual, VisionTransformer)

    def _read_shapes(self) -> dict[str, ShapeSpec]:
        return {f"res{i + 2}": ShapeSpec(self.pyramid_channels, 2 ** (i + 2)) for i in range(4)}

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(B, 3, H, W) -> last-block tokens (B, 1 + h*w, width), grid h, w."""
        v = self.clip_model.visual
        x = v.conv1(x)
        b, width, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(b, 1, -1)
        pos = v.positional_embedding.to(x.dtype)
        g = int(round((pos.shape[0] - 1) ** 0.5))
        grid = pos[1:].T.reshape(1, width, g, g)
        if (h, w) != (g, g):
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:1], grid.reshape(width, h * w).T], dim=0)
        x = torch.cat([cls, x], dim=1) + pos
        x = v.ln_pre(x)
        x = v.transformer(x)
        return x, h, w

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            tokens, h, w = self._tokens(x)
            v = self.clip_model.visual
            dense = v.ln_post(tokens[:, 1:])
            if v.proj is not None:
                dense = dense @ v.proj
            b = tokens.shape[0]
            dense = dense.transpose(1, 2).reshape(b, -1, h, w)
            patch_map = tokens[:, 1:].transpose(1, 2).reshape(b, -1, h, w)
        out = {k: m(patch_map) for k, m in self.pyramid.items()}
        out["clip_vis_dense"] = dense
        return out

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward(x)

    def _pool(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mean of the projected patch embeddings inside each mask (> 0)."""
        return mask_pooling(dense, masks)
