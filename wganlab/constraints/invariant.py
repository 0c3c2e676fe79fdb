"""Invariance-aware weight clipping (Massart 2022, Algorithm 2): after the optimizer step, move the
critic along its invariant curves (per-unit rescaling, the function unchanged) towards the
clipping box, then clip. The maths lives in :mod:`wganlab.rescale`; this is the thin object the
trainer (or anyone's plain loop) calls::

    proj = InvariantClip(critic, clip=[0.035, 0.045, 0.0625], solver="exact")
    ...; opt.step(); proj.step(opt)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..rescale import (ImpactProbe, find_pairs, get_solver, log_balance, rescale_critic_,
                       transform_state_, unit_norms)
from ..plugins import SOLVERS
from ..rescale.layers import layer_bounds
from ..rescale.sweep import setup_solver
from .base import Constraint
from .clip import box_stats, check_clip_options, clamp_targets_, clip_targets
from .registry import register


class InvariantClip(Constraint):
    """Rescale hidden units towards the box, then clip every selected parameter to it.

    ``clip``, ``scale``, ``params``, ``when``: the box and parameter selection, as
    :class:`WeightClip`. ``solver``: ``exact`` (minimiser of eq. 7), ``paper`` (Algorithm 1 as
    printed, with ``alpha`` and ``k_max``), ``paper-guarded`` (a unit keeps Algorithm 1's d only
    where it lowers its own distance to the box), ``function`` (data-weighted, needs
    :meth:`observe`), or any solver registered in :mod:`wganlab.rescale.sweep`.
    ``sweeps``: passes over the hidden layers (forward order). ``every``: rescale on every
    k-th step only (clipping happens every step). ``transform_state``: transform the
    optimizer's moments consistently with the rescaling. ``strict``: raise on layers that break
    the invariance instead of skipping them with a warning. ``max_drift``: bound on each unit's
    accumulated |log d| (``drift``, kept and checkpointed): per-step scales of constant sign
    compound and erase the critic's interior weights (docs/invariance.md); None: unbounded, as
    the paper. ``rescale_steps``: rescale on the first N steps only, then clip alone (a control:
    with ``max_drift``, plain clipping of a once-rebalanced critic). ``options``: extra solver
    options.
    """

    name = "invclip"
    default_optimizer = {"name": "rmsprop", "lr": 5e-5}

    def __init__(self, critic: nn.Module, clip: Union[float, Sequence[float]] = 0.01, *,
                 scale: str = "absolute", params: Sequence[str] = ("weight", "bias"),
                 when: str = "after", solver: str = "exact", alpha: float = 1.1,
                 k_max: int = 5, sweeps: int = 1, transform_state: bool = False,
                 every: int = 1, strict: bool = False, max_drift: Optional[float] = None,
                 rescale_steps: Optional[int] = None,
                 options: Optional[dict[str, Any]] = None):
        super().__init__(critic)
        check_clip_options(when, params)
        if max_drift is not None and not max_drift >= 0:
            raise ValueError(f"max_drift must be >= 0 or None (got {max_drift})")
        if rescale_steps is not None and rescale_steps < 0:
            raise ValueError(f"rescale_steps must be >= 0 or None (got {rescale_steps})")
        if alpha <= 1 or k_max < 1 or sweeps < 1 or every < 1:
            raise ValueError("need alpha > 1 and k_max, sweeps, every >= 1 "
                             f"(got {alpha}, {k_max}, {sweeps}, {every})")
        get_solver(solver)  # fail now on an unknown name
        #: the projection depends on the observed batch (a data-weighted solver)
        self.uses_batch = SOLVERS.get(solver).has("uses_batch")
        self.solver, self.sweeps, self.every, self.when = solver, sweeps, every, when
        self.transform_state = transform_state
        self.params = tuple(params)
        self.options = {"alpha": alpha, "k_max": k_max, **(options or {})}
        self.bounds = layer_bounds(critic, clip, scale)
        self.targets = clip_targets(critic, self.bounds, self.params)
        self.pairs = find_pairs(critic, strict=strict)
        self.max_drift = max_drift
        self.rescale_steps = rescale_steps
        #: each unit's accumulated log d since construction (float64, one tensor per pair)
        self.drift = [torch.zeros(p.units, dtype=torch.float64, device=_weight_device(p))
                      for p in self.pairs]
        self.steps = 0
        self.last_scales: list[Tensor] = []
        self._work: dict[Any, Any] = {}  # per-layer scratch and solver state, kept across steps
        setup_solver(solver, self._work, self.pairs)
        self._optimizer: Optional[torch.optim.Optimizer] = None

    # -- the projection ---------------------------------------------------------------------
    @torch.no_grad()
    def rescale(self, optimizer: Optional[torch.optim.Optimizer] = None) -> list[Tensor]:
        """Rescale (no clipping); return the scale d of each hidden layer (one tensor per
        rescaled layer, forward order). Transforms ``optimizer``'s state if so configured."""
        # follow the critic if it was moved to another device after construction
        self.drift = [t if t.device == _weight_device(p) else t.to(_weight_device(p))
                      for t, p in zip(self.drift, self.pairs)]
        scales = rescale_critic_(self.pairs, self.bounds, self.solver, params=self.params,
                                 sweeps=self.sweeps, options=self.options, critic=self.critic,
                                 batch=self.batch, work=self._work, drift=self.drift,
                                 max_drift=self.max_drift)
        if self.transform_state and optimizer is not None:
            for pair, d in zip(self.pairs, scales):
                transform_state_(optimizer, pair, d)
        self.last_scales = scales
        return scales

    def clip_(self) -> None:
        clamp_targets_(self.targets)

    def prepare(self) -> None:
        if self.when == "before":
            self._project(self._optimizer, diagnose=False)

    @torch.no_grad()
    def step(self, optimizer: Optional[torch.optim.Optimizer] = None, *,
             diagnose: bool = False) -> None:
        self._optimizer = optimizer
        if self.when == "after":
            self._project(optimizer, diagnose)

    def _project(self, optimizer, diagnose: bool) -> None:
        due = self.steps % self.every == 0 and (self.rescale_steps is None
                                                 or self.steps < self.rescale_steps)
        self.steps += 1
        if not diagnose:
            if due:
                self.rescale(optimizer)
            self.clip_()
            return
        probe = ImpactProbe(self.critic, self.batch) if self.batch is not None else None
        before = self._box_stats()
        scales = self.rescale(optimizer) if due else []
        after = self._box_stats() if due else before
        self.clip_()
        self._diagnostics = self._report(before, after, scales)
        if probe is not None:
            self._diagnostics.update(probe.measure("invclip/"))

    # -- diagnostics ------------------------------------------------------------------------
    def _box_stats(self) -> dict[int, tuple[float, int, int]]:
        return box_stats(self.targets)

    def _report(self, before, after, scales: list[Tensor]) -> dict[str, float]:
        diag: dict[str, float] = {"invclip/rescaled": float(bool(scales))}
        for k in sorted(before):
            tag = "norm" if k < 0 else f"L{k}"
            diag[f"invclip/box_before_{tag}"] = before[k][0] ** 0.5
            diag[f"invclip/box_after_{tag}"] = after[k][0] ** 0.5
            diag[f"invclip/clipped_{tag}"] = after[k][1] / max(after[k][2], 1)
        diag["invclip/box_before"] = sum(v[0] for v in before.values()) ** 0.5
        diag["invclip/box_after"] = sum(v[0] for v in after.values()) ** 0.5
        diag["invclip/fraction_clipped"] = (sum(v[1] for v in after.values())
                                            / max(sum(v[2] for v in after.values()), 1))
        for pair, d in zip(self.pairs, scales):
            logd = d.double().log().abs()
            diag[f"invclip/logd_max_L{pair.index_in}"] = float(logd.max())
            diag[f"invclip/logd_median_L{pair.index_in}"] = float(logd.median())
            diag[f"invclip/moved_L{pair.index_in}"] = float((d != 1).double().mean())
        for pair, acc in zip(self.pairs, self.drift):
            # signed: a median far from 0 means most units drift the same way (compounding)
            diag[f"invclip/drift_median_L{pair.index_in}"] = float(acc.median())
            diag[f"invclip/drift_absmax_L{pair.index_in}"] = float(acc.abs().max())
        for pair in self.pairs:
            bal = log_balance(*(n.double() for n in unit_norms(pair)))
            q = torch.quantile(bal, bal.new_tensor([0.1, 0.5, 0.9]))
            tag = f"balance/L{pair.index_in}"
            diag[f"{tag}_p10"], diag[f"{tag}_median"], diag[f"{tag}_p90"] = map(float, q)
            diag[f"{tag}_absmedian"] = float(bal.abs().median())
        return diag

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "drift": [t.clone() for t in self.drift]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        for acc, saved in zip(self.drift, state.get("drift", [])):  # older checkpoints: none
            acc.copy_(torch.as_tensor(saved, dtype=acc.dtype))

    def __repr__(self) -> str:
        bounds = [round(b, 6) for b in self.bounds]
        return (f"InvariantClip(solver={self.solver!r}, bounds={bounds}, "
                f"pairs={len(self.pairs)}, sweeps={self.sweeps}, every={self.every}, "
                f"transform_state={self.transform_state}, max_drift={self.max_drift}, "
                f"rescale_steps={self.rescale_steps})")


