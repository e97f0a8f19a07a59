"""Name-keyed registries filled by decorators, like timm's model registry.

Adding a dataset, backbone, classifier or method is one decorated function::

    @backbones.register
    def resnet18(**kwargs) -> Backbone: ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from tlcore.errors import TLError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, error: type[TLError] = TLError) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, obj: T | None = None, *, name: str | None = None):
        """Decorator: ``@reg.register`` or ``@reg.register(name="x")``."""

        def add(o: T) -> T:
            key = name or o.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = o
            return o

        return add(obj) if obj is not None else add

    def alias(self, alias: str, key: str) -> None:
        """Accept ``alias`` (any case) for the registered ``key``: another codebase's spelling."""
        if key not in self._entries:
            raise ValueError(f"{self.kind} {key!r} is not registered")
        self._aliases[alias.lower()] = key

    def canonical(self, key: str) -> str:
        """The registered name for ``key``: itself, an alias, or the same name in another case."""
        if key in self._entries:
            return key
        low = str(key).lower()
        if low in self._aliases:
            return self._aliases[low]
        matches = [k for k in self._entries if k.lower() == low]
        if len(matches) == 1:
            return matches[0]
        raise self._error(self.unknown_message(key))

    def get(self, key: str) -> T:
        return self._entries[self.canonical(key)]

    def unknown_message(self, key: str) -> str:
        close = difflib.get_close_matches(key, list(self._entries), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        also = ""
        if self._aliases:
            spellings = sorted({a for a in self._aliases if a not in self._entries})
            also = f" (also accepted: {', '.join(spellings)}, in any case)"
        return f"Unknown {self.kind} {key!r}.{hint} Available: {', '.join(self._entries)}{also}."

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def knows(self, key: str) -> bool:
        """Whether ``key`` names an entry, counting aliases and case (see :meth:`canonical`)."""
        try:
            self.canonical(key)
        except TLError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())


def lazy(fn: Callable[[], T]) -> Callable[[], T]:
    """Cache a zero-argument loader (used for the embedded datasets)."""
    cache: list[T] = []

    def wrapper() -> T:
        if not cache:
            cache.append(fn())
        return cache[0]

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper
