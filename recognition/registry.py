"""Name → callable registries (timm-style), shared by models, crafting methods, backends, losses.

An entry is either the callable itself or a lazy ``"module:attribute"`` path that is imported on
first use. Lazy entries let a command line list its choices (``--method``, ``--backend``) without
importing torch, so ``--help`` stays fast, while the registry stays the one place a name is defined.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """Names of one ``kind`` (e.g. "model", "method") mapped to callables.

    ``registry.get(name)`` returns the callable (importing a lazy entry), ``registry.names()`` the
    sorted names; an unknown name raises ``ValueError`` that lists the known ones.
    """

    def __init__(self, kind: str, entries: dict[str, str | Callable[..., Any]] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, str | Callable[..., Any]] = dict(entries or {})

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a callable under ``name`` (a name may be registered once)."""

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        """Sorted registered names (no import happens)."""
        return sorted(self._entries)

    def check(self, name: str) -> str:
        """``name`` if registered, else a ``ValueError`` naming the choices (no import happens)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}")
        return name

    def get(self, name: str) -> Callable[..., Any]:
        """The callable registered as ``name`` (a lazy entry is imported and cached)."""
        entry = self._entries[self.check(name)]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
