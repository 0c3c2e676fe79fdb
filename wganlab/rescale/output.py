"""The output-aware ``output`` solver (research): choose each unit's scale d so that the clipping
that follows changes the critic's output as little as possible, to first order, on the
current batch. The maths is in docs/output_solver.md and :mod:`.output_terms`; in short:

Rescaling unit i by d and then clipping changes f(x_n) by ``df_ni(d)``, piecewise affine in
(d, 1/d), in the critic's unrescaled per-sample sensitivities. The solver minimises
``sum_n df_ni(d)^2`` per unit (per-sample cross terms kept within a unit: a unit's errors add
coherently in each sample before squaring) over d, treating units independently (the cross
terms between *different* units are neglected). A unit that some d puts entirely in the box
gets the point of that interval closest to 1 (or to its balance target), as the ``exact``
solver does, since its clip error is then 0. Only "conflicted" units are searched, in log d
within [log lo, log hi] and +-``log_range``: ``grid`` points per unit (plus the one nearest
d = 1) are evaluated exactly, all units and points at once, and the objective, a quadratic on
each segment between them, is minimised there in closed form.

Sensitivities come from the critic step's own forward/backward pass, recorded by an
:class:`~.capture.ActivationCapture` that the solver installs on its first call and keeps in
the caller's ``work`` dict (``InvariantClip`` keeps one across steps): its hooks go with that
dict, or with :meth:`~.capture.ActivationCapture.close`. Where no matching forward was seen
(the first step, a plain loop that computes the loss another way, a deep copy of the critic,
a caller that keeps no ``work``) the solver runs its own forward and backward on the
(sub-sampled) batch instead: correct, but it costs a forward and backward of those rows.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from . import capture, solvers
from .apply import unit_norms
from .capture import ActivationCapture
from .layers import _weight
from .output_terms import (Stats, contrib_in, contrib_out, harm_at_one, minimise_on_grid,
                           search_grid)
from .solvers import log_balance
from .sweep import SolveContext, exact_without_batch, register_solver

log = logging.getLogger("wganlab.rescale")

#: option defaults (``options`` of InvariantClip; subsample/balance_weight also in the config)
DEFAULTS: dict[str, Any] = {
    "subsample": 8,         # samples of the batch used for the statistics (None: all)
    "log_range": 0.05,      # search |log d| <= this (widened to [lo, hi] if that is all outside)
    "grid": 2,              # evaluated points per conflicted unit (+ the one nearest d = 1)
    "balance_weight": 0.0,  # lambda: cost lambda * (log d - target)^2, relative to the unit's harm
}
#: where the capture lives in the caller's ``work`` dict
CAPTURE_KEY = "output_capture"


def capture_in(work: dict, layers: Optional[list[nn.Module]] = None
               ) -> Optional[ActivationCapture]:
    """The capture kept in ``work`` (the dict a caller passes to
    :func:`~.sweep.rescale_critic_` and keeps across steps); with ``layers``, (re)installed
    over them unless it already hooks exactly those. It lives as long as ``work`` holds it."""
    cap = work.get(CAPTURE_KEY)
    if layers is not None and (cap is None or cap.closed or not cap.covers(layers)):
        if cap is not None:
            cap.close()
        cap = work[CAPTURE_KEY] = ActivationCapture(layers)
    return cap


def _layers(pairs) -> list[nn.Module]:
    """The layers whose inputs and output gradients the solver needs, in forward order."""
    layers: list[nn.Module] = []
    for p in sorted(pairs, key=lambda p: p.index_in):
        for m in (p.layer_in, p.layer_out):
            if all(m is not q for q in layers):
                layers.append(m)
    return layers


def setup(work: dict, pairs) -> None:
    """Install the capture when the projection is built, so that its first step reads the
    training pass like every later one: a resumed run then repeats an uninterrupted one."""
    if pairs:
        capture_in(work, _layers(pairs))


def _statistics(ctx: SolveContext) -> Stats:
    pairs = ctx.cache.get("pairs") or [ctx.pair]
    layers = _layers(pairs)
    cap = None if ctx.state is None else capture_in(ctx.state, layers)
    batch = ctx.batch
    sub = ctx.options.get("subsample")
    if sub is None:
        sub = DEFAULTS["subsample"]
    idx = capture.subsample(batch.shape[0], int(sub) if sub > 0 else None, batch.device)
    got = None if cap is None else capture.from_capture(cap, batch, idx)
    ctx.cache["output_source"] = "capture" if got is not None else "own_pass"
    if cap is not None:
        cap.records.clear()
    if got is None:
        with cap.paused() if cap is not None else nullcontext():
            got = capture.own_pass(ctx.critic, layers, batch, idx)
    return Stats(layers, *got)


@dataclass
class OutputParams:
    """``constraint.solvers.output``: weight of a cost on |log d| that keeps units' in/out
    balance from drifting, and the samples of the batch its statistics use (None: 8; 0: all)."""
    balance_weight: float = 0.0
    subsample: Optional[int] = None

    def validate(self) -> None:
        if self.balance_weight < 0:
            raise ValueError(f"balance_weight must be >= 0 (got {self.balance_weight})")
        if self.subsample is not None and self.subsample < 0:
            raise ValueError(f"subsample must be >= 0 (0: the whole batch) or null (8) "
                             f"(got {self.subsample})")


@register_solver("output", params=OutputParams, capabilities=("uses_batch", "discrete"),
                 setup=setup)
def output_solver(ctx: SolveContext) -> Tensor:
    """d per unit minimising the unit's first-order output change after clipping (module doc)."""
    fallback = exact_without_batch(ctx, "output")
    if fallback is not None:
        return fallback
    opts = {**DEFAULTS, **{k: v for k, v in ctx.options.items() if v is not None}}
    pair = ctx.pair
    if "output_stats" not in ctx.cache:
        ctx.cache["output_stats"] = _statistics(ctx)
    stats: Stats = ctx.cache["output_stats"]
    if not (stats.ok(pair.layer_in) and stats.ok(pair.layer_out)):
        return solvers.exact(ctx.a, ctx.b, ctx.l_in, ctx.l_out, work=ctx.work)

    U = pair.units
    use_w = "weight" in ctx.params
    w_in = _weight(pair.layer_in).detach().reshape(U, -1)
    bias = pair.layer_in.bias.detach() if ("bias" in ctx.params
                                            and pair.layer_in.bias is not None) else None
    w_out = _weight(pair.layer_out).detach()
    K = w_out.shape[0]
    m = w_out[0].numel() // U                  # columns (group or kernel) per unit
    w_out = w_out.reshape(K, U * m)
    dt = torch.float64
    amax = w_in.abs().amax(1).to(dt) if use_w else torch.zeros(U, dtype=dt, device=w_in.device)
    if bias is not None:
        amax = torch.maximum(amax, bias.abs().to(dt))
    bmax = w_out.abs().view(K, U, m).amax((0, 2)).to(dt) if use_w else \
        torch.zeros(U, dtype=dt, device=w_in.device)
    t_hi = (amax / ctx.l_in).log()             # t >= t_hi: incoming side in its box
    t_lo = (ctx.l_out / bmax).log()            # t <= t_lo: outgoing side in its box
    R = float(opts["log_range"])

    # balance target: the log-balance at the first call, kept in this layer's work dict
    lam = float(opts["balance_weight"] or 0.0)
    target = torch.zeros(U, dtype=dt, device=w_in.device)
    if lam > 0:
        bal = log_balance(*(x.to(dt) for x in unit_norms(pair)))
        store = ctx.work if ctx.work is not None else ctx.cache.setdefault(f"b0_{ctx.index}", {})
        if "output_b0" not in store or store["output_b0"].shape != bal.shape:
            store["output_b0"] = bal.clone()
        # in/d, out*d lower log(|in|/|out|) by 2 log d
        target = ((bal - store["output_b0"]) / 2).clamp(-R, R)

    # units that some d puts in the box: the point of [t_hi, t_lo] closest to the target
    t = torch.minimum(torch.maximum(target, t_hi), t_lo)
    conf = (t_hi > t_lo).nonzero().squeeze(1)
    ctx.cache.setdefault("output_conflicted", {})[ctx.index] = int(conf.numel())
    if conf.numel() and use_w:
        t = t.index_copy(0, conf, _solve_conflicted(ctx, stats, conf, w_in, bias, w_out, m,
                                                    t_hi, t_lo, target, lam, R, opts))
    d = torch.where(t == 0, torch.ones_like(t), t.exp()).to(w_in.dtype)
    stats.rescaled(pair.layer_in, pair.layer_out, d, m)
    return d


