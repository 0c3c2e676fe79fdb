"""Constraint names -> builders. Each constraint registers itself, with its parameters'
dataclass and its capabilities, in its own module (see :mod:`wganlab.plugins`)::

    @dataclass
    class MineParams:
        strength: float = 1.0

    @register("mine", params=MineParams)
    def _build(critic, section):
        return Mine(critic, section.params("mine").strength)

A module dropped into ``wganlab/constraints/`` is found without an import anywhere else.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import ConstraintConfig
from ..errors import ConfigError
from ..plugins import CONSTRAINTS
from .base import Compose, Constraint

Builder = Callable[[nn.Module, ConstraintConfig], Constraint]


def register(name: str, *, params: type | None = None, capabilities: tuple[str, ...] = (),
             uses: tuple[str, ...] = (), activation: str | None = None):
    """Decorator: ``@register("clip", params=ClipParams)`` on a function ``(critic, section) ->
    Constraint``; ``section`` is the resolved constraint section (``section.params(name)``).
    ``activation``: the critic activation the constraint needs to do its job (e.g.
    ``groupsort`` for the by-construction critics), used where ``model.activation`` is auto."""
    return CONSTRAINTS.register(name, params=params, capabilities=capabilities, uses=uses,
                                activation=activation)


def parts(cfg: ConstraintConfig, name: str | None = None) -> list[str]:
    """The base constraints a (variant or composed) name stands for."""
    return cfg.resolve(name).name.split("+")


def has_capability(cfg: ConstraintConfig, capability: str) -> bool:
    """Whether any part of the constraint ``cfg`` names has ``capability``."""
    return any(CONSTRAINTS.get(p, "constraint.name").has(capability) for p in parts(cfg))


def critic_activation(model_activation: str, cfg: ConstraintConfig) -> str:
    """The critic's activation: ``model_activation`` unless it is ``auto``, then the first
    preference of the constraint's parts (``auto`` again if none has one)."""
    if model_activation != "auto":
        return model_activation
    prefs = [CONSTRAINTS.get(p).meta.get("activation") for p in parts(cfg) if p in CONSTRAINTS]
    prefs = [p for p in prefs if p]
    return prefs[0] if prefs else "auto"


def available() -> list[str]:
    return CONSTRAINTS.names()


def build_constraint(critic: nn.Module, cfg: ConstraintConfig,
                     name: str | None = None) -> Constraint:
    """Build the constraint ``cfg`` names (a variant, a base name, or ``a+b``) for ``critic``."""
    cfg = cfg.resolve(name)
    built = []
    for part in cfg.name.split("+"):
        if part not in CONSTRAINTS:
            raise ConfigError(f"constraint {part!r} is not available; choose from "
                              f"{', '.join(available())}")
        built.append(CONSTRAINTS.get(part).obj(critic, cfg))
    return built[0] if len(built) == 1 else Compose(critic, built)


@register("none")
def _none(critic, cfg):
    return Constraint(critic)
