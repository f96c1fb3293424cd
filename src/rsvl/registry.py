"""Name -> builder registries, the way timm registers models: one flat table per kind of thing.

Methods register their pluggable parts here (``@ZEROOV_OVERVIEW.register("qwen2_5_vl")``), so a
recipe or a command-line flag picks an implementation by name and an unknown name fails with the
list of known ones instead of an ``AttributeError`` deep in the code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from rsvl.errors import InputError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of builders (or classes) of one kind.

    Args:
        kind: what the entries are, used in error messages (``"overview provider"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; registering a name twice is a bug and raises."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name is an :class:`InputError` listing the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise InputError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
