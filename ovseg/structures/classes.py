"""What a result needs of the vocabulary it indexes into (structures sit below text, so they
name a protocol, not :class:`ovseg.text.vocabulary.Vocabulary`, which implements it)."""

from __future__ import annotations

from typing import Protocol


class ClassList(Protocol):
    """An ordered list of classes: ``category_id`` / ``labels`` index into it."""

    @property
    def names(self) -> list[str]: ...

    def __len__(self) -> int: ...