def _weight_device(pair) -> torch.device:
    return next(pair.layer_in.parameters()).device


@dataclass
class InvariantClipParams:
    """``constraint.invclip``: the rescaling; the box is ``constraint.clip``'s, and each
    solver's own options are in ``constraint.solvers.<solver>``."""
    #: a registered rescaling solver: exact (eq. 7's minimiser) | paper (Algorithm 1) |
    #: paper-guarded | function | output | balance | balance-box
    solver: str = "exact"
    #: passes over the hidden layers per rescaling
    sweeps: int = 1
    #: transform the optimizer's state consistently with the rescaling
    transform_state: bool = False
    #: rescale every k critic steps (clipping still happens every step)
    every: int = 1
    #: refuse critics with layers that break the invariance instead of skipping them
    strict: bool = False
    #: bound on each unit's accumulated |log d| (None: unbounded, as the paper)
    max_drift: Optional[float] = None
    #: rescale on the first N critic steps only, then clip alone (None: always); with
    #: max_drift, plain clipping of a once-rebalanced critic (a control, not in the paper)
    rescale_steps: Optional[int] = None

    def validate(self) -> None:
        SOLVERS.get(self.solver, "constraint.invclip.solver")
        for key in ("sweeps", "every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be > 0 (got {getattr(self, key)})")
        if self.max_drift is not None and not self.max_drift >= 0:
            raise ValueError(f"max_drift must be >= 0 or null (got {self.max_drift})")
        if self.rescale_steps is not None and self.rescale_steps < 0:
            raise ValueError(f"rescale_steps must be >= 0 or null (got {self.rescale_steps})")


@register("invclip", params=InvariantClipParams, uses=("clip",))
def _build(critic: nn.Module, section) -> InvariantClip:
    box, p = section.params("clip"), section.params("invclip")
    solver = section.solver_params(p.solver)
    options = dataclasses.asdict(solver) if solver is not None else {}
    return InvariantClip(critic, box.bound, scale=box.scale, params=box.params, when=box.when,
                         solver=p.solver, sweeps=p.sweeps, transform_state=p.transform_state,
                         every=p.every, strict=p.strict, max_drift=p.max_drift,
                         rescale_steps=p.rescale_steps, options=options)
