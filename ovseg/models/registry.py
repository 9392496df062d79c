"""The registries of the parts a method changes; each selected in config by ``type:``.

    model.type                 SEGMENTORS             "fcclip"
    model.backbone.type        BACKBONES              "auto" | "clip_convnext" | "clip_resnet" | "clip_vit"
    model.pixel_decoder.type   PIXEL_DECODERS         "msdeform"
    model.decoder.type         TRANSFORMER_DECODERS   "masked_attention" | "decoupled"
    model.loss.type            LOSSES                 "mask2former"
    model.text.type            ovseg.text.PROMPT_BUILDERS  "templates"

An entry of PIXEL_DECODERS, TRANSFORMER_DECODERS and LOSSES is a builder function that maps its
config section (and what it must know of the parts built before it) to a module; the class itself
keeps explicit keyword arguments, usable from plain Python. ``ovseg/models/__init__.py`` imports
every module that registers, so registration never depends on a user's import order.
"""

from ovseg.models.backbones.registry import BACKBONES
from ovseg.utils.registry import Registry

SEGMENTORS = Registry("segmentor", config_key="model.type")
PIXEL_DECODERS = Registry("pixel decoder", config_key="model.pixel_decoder.type")
TRANSFORMER_DECODERS = Registry("transformer decoder", config_key="model.decoder.type")
LOSSES = Registry("loss", config_key="model.loss.type")

__all__ = ["BACKBONES", "LOSSES", "PIXEL_DECODERS", "SEGMENTORS", "TRANSFORMER_DECODERS"]
