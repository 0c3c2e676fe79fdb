"""The sweep: solve each hidden layer's scales and apply them, layer after layer
(Massart 2022, §III).

Solvers are looked up by name in the registry :data:`wganlab.plugins.SOLVERS`; a solver is a
function of a :class:`SolveContext` (the pure ones in :mod:`.solvers` only read ``a``, ``b``
and the bounds). Add one with ``@register_solver("name", params=..., capabilities=...)``; a
module of ``wganlab.rescale`` is discovered, so a new file needs no edit here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..plugins import SOLVERS
from . import solvers
from .apply import incoming, outgoing, rescale_pair_
from .discovery import UnitPair

log = logging.getLogger("wganlab.rescale")


@dataclass
class SolveContext:
    """What a solver may use to choose d for one hidden layer (read ``a``/``b`` lazily)."""
    pair: UnitPair
    #: position of ``pair`` in the sweep
    index: int
    l_in: float
    l_out: float
    #: which parameters the box constrains (weight, bias)
    params: Sequence[str] = ("weight", "bias")
    #: solver options (alpha, k_max, tol, ...)
    options: dict[str, Any] = field(default_factory=dict)
    critic: Optional[nn.Module] = None
    #: the critic's input of this step (real and fake halves), None outside training
    batch: Optional[Tensor] = None
    #: scratch shared by all layers and sweeps of one rescaling (e.g. activation statistics)
    cache: dict[str, Any] = field(default_factory=dict)
    #: this layer's buffers, kept across steps (large temporaries cost page faults on CPU)
    work: Optional[dict[str, Tensor]] = None
    #: the caller's whole ``work`` dict (None: it keeps none): what a solver keeps there under a
    #: name of its own serves every layer and step, and goes when the caller drops the dict
    #: (the ``output`` solver's activation capture and its hooks)
    state: Optional[dict[Any, Any]] = None

    @cached_property
    def a(self) -> Tensor:
        """[U, ...] magnitudes of the constrained entries entering each unit."""
        return incoming(self.pair, self.params, self.work)

    @cached_property
    def b(self) -> Tensor:
        """[U, ...] magnitudes of the constrained entries leaving each unit."""
        return outgoing(self.pair, self.params, self.work)


def exact_without_batch(ctx: SolveContext, solver: str) -> Optional[Tensor]:
    """For data-weighted solvers: the exact solver's d when the step's batch is missing
    (``observe()`` not called), with one warning per rescaling; None when the batch is there."""
    if ctx.batch is not None and ctx.critic is not None:
        return None
    if not ctx.cache.get("warned"):
        ctx.cache["warned"] = True
        log.warning("the %s solver needs the step's batch (observe()); "
                    "falling back to the exact solver", solver)
    return solvers.exact(ctx.a, ctx.b, ctx.l_in, ctx.l_out, work=ctx.work)


SolverFn = Callable[[SolveContext], Tensor]


def register_solver(name: str, *, params: Optional[type] = None,
                    capabilities: tuple[str, ...] = (),
                    setup: Optional[Callable[[dict, Sequence[UnitPair]], None]] = None):
    """Decorator: ``@register_solver("mine")`` on a function ``(ctx: SolveContext) -> d [U]``.
    ``params``: a dataclass of its options (``constraint.solvers.<name>``; they reach the
    solver as ``ctx.options``); ``capabilities``: ``uses_batch`` for data-weighted solvers;
    ``setup(work, pairs)``: installs what the solver keeps across steps in the caller's
    ``work`` dict when the projection is built (see :func:`setup_solver`)."""
    return SOLVERS.register(name, params=params, capabilities=capabilities, setup=setup)


def setup_solver(name: str, work: dict, pairs: Sequence[UnitPair]) -> None:
    """Run solver ``name``'s setup, if it has one, for a projection about to use ``work``."""
    fn = SOLVERS.get(name).meta.get("setup")
    if fn is not None:
        fn(work, pairs)


def get_solver(name: str) -> SolverFn:
    if name not in SOLVERS:
        raise ValueError(f"unknown rescaling solver {name!r}; choose from "
                         f"{', '.join(SOLVERS.names())}")
    return SOLVERS.get(name).obj


