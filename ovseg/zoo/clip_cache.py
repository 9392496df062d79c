"""Where open_clip keeps the frozen CLIP weights that a zoo model names.

ovseg never downloads CLIP towers itself: ``open_clip.create_model(name, pretrained=tag)`` does,
into the Hugging Face hub cache (``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``) or, for
URL-only tags, ``~/.cache/clip``. This module reports that location and whether the file is
already there, for ``python -m ovseg.zoo info``. It imports open_clip (and so torch) lazily.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ClipCacheInfo:
    """Where open_clip gets and caches one pretrained CLIP.

    Attributes:
        model: open_clip model name.
        pretrained: pretrained tag.
        source: ``"hf-hub:ORG/REPO"`` or the download URL; empty when open_clip has no such tag.
        cache_dir: the directory open_clip downloads into.
        cached_file: the cached weights file if already present, else None.
        error: why the tag cannot be resolved (empty when it can).
    """

    model: str
    pretrained: str | None
    source: str = ""
    cache_dir: Path | None = None
    cached_file: Path | None = None
    error: str = ""

    def describe(self) -> str:
        """One line for ``info``."""
        head = f"{self.model} / {self.pretrained} via open_clip"
        if self.error:
            return f"{head}: {self.error}"
        state = f"cached at {self.cached_file}" if self.cached_file else "not downloaded yet"
        return f"{head} from {self.source}; cache {self.cache_dir} ({state})"


def clip_cache_info(model: str, pretrained: str | None) -> ClipCacheInfo:
    """Resolve ``(model, pretrained)`` with open_clip's own pretrained registry.

    Args:
        model: open_clip model name, e.g. ``"convnext_large_d_320"``.
        pretrained: tag, e.g. ``"laion2b_s29b_b131k_ft_soup"``; None = random init.
    """
    info = ClipCacheInfo(model=model, pretrained=pretrained)
    if not pretrained:
        info.error = "no pretrained tag (the checkpoint must hold the CLIP weights)"
        return info
    try:
        import open_clip
    except ImportError as e:
        info.error = f"open_clip is not importable ({e})"
        return info
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        info.error = (
            f"open_clip {open_clip.__version__} has no pretrained tag {pretrained!r} for {model!r}"
            + (f" (it has: {', '.join(tags)})" if tags else "")
        )
        return info
    hub = cfg.get("hf_hub", "")
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        hub = ""
    if hub:
        # open_clip's convention: "org/repo/" = default file name, "org/repo/file" = that file
        repo_id, filename = os.path.split(hub)
        info.source = f"hf-hub:{repo_id}"
        from ovseg.zoo.hub import hub_cache_dir

        cache = hub_cache_dir()  # the environment of now, not huggingface_hub's import time
        info.cache_dir = Path(cache or constants.HF_HUB_CACHE)
        candidates = [filename] if filename else []
        candidates += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in candidates:
            found = try_to_load_from_cache(repo_id, name, cache_dir=info.cache_dir)
            if isinstance(found, str):
                info.cached_file = Path(found)
                break
        return info
    url = cfg.get("url", "")
    info.source = url
    info.cache_dir = Path("~/.cache/clip").expanduser()
    target = info.cache_dir / os.path.basename(url)
    info.cached_file = target if url and target.is_file() else None
    return info
