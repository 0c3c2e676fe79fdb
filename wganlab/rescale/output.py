"""The output-aware ``output`` solver (research): choose each unit's scale d so that the clipping
that follows changes the critic's output as little as possible, to first order, on the
current batch. The maths is in docs/output_solver.md; in short:

For sample n, a change dW of a weight layer's entries changes f(x_n) by, to first order,
``df_n = sum_e c_ne dW_e`` with ``c_ne = df(x_n)/dW_e`` the per-sample gradient of entry e
(Linear: ``delta_ni * a_nj``; Conv: ``sum_p delta_nip * patch_njp``; bias: ``sum_p delta_nip``),
``delta`` being df/d(pre-activation) and ``a`` the layer's input. Rescaling unit i by d and then
clipping gives, on the incoming side, the error ``-s_e (|W_e|/d - l_in)_+`` seen through the
rescaled sensitivity ``d*c``, and on the outgoing side ``-s_e (|W_e| d - l_out)_+`` seen through
``c/d``: in the critic's *original* sensitivities

    df_ni(d) = - sum_{e in in(i)}  c_ne s_e (|W_e| - l_in d)_+
               - sum_{e in out(i)} c_ne s_e (|W_e| - l_out / d)_+          (s_e = sign W_e)

which is piecewise affine in (d, 1/d) with breakpoints at |W_e|/l_in and l_out/|W_e|. The
solver minimises ``sum_n df_ni(d)^2`` per unit (per-sample cross terms kept within a unit:
a unit's errors add coherently in each sample before squaring) over d, treating units
independently (the cross terms between *different* units are neglected). A unit that some d
puts entirely in the box gets the point of that interval closest to 1 (or to its balance
target), as the ``exact`` solver does, since its clip error is then 0. Only "conflicted" units
are searched, in log d within [log lo, log hi] and +-``log_range``: ``grid`` points per unit
(plus the one nearest d = 1) are evaluated exactly, all units and points at once through one
GEMM per side (``clamp(W, +-l e^t) - W`` stacked over the grid, against the sampled inputs,
times the sensitivities: no Python loop over units or points); between them each sample's df
is interpolated linearly, which makes the objective a quadratic on each segment between grid
points: it is minimised there in closed form.

Sensitivities come from the critic step's own forward/backward pass: forward hooks on the
weight layers (installed on the first call, see :class:`ActivationCapture`) keep each layer's
input and, through a tensor hook on its output, the gradient of the loss there. The loss being
``-(mean f(real) - mean f(fake))`` over ``batch = cat([real, fake])`` (B each), the captured
gradient of sample n is ``-delta_n / B`` (real) or ``+delta_n / B`` (fake); delta is recovered by
multiplying by ``-B`` / ``+B``. A forward is used only if its input equals the observed batch
(or one of its halves): the forward on a penalty's interpolates (GP/LP) or the generator's step
is never mistaken for it, and the gradients are taken at that forward's own outputs, so a
penalty added to the loss does not contaminate them (R1's forward on real images that require
grad is a separate call too). Where no matching forward was seen (the first step, a plain loop
that computes the loss another way, a deep copy of the critic) the solver runs its own forward
and backward on the (sub-sampled) batch instead: correct, but it costs a forward and backward
of those rows.
"""
from __future__ import annotations

import logging
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import solvers
from .apply import unit_norms
from .layers import _weight
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


# ----------------------------------------------------------------------------- capture

class _Record:
    """One forward call of the critic: each layer's input and the gradient at its output."""
    __slots__ = ("x", "g", "bad")

    def __init__(self, n: int):
        self.x: list[Optional[Tensor]] = [None] * n
        self.g: list[Optional[Tensor]] = [None] * n
        self.bad = False

    def complete(self) -> bool:
        return not self.bad and all(t is not None for t in self.x) and \
            all(t is not None for t in self.g)


