"""Constraint names -> builders. Each family registers itself in its own module."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import ConfigError, ConstraintConfig
from .base import Compose, Constraint

Builder = Callable[[nn.Module, ConstraintConfig], Constraint]
_BUILDERS: dict[str, Builder] = {}


def register(name: str):
    """Decorator: ``@register("clip")`` on a function ``(critic, cfg) -> Constraint``."""
    def deco(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        return fn
    return deco


def available() -> list[str]:
    return sorted(_BUILDERS)


def build_constraint(critic: nn.Module, cfg: ConstraintConfig,
                     name: str | None = None) -> Constraint:
    """Build the constraint ``cfg`` names (a variant, a base name, or ``a+b``) for ``critic``."""
    cfg = cfg.resolve(name)
    parts = []
    for part in cfg.name.split("+"):
        if part not in _BUILDERS:
            raise ConfigError(f"constraint {part!r} is not available; choose from "
                              f"{', '.join(available())}")
        parts.append(_BUILDERS[part](critic, cfg))
    return parts[0] if len(parts) == 1 else Compose(critic, parts)


@register("none")
def _none(critic, cfg):
    return Constraint(critic)
