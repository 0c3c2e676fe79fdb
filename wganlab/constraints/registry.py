"""Constraint names -> builders. Each family registers itself in its own module."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import ConfigError, ConstraintConfig
from .base import Compose, Constraint

Builder = Callable[[nn.Module, ConstraintConfig], Constraint]
_BUILDERS: dict[str, Builder] = {}
#: the critic activation a constraint is built for (``model.activation: auto`` takes it)
_ACTIVATIONS: dict[str, str] = {}


def register(name: str, activation: str | None = None):
    """Decorator: ``@register("clip")`` on a function ``(critic, cfg) -> Constraint``.
    ``activation``: the critic activation the constraint needs to do its job (e.g.
    ``groupsort`` for the by-construction critics), used where ``model.activation`` is auto."""
    def deco(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        if activation is not None:
            _ACTIVATIONS[name] = activation
        return fn
    return deco


def critic_activation(model_activation: str, cfg: ConstraintConfig) -> str:
    """The critic's activation: ``model_activation`` unless it is ``auto``, then the first
    preference of the constraint's parts (``auto`` again if none has one)."""
    if model_activation != "auto":
        return model_activation
    prefs = [_ACTIVATIONS[p] for p in cfg.resolve().name.split("+") if p in _ACTIVATIONS]
    return prefs[0] if prefs else "auto"


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