class ActivationCapture:
    """Forward hooks on ``layers`` (in forward order) that keep, for every forward call with
    grad enabled, each layer's input (detached: autograd keeps it anyway) and the gradient
    that the following backward pass delivers at its output (a tensor hook). The last ``keep``
    calls are kept. No copies are made; the overhead is a few Python calls per layer.

    A deep copy of the critic copies the hooks, but they only record the modules they were
    installed on (the copy's calls are ignored)."""

    def __init__(self, layers: list[nn.Module], keep: int = 8):
        self.layers = list(layers)
        self._ids = {id(m): k for k, m in enumerate(self.layers)}
        self.records: deque[_Record] = deque(maxlen=keep)
        self.enabled = True
        ref = weakref.ref(self)

        def hook(m, args, out):
            cap = ref()
            if cap is not None:
                cap._forward(m, args, out)
        self._handles = [m.register_forward_hook(hook) for m in self.layers]

    def _forward(self, m: nn.Module, args, out) -> None:
        if not (self.enabled and torch.is_grad_enabled() and isinstance(out, Tensor)
                and out.requires_grad and args and isinstance(args[0], Tensor)):
            return
        k = self._ids.get(id(m))
        if k is None or self.layers[k] is not m:
            return
        if k == 0:
            self.records.append(_Record(len(self.layers)))
        if not self.records:
            return
        rec = self.records[-1]
        if rec.x[k] is not None:        # a layer called twice in one forward: unusable
            rec.bad = True
            return
        rec.x[k] = args[0].detach()

        def grad_hook(g: Tensor, rec=rec, k=k) -> None:
            rec.g[k] = g.detach() if rec.g[k] is None else rec.g[k] + g.detach()
        out.register_hook(grad_hook)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self.records.clear()


_CAPTURES: "weakref.WeakKeyDictionary[nn.Module, ActivationCapture]" = weakref.WeakKeyDictionary()


def capture_for(critic: nn.Module, layers: Optional[list[nn.Module]] = None
                ) -> Optional[ActivationCapture]:
    """The capture installed on ``critic`` (installed now over ``layers`` if given and new)."""
    cap = _CAPTURES.get(critic)
    if cap is None and layers is not None:
        cap = _CAPTURES[critic] = ActivationCapture(layers)
    return cap


# ----------------------------------------------------------------------------- statistics

def _layer_view(m: nn.Module, x: Tensor, g: Tensor) -> Optional[tuple[Tensor, Tensor]]:
    """(X [n, F, P], D [n, out, P]): the layer's input as patches (F = fan-in, matching
    ``weight.reshape(out, -1)``) and the sensitivity at its output, over P positions.
    None for layers the solver does not model."""
    n = x.shape[0]
    if isinstance(m, nn.Linear):
        X = x.reshape(n, -1, m.in_features).transpose(1, 2)
        D = g.reshape(n, -1, m.out_features).transpose(1, 2)
        return X, D
    if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups == 1 and \
            m.padding_mode == "zeros" and not isinstance(m.padding, str):
        if isinstance(m, nn.Conv1d):
            x2 = x.unsqueeze(-1)
            k, dl, p, s = ((m.kernel_size[0], 1), (m.dilation[0], 1), (m.padding[0], 0),
                           (m.stride[0], 1))
        else:
            x2, k, dl, p, s = x, m.kernel_size, m.dilation, m.padding, m.stride
        X = F.unfold(x2, k, dilation=dl, padding=p, stride=s)
        D = g.reshape(n, m.out_channels, -1)
        if X.shape[2] != D.shape[2]:
            return None
        return X, D
    return None