def _solve_conflicted(ctx: SolveContext, stats: Stats, conf: Tensor, w_in: Tensor,
                      bias: Optional[Tensor], w_out: Tensor, m: int, t_hi: Tensor,
                      t_lo: Tensor, target: Tensor, lam: float, R: float, opts) -> Tensor:
    """log d of the conflicted units ``conf``: the best point of a grid search over each
    unit's window (:func:`~.output_terms.minimise_on_grid`)."""
    pair = ctx.pair
    C = conf.numel()
    whole = C == pair.units
    lo_c, hi_c = t_lo.index_select(0, conf), t_hi.index_select(0, conf)
    tL, tR = lo_c.clamp_min(-R), hi_c.clamp_max(R)
    empty = tL > tR                       # window outside +-R: search all of [lo, hi]
    tL, tR = torch.where(empty, lo_c, tL), torch.where(empty, hi_c, tR)

    X_in, D_in = stats.get(pair.layer_in)
    X_out, D_out = stats.get(pair.layer_out)
    wi = w_in if whole else w_in.index_select(0, conf)
    bi = None if bias is None else (bias if whole else bias.index_select(0, conf))
    Di = D_in if whole else D_in.index_select(1, conf)
    cols = (conf.view(-1, 1) * m + torch.arange(m, device=conf.device)).reshape(-1)
    wo = w_out if whole else w_out.index_select(1, cols)
    Xo = X_out if whole else X_out.index_select(1, cols)
    X_in, Xo, Di, D_out = (x.to(w_in.dtype) for x in (X_in, Xo, Di, D_out))

    def df(grid: Tensor) -> Tensor:      # [n, C, G]
        return (contrib_in(X_in, Di, wi, bi, ctx.l_in, grid, ctx.work)
                + contrib_out(Xo, D_out, wo, ctx.l_out, grid, m, ctx.work))

    # coarse grid in log d over each unit's window, plus the point of the window nearest 0
    grid = search_grid(tL, tR, max(2, int(opts["grid"])))
    vals = df(grid)                                                     # [n, C, G+1]
    best = minimise_on_grid(vals, grid, target.index_select(0, conf), lam)
    if ctx.options.get("record_prediction"):
        pred = df(best.view(-1, 1))[:, :, 0]
        ctx.cache.setdefault("output_predicted", {})[ctx.index] = pred.sum(1)
        ctx.cache.setdefault("output_harm0", {})[ctx.index] = harm_at_one(vals, grid)
    return best


def predicted_change(cache: dict) -> Optional[Tensor]:
    """Sum over rescaled layers of the first-order output change the solver predicted for the
    chosen d (per selected sample), when ``options['record_prediction']`` was set."""
    pred = cache.get("output_predicted")
    if not pred:
        return None
    return sum(pred.values())


__all__ = ["ActivationCapture", "CAPTURE_KEY", "capture_in", "output_solver",
           "predicted_change", "DEFAULTS"]
