"""The backbone contract: a frozen open_clip model giving multi-scale features, dense CLIP
embeddings, mask pooling and text encoding.

Frozen means: the ``clip_model`` parameters never require grad, ``clip_model`` stays in eval mode
even under ``model.train()`` (BatchNorm of ResNet CLIPs uses running statistics), it runs without
autograd, and the optimizer never sees it. Output channels are read from the built model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from ovseg.models.backbones.text_tower import TextTowerMixin
from ovseg.structures import ShapeSpec


class Backbone(TextTowerMixin, nn.Module, ABC):
    """A CLIP image tower + text tower behind one interface.

    Args:
        clip_model: the open_clip model (its weights are stored under ``clip_model.``).
        name, pretrained: what built it, recorded in checkpoints so the weights can be re-fetched.

    ``forward(x)`` takes a normalised (B, 3, H, W) image and returns res2..res5 (strides 4..32)
    and ``clip_vis_dense`` (the map :meth:`pool_masks` pools for the out-of-vocabulary branch).
    """

    def __init__(self, clip_model: nn.Module, name: str = "", pretrained: str | None = None):
        super().__init__()
        if not self.accepts(clip_model.visual):
            raise ValueError(
                f"{type(self).__name__} does not support the CLIP image tower "
                f"{type(clip_model.visual).__name__} of {name or 'this model'!r}"
            )
        self.clip_model = clip_model
        self.name = name
        self.pretrained = pretrained
        self.embed_dim = int(clip_model.text_projection.shape[-1])
        clip_model.requires_grad_(False)
        clip_model.eval()
        self._shapes = self._read_shapes()

    @classmethod
    @abstractmethod
    def accepts(cls, visual: nn.Module) -> bool:
        """Whether this class handles the built image tower (decided by its type, not a name)."""

    @abstractmethod
    def _read_shapes(self) -> dict[str, ShapeSpec]:
        """res2..res5 -> (channels, stride), read from the built model."""

    @abstractmethod
    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> res2..res5 and clip_vis_dense, run under no_grad by :meth:`forward`."""

    @abstractmethod
    def _pool(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) dense, (B, Q, h, w) mask logits -> (B, Q, D) text-space embeddings."""

    def output_shape(self) -> dict[str, ShapeSpec]:
        """res2..res5 -> (channels, stride)."""
        return dict(self._shapes)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip_model.logit_scale

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        self.clip_model.eval()  # frozen: always eval, whatever the parent does
        if not any(p.requires_grad for p in self.parameters()):
            self.training = False  # nothing trainable (ConvNeXt, ResNet): the whole module is eval
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self._features(x)

    def visual_context(self, dense: torch.Tensor) -> torch.Tensor:
        """(B, 1 + h*w, D): the global CLIP embedding of ``clip_vis_dense`` (B, C, h, w) then
        every position's, in the text space (DenseCLIP's visual context). Generic: each position
        is pooled as a one-pixel mask; backbones override it with a direct head."""
        with torch.no_grad():
            b, _, h, w = dense.shape
            ones = torch.ones((b, 1, h, w), dtype=dense.dtype, device=dense.device)
            eye = torch.eye(h * w, dtype=dense.dtype, device=dense.device) * 2 - 1
            pixels = eye.view(1, h * w, h, w).expand(b, -1, -1, -1)
            return torch.cat([self._pool(dense, ones), self._pool(dense, pixels)], 1)

    def pool_masks(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """CLIP embedding (B, Q, D) of each mask region (B, Q, h, w logits, > 0 = inside) of
        ``clip_vis_dense`` (B, C, h, w), for the out-of-vocabulary classifier."""
        with torch.no_grad():
            return self._pool(dense, masks)
