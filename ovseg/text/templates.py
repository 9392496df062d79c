"""Prompt templates. Each ``{}`` is replaced by a class synonym (``str.format``)."""

from __future__ import annotations

from collections.abc import Sequence

# FC-CLIP's VILD_PROMPT (fcclip/fcclip.py, from ViLD); the article is always "a", as there.
VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

# OVCoser's CAMO_PROMPTS (OVCamo, methods/ovcoser/prompts.py): camouflage-aware templates.
CAMO_TEMPLATES: tuple[str, ...] = (
    "A photo of the camouflaged {}.",
    "A photo of the concealed {}.",
    "A photo of the {} camouflaged in the background.",
    "A photo of the {} concealed in the background.",
    "A photo of the {} camouflaged to blend in with its surroundings.",
    "A photo of the {} concealed to blend in with its surroundings.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "vild": VILD_TEMPLATES,
    "camo": CAMO_TEMPLATES,
    "single": ("a photo of a {}.",),
    "plain": ("{}",),
}


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """A named template set ("vild", "camo", "single", "plain") or an explicit list of strings."""
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise ValueError(
                f"unknown template set {templates!r}; choose one of {sorted(TEMPLATE_SETS)} or give a list"
            )
        return TEMPLATE_SETS[templates]
    out = tuple(templates)
    if not out:
        raise ValueError("the template list is empty")
    bad = [t for t in out if "{}" not in t]
    if bad:
        raise ValueError(f"templates without a '{{}}' placeholder: {bad}")
    return out