class _Stats:
    """Per-layer (X, D) on the chosen samples, with the scales applied by the sweep so far
    (X columns / d of the pair feeding them, D rows * d of the pair they belong to)."""

    def __init__(self, layers: list[nn.Module], xs: list[Tensor], gs: list[Tensor]):
        self.layers = layers
        self.index = {id(m): k for k, m in enumerate(layers)}
        self.views = [_layer_view(m, x, g) for m, x, g in zip(layers, xs, gs)]
        self.xscale: dict[int, Tensor] = {}
        self.dscale: dict[int, Tensor] = {}

    def ok(self, m: nn.Module) -> bool:
        k = self.index.get(id(m))
        return k is not None and self.views[k] is not None

    def get(self, m: nn.Module) -> tuple[Tensor, Tensor]:
        """(X [n, F, P], D [n, out, P]) of layer ``m`` as the sweep has rescaled it so far."""
        k = self.index[id(m)]
        X, D = self.views[k]
        if k in self.xscale:
            X = X * self.xscale[k].to(X.dtype).view(1, -1, 1)
        if k in self.dscale:
            D = D * self.dscale[k].to(D.dtype).view(1, -1, 1)
        return X, D

    def rescaled(self, m_in: nn.Module, m_out: nn.Module, d: Tensor, cols_per_unit: int) -> None:
        """Record that the pair (m_in, m_out) was rescaled by d."""
        k_in, k_out = self.index[id(m_in)], self.index[id(m_out)]
        d = d.double()
        self.dscale[k_in] = self.dscale.get(k_in, 1.0) * d
        inv = (1 / d).repeat_interleave(cols_per_unit)
        self.xscale[k_out] = self.xscale.get(k_out, 1.0) * inv