@dataclass
class PaperParams:
    """``constraint.solvers.paper`` (and ``paper-guarded``): Algorithm 1's step factor and
    its number of steps."""
    alpha: float = 1.1
    k_max: int = 5

    def validate(self) -> None:
        if self.alpha <= 1:
            raise ValueError(f"alpha must be > 1 (got {self.alpha})")
        if self.k_max < 1:
            raise ValueError(f"k_max must be > 0 (got {self.k_max})")


@register_solver("paper", params=PaperParams)
def _paper(ctx: SolveContext) -> Tensor:
    return solvers.paper(ctx.a, ctx.b, ctx.l_in, ctx.l_out, ctx.options.get("alpha", 1.1),
                         ctx.options.get("k_max", 5), work=ctx.work,
                         sync_free=ctx.options.get("sync_free"))


@register_solver("paper-guarded", params=PaperParams)
def _paper_guarded(ctx: SolveContext) -> Tensor:
    return solvers.paper_guarded(ctx.a, ctx.b, ctx.l_in, ctx.l_out,
                                 ctx.options.get("alpha", 1.1), ctx.options.get("k_max", 5),
                                 work=ctx.work, sync_free=ctx.options.get("sync_free"))


@register_solver("exact")
def _exact(ctx: SolveContext) -> Tensor:
    return solvers.exact(ctx.a, ctx.b, ctx.l_in, ctx.l_out, tol=ctx.options.get("tol"),
                         work=ctx.work, sync_free=ctx.options.get("sync_free"))


@register_solver("balance")
def _balance(ctx: SolveContext) -> Tensor:
    return solvers.balance(ctx.a, ctx.b)


@register_solver("balance-box")
def _balance_box(ctx: SolveContext) -> Tensor:
    return solvers.balance(ctx.a, ctx.b, ctx.l_in, ctx.l_out)


@torch.no_grad()
def rescale_critic_(pairs: Sequence[UnitPair], bounds: Sequence[float], solver: str = "exact",
                    *, params: Sequence[str] = ("weight", "bias"), sweeps: int = 1,
                    options: Optional[dict[str, Any]] = None, critic: Optional[nn.Module] = None,
                    batch: Optional[Tensor] = None,
                    work: Optional[dict[Any, Any]] = None,
                    drift: Optional[list[Tensor]] = None,
                    max_drift: Optional[float] = None) -> list[Tensor]:
    """Rescale every pair in place, in forward order, ``sweeps`` times; return each hidden
    layer's total scale d (the product over sweeps). ``bounds`` is indexed by weight layer.
    ``work`` (kept by the caller across steps) holds each layer's scratch buffers under the
    layer's index, and what solvers keep for the whole critic under names of their own.

    ``drift`` (one float64 tensor per pair, kept by the caller across steps) accumulates each
    unit's log d; with ``max_drift`` every step's d is limited so that |drift| stays within it
    (see :func:`bound_drift`)."""
    fn = get_solver(solver)
    totals: list[Optional[Tensor]] = [None] * len(pairs)
    cache: dict[str, Any] = {"pairs": list(pairs)}
    for _ in range(sweeps):
        for k, pair in enumerate(pairs):
            ctx = SolveContext(pair, k, bounds[pair.index_in], bounds[pair.index_out], params,
                               dict(options or {}), critic, batch, cache,
                               None if work is None else work.setdefault(k, {}), work)
            d = fn(ctx)
            if drift is not None:
                if max_drift is not None:
                    d = bound_drift(d, drift[k], max_drift)
                drift[k] += d.double().log()
            rescale_pair_(pair, d)
            totals[k] = d if totals[k] is None else totals[k] * d
    return [t for t in totals if t is not None]


def bound_drift(d: Tensor, drift: Tensor, max_drift: float) -> Tensor:
    """d limited so that each unit's accumulated log d stays in [-max_drift, max_drift].

    Why: a per-step choice of d that is tiny but of constant sign compounds: the incoming
    weights that sit inside the box shrink geometrically step after step (docs/invariance.md).
    For a convex per-unit objective such as eq. (7) (convex in log d), clamping its minimiser
    to the allowed interval gives the minimiser over that interval, so ``exact`` stays exact
    under the bound."""
    t = d.double().log()
    t = torch.minimum(torch.maximum(t, -max_drift - drift), max_drift - drift)
    return t.exp().to(d.dtype)
