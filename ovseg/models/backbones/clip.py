"""Building open_clip models by name (the backbone classes live in ``clip_*.py``)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import open_clip
from torch import nn

from ovseg.zoo.clip_cache import clip_cache_info
from ovseg.zoo.hub import hub_offline

logger = logging.getLogger(__name__)

CLIP_CONFIG_DIR = Path(__file__).parent / "clip_configs"
_registered = False


def register_clip_configs() -> None:
    """Make ovseg's own open_clip model configs (tiny test architectures) known to open_clip."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CLIP_CONFIG_DIR)
        _registered = True


def register_config_file(path: str) -> str:
    """Register a user's open_clip model-config JSON under its file-name stem; returns the stem."""
    import json

    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(
            f"model.backbone.config_file={path!r}: no such file (resolved: {p.resolve()})"
        )
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"model.backbone.config_file={path!r} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= cfg.keys():
        raise ValueError(
            f"model.backbone.config_file={path!r} is not an open_clip model config "
            "(needs embed_dim, vision_cfg, text_cfg)"
        )
    open_clip.add_model_config(p)
    return p.stem


def create_clip(
    name: str, pretrained: str | None, force_quick_gelu: bool = False, cache_dir: str | None = None
) -> nn.Module:
    """Build an open_clip model by name.

    Args:
        name: an open_clip model name (``convnext_large_d_320``, ``RN50``, or a config registered
            with ``open_clip.add_model_config``).
        pretrained: an open_clip pretrained tag (downloaded into open_clip's cache), a local
            weights file, or None for random initialisation.
    """
    register_clip_configs()
    if name not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        raise ValueError(
            f"unknown open_clip model {name!r}" + (f"; did you mean {close}?" if close else "")
        )
    if pretrained:
        is_file = os.path.isfile(pretrained)
        if not is_file and pretrained not in open_clip.list_pretrained_tags_by_model(name):
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ValueError(
                f"model.backbone.pretrained={pretrained!r} is neither a file nor an open_clip tag of "
                f"{name!r} (tags: {tags or 'none'}); use null for random weights"
            )
        if not is_file and hub_offline():
            pretrained = _cached_clip_file(name, pretrained)
        elif not is_file:
            logger.info(
                "CLIP weights %s/%s come from open_clip's cache (%s)",
                name,
                pretrained,
                cache_dir
                or os.environ.get("HF_HUB_CACHE", "~/.cache/huggingface or ~/.cache/clip"),
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger().disabled, was = True, logging.getLogger().disabled
        try:
            model = open_clip.create_model(
                name,
                pretrained=pretrained or None,
                force_quick_gelu=force_quick_gelu,
                cache_dir=cache_dir,
            )
        finally:
            logging.getLogger().disabled = was
    return model


def _cached_clip_file(name: str, tag: str) -> str:
    """Offline (``OVSEG_OFFLINE`` / ``HF_HUB_OFFLINE``): the cached weights file of an open_clip
    tag, so open_clip loads a file and never asks the network (it would retry for a minute)."""
    info = clip_cache_info(name, tag)
    if info.error:
        raise ValueError(f"CLIP {name}/{tag}: {info.error}")
    if info.cached_file is None:
        raise ValueError(
            f"offline (OVSEG_OFFLINE/HF_HUB_OFFLINE set): the CLIP weights {name}/{tag} are not in "
            f"the cache {info.cache_dir} (they come from {info.source}); load them once online "
            "or copy them there"
        )
    logger.info("offline: CLIP weights %s/%s from %s", name, tag, info.cached_file)
    return str(info.cached_file)


def CLIPBackbone(  # noqa: N802 (deprecated class name kept for callers)
    clip_model: nn.Module, name: str = "", pretrained: str | None = None
) -> nn.Module:
    """Deprecated: the registered backbone (``ovseg.models.backbones.BACKBONES``) accepting
    ``clip_model.visual``."""
    from ovseg.models.backbones import select_backbone_class

    return select_backbone_class("auto", clip_model.visual)(clip_model, name, pretrained)
