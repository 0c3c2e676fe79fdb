"""Move a critic along its invariant curves: rescale unit pairs in place, keep the optimizer's
state consistent, and read the per-unit tensors the solvers work on.

Unit i of a :class:`UnitPair` owns row i of ``layer_in``'s weight (dim 0) and its bias entry,
and slice i of ``layer_out``'s weight along dim 1 (``group`` consecutive columns after a
flatten). Scaling the first by 1/d_i and the second by d_i leaves the critic's function intact.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
from torch import Tensor

from .discovery import UnitPair
from .layers import _weight
from .scratch import scratch

log = logging.getLogger("wganlab.rescale")


def _out_view(t: Tensor, pair: UnitPair) -> Tensor:
    """``layer_out``'s weight (or a tensor shaped like it) as [K, U, group-or-kernel...]."""
    if t.dim() == 2:                      # Linear: [K, U*group] -> [K, U, group]
        return t.view(t.shape[0], pair.units, pair.group)
    return t                              # ConvNd: [K, U, k...]


def _abs(t: Tensor, work: Optional[dict[str, Tensor]], key: str) -> Tensor:
    """|t|, into a buffer of ``work`` when given (reused across steps)."""
    if work is None:
        return t.abs()
    return torch.abs(t, out=scratch(work, key, t))


def incoming(pair: UnitPair, params: Sequence[str] = ("weight", "bias"),
             work: Optional[dict[str, Tensor]] = None) -> Tensor:
    """|entries entering each unit| that the box constrains, as [U, ...] (the solvers' ``a``).

    ``params`` selects weight and/or bias as clipping does; the bias, when present, is appended
    as one more column (a copy; without it the weight's own memory layout is used)."""
    w = _weight(pair.layer_in).detach()
    U = pair.units
    bias = pair.layer_in.bias if "bias" in params else None
    if "weight" not in params:
        return w.new_zeros(U, 0) if bias is None else bias.detach().abs()[:, None]
    if bias is None:
        return _abs(w, work, "abs_in")
    parts = [_abs(w, work, "abs_in").reshape(U, -1), bias.detach().abs()[:, None]]
    if work is None:
        return torch.cat(parts, 1)
    return torch.cat(parts, 1, out=scratch(work, "cat_in", w, (U, parts[0].shape[1] + 1)))


def outgoing(pair: UnitPair, params: Sequence[str] = ("weight", "bias"),
             work: Optional[dict[str, Tensor]] = None) -> Tensor:
    """|entries leaving each unit| as a [U, ...] transposed view (no copy; the solvers' ``b``)."""
    w = _weight(pair.layer_out).detach()
    if "weight" not in params:
        return w.new_zeros(pair.units, 0)
    w = _abs(w, work, "abs_out")
    if w.dim() == 2:
        w = w.view(w.shape[0], pair.units, pair.group)
    return w.transpose(0, 1)


def _scale_in_(t: Tensor, d: Tensor) -> None:
    t.mul_(d.view(-1, *([1] * (t.dim() - 1))))


def _scale_out_(t: Tensor, d: Tensor, pair: UnitPair) -> None:
    shape = [1] * (t.dim() + (t.dim() == 2))
    shape[1] = -1
    try:
        v = _out_view(t, pair)
    except RuntimeError:  # a Linear weight whose strides allow no [K, U, group] view
        t.copy_((t.reshape(t.shape[0], pair.units, pair.group) * d.view(shape)).flatten(1, 2))
        return
    v.mul_(d.view(shape))


@torch.no_grad()
def rescale_pair_(pair: UnitPair, d: Tensor) -> None:
    """W_in rows and bias / d, W_out unit slices * d, in place: the function is unchanged."""
    inv = (1 / d).to(_weight(pair.layer_in).dtype)
    _scale_in_(_weight(pair.layer_in), inv)
    if pair.layer_in.bias is not None:
        pair.layer_in.bias.mul_(inv)
    _scale_out_(_weight(pair.layer_out), d.to(_weight(pair.layer_out).dtype), pair)


# ----------------------------------------------------------------------------- optimizer state

#: state entry -> power p: under a rescaling that multiplies a parameter's gradient by s, the
#: entry becomes entry * s**p (first moments p=1, second moments p=2). RMSprop's momentum buffer
#: accumulates g / (sqrt(v) + eps), invariant up to eps: p=0. Weight decay added to the gradient
#: (L2, not AdamW's decoupled decay) breaks the equivalence; it is not corrected for.
STATE_POWERS: dict[type, dict[str, int]] = {
    torch.optim.SGD: {"momentum_buffer": 1},
    torch.optim.RMSprop: {"square_avg": 2, "grad_avg": 1, "momentum_buffer": 0},
    torch.optim.Adam: {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2},
    torch.optim.AdamW: {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2},
    torch.optim.NAdam: {"exp_avg": 1, "exp_avg_sq": 2},
    torch.optim.RAdam: {"exp_avg": 1, "exp_avg_sq": 2},
    torch.optim.Adamax: {"exp_avg": 1, "exp_inf": 1},
    torch.optim.Adagrad: {"sum": 2},
}
_warned: set[tuple[str, str]] = set()


def state_powers(optimizer: torch.optim.Optimizer) -> dict[str, int]:
    for cls in type(optimizer).__mro__:
        if cls in STATE_POWERS:
            return STATE_POWERS[cls]
    return {}


@torch.no_grad()
def transform_state_(optimizer: torch.optim.Optimizer, pair: UnitPair, d: Tensor) -> None:
    """Make ``optimizer``'s state what it would hold had it seen the rescaled critic's gradients.

    W_in -> W_in/d turns its gradient into d*g: an entry of power p is multiplied by d**p on
    the incoming side (weight rows and bias) and by d**-p on the outgoing side."""
    powers = state_powers(optimizer)
    w_in, w_out = _weight(pair.layer_in), _weight(pair.layer_out)
    sides = [(w_in, 1), (w_out, -1)]
    if pair.layer_in.bias is not None:
        sides.append((pair.layer_in.bias, 1))
    for p, sign in sides:
        state = optimizer.state.get(p)
        if not state:
            continue
        for key, value in state.items():
            if not torch.is_tensor(value) or value.shape != p.shape or key == "step":
                continue
            if key not in powers:
                tag = (type(optimizer).__name__, key)
                if tag not in _warned:
                    _warned.add(tag)
                    log.warning("optimizer %s: state %r left untouched by the rescaling",
                                *tag)
                continue
            power = powers[key] * sign
            if power == 0:
                continue
            s = (d.to(value.dtype)) ** power
            if p is w_out:
                _scale_out_(value, s, pair)
            else:
                _scale_in_(value, s)


# ----------------------------------------------------------------------------- diagnostics

@torch.no_grad()
def unit_norms(pair: UnitPair) -> tuple[Tensor, Tensor]:
    """(||incoming row incl. bias||, ||outgoing slice||) per unit, for balance diagnostics."""
    w_in = _weight(pair.layer_in).detach()
    row2 = w_in.reshape(pair.units, -1).square().sum(1)
    if pair.layer_in.bias is not None:
        row2 = row2 + pair.layer_in.bias.detach().square()
    col = _out_view(_weight(pair.layer_out).detach(), pair).transpose(0, 1)
    col2 = col.square().sum(tuple(range(1, col.dim())))
    return row2.sqrt(), col2.sqrt()


__all__ = ["incoming", "outgoing", "rescale_pair_", "transform_state_", "state_powers",
           "STATE_POWERS", "unit_norms"]
