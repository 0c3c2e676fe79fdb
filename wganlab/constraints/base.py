"""The one interface between the trainer and every Lipschitz strategy.

A constraint is bound to one critic when it is built (like ``torch.nn.utils.parametrize``) and
the trainer calls it at three fixed points of every critic step::

    constraint.prepare()                       # before the critic's forward pass
    constraint.observe(torch.cat([real, fake]))  # the batch, for impact diagnostics
    loss = -(f(real).mean() - f(fake).mean())
    penalty = constraint.penalty(real, fake)   # None, or a scalar added to the critic loss
    (loss + penalty).backward()
    optimizer.step()
    constraint.step(optimizer)                 # the projection after the step

The same object works in anyone's plain PyTorch loop (``opt.step(); proj.step(opt)``). The
trainer never names a constraint: anything implementing these methods plugs in.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


class Constraint:
    """Base class: does nothing (the ``none`` constraint)."""

    #: registry name
    name: str = "none"
    #: the critic optimizer the literature pairs with this constraint (config ``optim.critic.name: auto``)
    default_optimizer: dict[str, Any] = {"name": "rmsprop", "lr": 5e-5}
    #: whether penalty() needs the graph of the critic (double backward)
    needs_penalty: bool = False
    #: whether the projection depends on the observed batch (a distributed run must then
    #: observe the global batch on every process)
    uses_batch: bool = False

    def __init__(self, critic: nn.Module):
        self.critic = critic
        self.batch: Optional[torch.Tensor] = None
        self._diagnostics: dict[str, float] = {}

    # -- the hooks --------------------------------------------------------------------------
    def observe(self, batch: torch.Tensor) -> None:
        """The critic's input of this step (real and fake, concatenated); the trainer calls it
        before ``step`` so projections can measure their impact on the critic's output.
        Optional in a plain loop: without it, impact diagnostics are skipped."""
        self.batch = batch

    def prepare(self) -> None:
        """Called before the critic's forward pass of each critic step."""

    def penalty(self, real: torch.Tensor, fake: torch.Tensor) -> Optional[torch.Tensor]:
        """A scalar added to the critic's loss, or None. ``fake`` is already detached."""
        return None

    @torch.no_grad()
    def step(self, optimizer: Optional[torch.optim.Optimizer] = None, *,
             diagnose: bool = False) -> None:
        """The projection after ``optimizer.step()``. With ``diagnose`` it records its
        diagnostics (read them with :meth:`diagnostics`); without, it does only the work."""

    # -- reporting and state ----------------------------------------------------------------
    def diagnostics(self) -> dict[str, float]:
        """Scalars recorded by the last diagnosed step/penalty, for metrics.jsonl/TensorBoard."""
        return dict(self._diagnostics)

    def state_dict(self) -> dict[str, Any]:
        """Plain data (numbers, lists, tensors) that resume needs; no code objects."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Compose(Constraint):
    """Several constraints at once (``clip+r1``): penalties add, projections run in order."""

    def __init__(self, critic: nn.Module, parts: list[Constraint]):
        super().__init__(critic)
        self.parts = parts
        self.name = "+".join(p.name for p in parts)
        self.needs_penalty = any(p.needs_penalty for p in parts)
        self.uses_batch = any(p.uses_batch for p in parts)
        # a penalty's optimizer wins over a projection's default
        pen = [p for p in parts if p.needs_penalty]
        self.default_optimizer = (pen[0] if pen else parts[0]).default_optimizer

    def observe(self, batch):
        self.batch = batch
        for p in self.parts:
            p.observe(batch)

    def prepare(self) -> None:
        for p in self.parts:
            p.prepare()

    def penalty(self, real, fake):
        terms = [t for t in (p.penalty(real, fake) for p in self.parts) if t is not None]
        return sum(terms) if terms else None

    @torch.no_grad()
    def step(self, optimizer=None, *, diagnose: bool = False) -> None:
        for p in self.parts:
            p.step(optimizer, diagnose=diagnose)

    def diagnostics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.parts:
            out.update(p.diagnostics())
        return out

    def state_dict(self):
        return {str(i): p.state_dict() for i, p in enumerate(self.parts)}

    def load_state_dict(self, state):
        for i, p in enumerate(self.parts):
            p.load_state_dict(state.get(str(i), {}))

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.parts))})"
