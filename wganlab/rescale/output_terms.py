"""The maths of the ``output`` solver (:mod:`.output`): pure tensor functions, no hooks and no
solver context. docs/output_solver.md derives it; in short:

For sample n, a change dW of a weight layer's entries changes f(x_n) by, to first order,
``df_n = sum_e c_ne dW_e`` with ``c_ne = df(x_n)/dW_e`` the per-sample gradient of entry e
(Linear: ``delta_ni * a_nj``; Conv: ``sum_p delta_nip * patch_njp``; bias: ``sum_p delta_nip``),
``delta`` being df/d(pre-activation) and ``a`` the layer's input. Rescaling unit i by d and then
clipping gives, on the incoming side, the error ``-s_e (|W_e|/d - l_in)_+`` seen through the
rescaled sensitivity ``d*c``, and on the outgoing side ``-s_e (|W_e| d - l_out)_+`` seen through
``c/d``: in the critic's *original* sensitivities

    df_ni(d) = - sum_{e in in(i)}  c_ne s_e (|W_e| - l_in d)_+
               - sum_{e in out(i)} c_ne s_e (|W_e| - l_out / d)_+          (s_e = sign W_e)

which is piecewise affine in (d, 1/d) with breakpoints at |W_e|/l_in and l_out/|W_e|.
:func:`contrib_in` and :func:`contrib_out` evaluate the two sums for all selected units at all
their grid points in log d at once, through one GEMM per side (``clamp(W, +-l e^t) - W``
stacked over the grid, against the sampled inputs, times the sensitivities: no Python loop over
units or points). Between grid points each sample's df is interpolated linearly, which makes
``sum_n df_ni^2`` a quadratic on each segment: :func:`minimise_on_grid` minimises it there in
closed form and keeps the best segment.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .scratch import Work, scratch


def layer_view(m: nn.Module, x: Tensor, g: Tensor) -> Optional[tuple[Tensor, Tensor]]:
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


class Stats:
    """Per-layer (X, D) on the chosen samples, with the scales applied by the sweep so far
    (X columns / d of the pair feeding them, D rows * d of the pair they belong to)."""

    def __init__(self, layers: list[nn.Module], xs: list[Tensor], gs: list[Tensor]):
        self.layers = layers
        self.index = {id(m): k for k, m in enumerate(layers)}
        self.views = [layer_view(m, x, g) for m, x, g in zip(layers, xs, gs)]
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


def contrib_in(X: Tensor, D: Tensor, w: Tensor, bias: Optional[Tensor], l: float,
               grid: Tensor, work: Work = None) -> Tensor:
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
    Z = scratch(work, "output_zin", w, (G, C, F_))   # contiguous: reshaped without a copy
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


def contrib_out(X: Tensor, D: Tensor, w: Tensor, l: float, grid: Tensor, m: int,
                work: Work = None) -> Tensor:
    """The same for the outgoing side: ``w`` [K, C*m] (the selected units' columns), ``X``
    [n, C*m, P] (their input columns), ``D`` [n, K, P]; Z = -sign(W) (|W| - l/d)_+ seen
    through c/d. Returns [n, C, G]."""
    n, Fc, P = X.shape
    C, G = grid.shape
    K = w.shape[0]
    thr = (l * (-grid).exp()).to(w.dtype).t().repeat_interleave(m, 1).unsqueeze(0)  # [1,G,C*m]
    Z = scratch(work, "output_zout", w, (K, G, Fc))
    torch.maximum(torch.minimum(w.unsqueeze(1), thr, out=Z), -thr, out=Z)   # Z + W
    if P == 1:
        Y = (D[:, :, 0] @ Z.reshape(K, G * Fc)).view(n, G, Fc) - (D[:, :, 0] @ w).unsqueeze(1)
        Y = Y * X[:, :, 0].unsqueeze(1)
    else:
        Df = D.permute(0, 2, 1).reshape(n * P, K)
        Y = (Df @ Z.reshape(K, G * Fc)).view(n * P, G, Fc) - (Df @ w).unsqueeze(1)
        Y = (Y.view(n, P, G, Fc) * X.permute(0, 2, 1).unsqueeze(2)).sum(1)   # [n, G, Fc]
    return Y.view(n, G, C, m).sum(3).permute(0, 2, 1).double()              # [n, C, G]


def search_grid(lo: Tensor, hi: Tensor, points: int) -> Tensor:
    """[C, points + 1] in log d: ``points`` evenly spaced over each unit's window [lo, hi]
    and the point of the window nearest 0 (d = 1), sorted."""
    frac = torch.linspace(0, 1, points, dtype=torch.float64, device=lo.device)
    grid = torch.cat([lo.view(-1, 1) + (hi - lo).view(-1, 1) * frac,
                      torch.zeros_like(lo).clamp(min=lo, max=hi).view(-1, 1)], 1)
    return grid.sort(1).values


def minimise_on_grid(vals: Tensor, grid: Tensor, target: Tensor, lam: float) -> Tensor:
    """The log d per unit minimising ``sum_n df_n^2`` (+ ``lam`` (log d - target)^2 relative to
    the unit's largest evaluated harm), ``vals`` [n, C, G] being df at the points ``grid``
    [C, G] and df interpolated linearly in log d between them.

    On segment k, t = g0 + w h with w in [0, 1], the objective
    sum_n (v0 + w (v1 - v0))^2 + lam' (t - target)^2 is a quadratic in w: minimised in closed
    form per segment, then the best segment is taken; ties (e.g. a flat objective) go to the
    point nearest d = 1."""
    S = vals.square().sum(0)                                            # [C, G]
    s01 = (vals[:, :, :-1] * vals[:, :, 1:]).sum(0)                     # [C, G-1]
    s00, s11 = S[:, :-1], S[:, 1:]
    g0, h = grid[:, :-1], grid[:, 1:] - grid[:, :-1]
    qa, qb, qc = s00 - 2 * s01 + s11, 2 * (s01 - s00), s00              # harm(w)
    if lam > 0:   # the balance cost, relative to the unit's largest evaluated harm
        scale = S.amax(1, keepdim=True).clamp_min(1e-300)
        e0 = g0 - target.view(-1, 1)
        qa, qb, qc = qa / scale + lam * h * h, qb / scale + 2 * lam * h * e0, \
            qc / scale + lam * e0 * e0
    w = torch.where(qa > 0, -qb / (2 * qa).clamp_min(1e-300), torch.zeros_like(qa))
    w = torch.where(h > 0, w.clamp(0, 1), torch.zeros_like(w))
    # candidates per segment: its interior minimiser and both ends
    cand = torch.stack([w, torch.ones_like(w), torch.zeros_like(w)], 2)          # [C, G-1, 3]
    obj = qa[:, :, None] * cand.square() + qb[:, :, None] * cand + qc[:, :, None]
    t_c = g0[:, :, None] + h[:, :, None] * cand
    obj, t_c = obj.flatten(1), t_c.flatten(1)
    obj = obj + 1e-12 * obj.abs().amax(1, keepdim=True) * t_c.abs()
    return t_c.gather(1, obj.argmin(1, keepdim=True)).squeeze(1)


def harm_at_one(vals: Tensor, grid: Tensor) -> Tensor:
    """``sum_n df_n^2`` per unit at d = 1 (at its first grid point where d = 1 lies outside
    the unit's window): the harm of clipping without rescaling, for diagnostics."""
    return vals.square().sum(0).gather(1, (grid == 0).long().argmax(1, keepdim=True)).squeeze(1)
