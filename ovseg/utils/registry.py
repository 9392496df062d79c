"""A small name -> object registry, one per component family (timm's ``register_model``,
detectron2's ``BACKBONE_REGISTRY``).

    BACKBONES = Registry("backbone")

    @BACKBONES.register("clip_vit")
    class CLIPViTBackbone(Backbone): ...

    cls = BACKBONES.get(cfg.type)      # "did you mean" on a miss

Registering a name twice is an error (two modules silently fighting over a name is a bug), and a
lookup of an unknown name lists the close and the valid names. A registry never imports anything:
each family's ``__init__`` imports its modules, so registration never depends on a user's import
order.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """An unknown or duplicate registry name; ``str()`` is the whole message (not KeyError's
    quoted repr)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to classes or functions of one family.

    Args:
        family: what the entries are ("backbone", "pixel decoder", ...), used in messages.
        config_key: the config key that selects an entry (e.g. ``model.backbone.type``), named
            in error messages so the user knows what to change.
    """

    def __init__(self, family: str, config_key: str | None = None):
        self.family = family
        self.config_key = config_key
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator.

        Raises:
            RegistryError: ``name`` is already registered.
        """

        def add(o: T) -> T:
            key = name or getattr(o, "__name__", None)
            if not key:
                raise RegistryError(f"{self.family} registry: an entry needs a name")
            if key in self._entries:
                raise RegistryError(
                    f"{self.family} {key!r} is already registered "
                    f"(by {_where(self._entries[key])}); choose another name"
                )
            self._entries[key] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """The entry named ``name``.

        Raises:
            RegistryError: no such entry; the message suggests close names and lists all.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        names = sorted(self._entries)
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        key = f" ({self.config_key})" if self.config_key else ""
        raise RegistryError(
            f"unknown {self.family} {name!r}{key}{hint} (registered: {', '.join(names) or 'none'})"
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
