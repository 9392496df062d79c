"""CLIP backbones. Importing this package registers every backbone in :data:`BACKBONES`."""

from ovseg.models.backbones import (  # noqa: F401 (registration)
    clip_convnext,
    clip_resnet,
    clip_vit,
)
from ovseg.models.backbones.base import Backbone
from ovseg.models.backbones.registry import BACKBONES

__all__ = ["BACKBONES", "Backbone", "select_backbone_class"]


def select_backbone_class(type_: str, visual) -> type[Backbone]:
    """The registered class for ``type_`` ("auto": the one whose ``accepts(visual)`` is true)."""
    if type_ == "auto":
        for name in BACKBONES.names():
            cls = BACKBONES.get(name)
            if cls.accepts(visual):
                return cls
        raise ValueError(
            f"no registered backbone accepts the CLIP image tower {type(visual).__name__} "
            f"(registered: {BACKBONES.names()})"
        )
    cls = BACKBONES.get(type_)
    if not cls.accepts(visual):
        raise ValueError(
            f"model.backbone.type={type_!r} does not match the CLIP image tower "
            f"{type(visual).__name__}; use 'auto' or the matching type"
        )
    return cls