def _subsample(n_batch: int, limit: Optional[int], device) -> Tensor:
    """Evenly spaced sample indices, half from each half of the batch (no RNG is consumed)."""
    if limit is None or limit >= n_batch:
        return torch.arange(n_batch, device=device)
    half = n_batch // 2
    k = max(1, limit // 2)
    pick = torch.div(torch.arange(k, device=device) * half, k, rounding_mode="floor")
    return torch.cat([pick, pick + half])


def _match(cap: ActivationCapture, batch: Tensor) -> Optional[list[tuple[_Record, int]]]:
    """Records covering ``batch``: [(record, row offset in batch)], or None."""
    N = batch.shape[0]
    flat = batch.reshape(N, -1)
    half = N // 2
    found: dict[int, _Record] = {}
    # in call order: the loss's own forward comes before a penalty's (R1 re-runs the real
    # half with grad enabled: the first matching call is the loss's)
    for rec in cap.records:
        if not rec.complete():
            continue
        x0 = rec.x[0]
        n = x0.shape[0]
        if x0.numel() != n * flat.shape[1] or x0.dtype != batch.dtype:
            continue
        x0 = x0.reshape(n, -1)
        if n == N and not found and torch.equal(x0, flat):
            return [(rec, 0)]
        if n == half and N == 2 * half:
            for off in (0, half):
                if off not in found and torch.equal(x0, flat[off:off + half]):
                    found[off] = rec
        if len(found) == 2:
            return [(found[0], 0), (found[half], half)]
    return None


def _from_capture(cap: ActivationCapture, batch: Tensor, idx: Tensor
                  ) -> Optional[tuple[list[Tensor], list[Tensor]]]:
    recs = _match(cap, batch)
    if recs is None:
        return None
    N = batch.shape[0]
    half = N // 2
    # df_n = -B * dloss/dout_n (real half), +B * dloss/dout_n (fake half)
    sign = torch.where(idx < half, -float(half), float(half))
    xs, gs = [], []
    for k in range(len(cap.layers)):
        if len(recs) == 1:
            x, g = recs[0][0].x[k].index_select(0, idx), recs[0][0].g[k].index_select(0, idx)
        else:
            parts = [(r, off, idx[(idx >= off) & (idx < off + half)] - off) for r, off in recs]
            x = torch.cat([r.x[k].index_select(0, i) for r, _, i in parts])
            g = torch.cat([r.g[k].index_select(0, i) for r, _, i in parts])
        xs.append(x)
        gs.append(g * sign.to(g.dtype).view(-1, *([1] * (g.dim() - 1))))
    return xs, gs


def _own_pass(critic: nn.Module, layers: list[nn.Module], batch: Tensor, idx: Tensor
              ) -> tuple[list[Tensor], list[Tensor]]:
    """delta = df_n/d(out) by a forward + backward of sum_n f(x_n) on the chosen samples
    (eval mode; parameters' .grad untouched)."""
    xs: list[Optional[Tensor]] = [None] * len(layers)
    outs: list[Optional[Tensor]] = [None] * len(layers)
    pos = {id(m): k for k, m in enumerate(layers)}

    def hook(m, args, out):
        k = pos.get(id(m))
        if k is not None and xs[k] is None:
            xs[k], outs[k] = args[0].detach(), out
    handles = [m.register_forward_hook(hook) for m in layers]
    cap = _CAPTURES.get(critic)
    if cap is not None:
        cap.enabled = False
    flags = [(m, m.training) for m in critic.modules()]
    critic.eval()
    try:
        with torch.enable_grad():
            x = batch.index_select(0, idx).detach().requires_grad_(True)
            f = critic(x)
            gs = torch.autograd.grad(f.sum(), outs)
    finally:
        for h in handles:
            h.remove()
        for m, t in flags:
            m.training = t
        if cap is not None:
            cap.enabled = True
    return xs, [g.detach() for g in gs]


def _statistics(ctx: SolveContext) -> _Stats:
    pairs = ctx.cache.get("pairs") or [ctx.pair]
    layers: list[nn.Module] = []
    for p in sorted(pairs, key=lambda p: p.index_in):
        for m in (p.layer_in, p.layer_out):
            if all(m is not q for q in layers):
                layers.append(m)
    cap = capture_for(ctx.critic, layers)
    if [id(m) for m in cap.layers] != [id(m) for m in layers]:
        cap.remove()
        cap = _CAPTURES[ctx.critic] = ActivationCapture(layers)
    batch = ctx.batch
    sub = ctx.options.get("subsample")
    if sub is None:
        sub = DEFAULTS["subsample"]
    idx = _subsample(batch.shape[0], int(sub) if sub > 0 else None, batch.device)
    got = _from_capture(cap, batch, idx)
    ctx.cache["output_source"] = "capture" if got is not None else "own_pass"
    cap.records.clear()
    if got is None:
        got = _own_pass(ctx.critic, layers, batch, idx)
    return _Stats(layers, *got)


# ----------------------------------------------------------------------------- the solve

def _buffer(work: Optional[dict], key: str, shape: tuple, like: Tensor) -> Tensor:
    """A scratch tensor kept in ``work`` across steps: fresh large allocations page-fault on
    every step, which costs more than the arithmetic on CPU."""
    if work is None:
        return like.new_empty(shape)
    buf = work.get(key)
    if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
        buf = work[key] = like.new_empty(shape)
    return buf


def _contrib_in(X: Tensor, D: Tensor, w: Tensor, bias: Optional[Tensor], l: float,
                grid: Tensor, work: Optional[dict] = None) -> Tensor:
    """Per-sample first-order output change from the clipping of the incoming side of the
    selected units, at each of their grid points: [n, C, G] (see the module doc).

    ``w`` [C, F] (selected rows), ``bias`` [C] or None, ``grid`` [C, G] in log d; ``X``
    [n, F, P], ``D`` [n, C, P] (the selected rows' sensitivities). The clip error of the
    rescaled entry seen through the rescaled sensitivity d*c is c * Z with
    Z = -sign(W) (|W| - l d)_+."""
    n, F_, P = X.shape
    C, G = grid.shape
    thr = (l * grid.exp()).to(w.dtype).t().reshape(G, C, 1)                 # [G, C, 1]
    # -sign(W) (|W| - thr)_+ = clamp(W, -thr, thr) - W: two passes over [G, C, F]
    Z = _buffer(work, "output_zin", (G, C, F_), w)   # contiguous: reshaped without a copy
    # Z + W = clamp(W, -thr, thr): two passes (minimum/maximum: several times faster than
    # clamp with tensor bounds on CPU); the product with W itself is subtracted after the matmul
    torch.maximum(torch.minimum(w.unsqueeze(0), thr, out=Z), -thr, out=Z)
    if P == 1:
        Y = X[:, :, 0] @ Z.reshape(G * C, F_).t()                           # [n, G*C]
        Y = Y.view(n, G, C) - (X[:, :, 0] @ w.t()).unsqueeze(1)
        out = Y * D[:, :, 0].unsqueeze(1)
    else:
        Xf = X.permute(1, 0, 2).reshape(F_, n * P)
        Y = (Z.reshape(G * C, F_) @ Xf).view(G, C, n * P) - (w @ Xf).unsqueeze(0)
        out = (Y.view(G, C, n, P) * D.permute(1, 0, 2).unsqueeze(0)).sum(3).permute(2, 0, 1)
    if bias is not None:
        tb = thr[:, :, 0]
        zb = torch.maximum(torch.minimum(bias.unsqueeze(0), tb), -tb) - bias.unsqueeze(0)
        out = out + D.sum(2).unsqueeze(1) * zb.unsqueeze(0)
    return out.permute(0, 2, 1).double()                                    # [n, C, G]


def _contrib_out(X: Tensor, D: Tensor, w: Tensor, l: float, grid: Tensor, m: int,
                 work: Optional[dict] = None) -> Tensor:
    """The same for the outgoing side: ``w`` [K, C*m] (the selected units' columns), ``X``
    [n, C*m, P] (their input columns), ``D`` [n, K, P]; Z = -sign(W) (|W| - l/d)_+ seen
    through c/d. Returns [n, C, G]."""
    n, Fc, P = X.shape
    C, G = grid.shape
    K = w.shape[0]
    thr = (l * (-grid).exp()).to(w.dtype).t().repeat_interleave(m, 1).unsqueeze(0)  # [1,G,C*m]
    Z = _buffer(work, "output_zout", (K, G, Fc), w)
    torch.maximum(torch.minimum(w.unsqueeze(1), thr, out=Z), -thr, out=Z)   # Z + W
    if P == 1:
        Y = (D[:, :, 0] @ Z.reshape(K, G * Fc)).view(n, G, Fc) - (D[:, :, 0] @ w).unsqueeze(1)
        Y = Y * X[:, :, 0].unsqueeze(1)
    else:
        Df = D.permute(0, 2, 1).reshape(n * P, K)
        Y = (Df @ Z.reshape(K, G * Fc)).view(n * P, G, Fc) - (Df @ w).unsqueeze(1)
        Y = (Y.view(n, P, G, Fc) * X.permute(0, 2, 1).unsqueeze(2)).sum(1)   # [n, G, Fc]
    return Y.view(n, G, C, m).sum(3).permute(0, 2, 1).double()              # [n, C, G]


@dataclass
class OutputParams:
    """``constraint.solvers.output``: weight of a cost on |log d| that keeps units' in/out
    balance from drifting, and the samples of the batch its statistics use (None: 8)."""
    balance_weight: float = 0.0
    subsample: Optional[int] = None

    def validate(self) -> None:
        if self.balance_weight < 0:
            raise ValueError(f"balance_weight must be >= 0 (got {self.balance_weight})")
        if self.subsample is not None and self.subsample < 1:
            raise ValueError(f"subsample must be > 0 or null (got {self.subsample})")


@register_solver("output", params=OutputParams, capabilities=("uses_batch",))
def output_solver(ctx: SolveContext) -> Tensor:
    """d per unit minimising the unit's first-order output change after clipping (module doc)."""
    fallback = exact_without_batch(ctx, "output")
    if fallback is not None:
        return fallback
    opts = {**DEFAULTS, **{k: v for k, v in ctx.options.items() if v is not None}}
    pair = ctx.pair
    if "output_stats" not in ctx.cache:
        ctx.cache["output_stats"] = _statistics(ctx)
    stats: _Stats = ctx.cache["output_stats"]
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


def _solve_conflicted(ctx: SolveContext, stats: _Stats, conf: Tensor, w_in: Tensor,
                      bias: Optional[Tensor], w_out: Tensor, m: int, t_hi: Tensor,
                      t_lo: Tensor, target: Tensor, lam: float, R: float, opts) -> Tensor:
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
        return (_contrib_in(X_in, Di, wi, bi, ctx.l_in, grid, ctx.work)
                + _contrib_out(Xo, D_out, wo, ctx.l_out, grid, m, ctx.work))

    # coarse grid in log d over each unit's window, plus the point of the window nearest 0
    G = max(2, int(opts["grid"]))
    frac = torch.linspace(0, 1, G, dtype=torch.float64, device=conf.device)
    grid = torch.cat([tL.view(-1, 1) + (tR - tL).view(-1, 1) * frac,
                      torch.zeros_like(tL).clamp(min=tL, max=tR).view(-1, 1)], 1)
    grid = grid.sort(1).values
    vals = df(grid)                                                     # [n, C, G+1]
    # between evaluated points each sample's df is interpolated linearly in log d (it is
    # piecewise affine in d and 1/d with many small kinks), so on segment k, t = g0 + w h with
    # w in [0, 1], the objective sum_n (v0 + w (v1 - v0))^2 + lam' (t - target)^2 is a quadratic
    # in w: minimised in closed form per segment, then the best segment is taken
    S = vals.square().sum(0)                                            # [C, G+1]
    s01 = (vals[:, :, :-1] * vals[:, :, 1:]).sum(0)                     # [C, G]
    s00, s11 = S[:, :-1], S[:, 1:]
    g0, h = grid[:, :-1], grid[:, 1:] - grid[:, :-1]
    qa, qb, qc = s00 - 2 * s01 + s11, 2 * (s01 - s00), s00              # harm(w)
    harm0 = S.gather(1, (grid == 0).long().argmax(1, keepdim=True)).squeeze(1)
    if lam > 0:   # the balance cost, relative to the unit's largest evaluated harm
        scale = S.amax(1, keepdim=True).clamp_min(1e-300)
        e0 = g0 - target.index_select(0, conf).view(-1, 1)
        qa, qb, qc = qa / scale + lam * h * h, qb / scale + 2 * lam * h * e0, \
            qc / scale + lam * e0 * e0
    w = torch.where(qa > 0, -qb / (2 * qa).clamp_min(1e-300), torch.zeros_like(qa))
    w = torch.where(h > 0, w.clamp(0, 1), torch.zeros_like(w))
    # candidates per segment: its interior minimiser and both ends
    cand = torch.stack([w, torch.ones_like(w), torch.zeros_like(w)], 2)          # [C, G, 3]
    obj = qa[:, :, None] * cand.square() + qb[:, :, None] * cand + qc[:, :, None]
    t_c = g0[:, :, None] + h[:, :, None] * cand
    obj, t_c = obj.flatten(1), t_c.flatten(1)
    # ties (e.g. a flat objective) go to the point nearest d = 1
    obj = obj + 1e-12 * obj.abs().amax(1, keepdim=True) * t_c.abs()
    best = t_c.gather(1, obj.argmin(1, keepdim=True)).squeeze(1)
    if ctx.options.get("record_prediction"):
        pred = df(best.view(-1, 1))[:, :, 0]
        ctx.cache.setdefault("output_predicted", {})[ctx.index] = pred.sum(1)
        ctx.cache.setdefault("output_harm0", {})[ctx.index] = harm0
    return best


def predicted_change(cache: dict) -> Optional[Tensor]:
    """Sum over rescaled layers of the first-order output change the solver predicted for the
    chosen d (per selected sample), when ``options['record_prediction']`` was set."""
    pred = cache.get("output_predicted")
    if not pred:
        return None
    return sum(pred.values())


__all__ = ["ActivationCapture", "capture_for", "output_solver", "predicted_change", "DEFAULTS"]
