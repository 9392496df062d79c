"""The backbone registry (``model.backbone.type``)."""

from __future__ import annotations

from ovseg.utils.registry import Registry

BACKBONES = Registry("backbone", config_key="model.backbone.type")
