"""Per-unit rescaling factors d for invariance-aware clipping: pure tensor maths.

Notation for one hidden layer of U units: ``a`` [U, ...] holds the magnitudes of the entries
entering unit i (its weight row / filter and its bias: under the rescaling they become a/d),
``b`` [U, ...] those leaving it (a column of the next weight, or H*W of them after a flatten;
they become b*d); ``l_in``/``l_out`` are the clipping bounds of the two layers. Any trailing
shape and strides are accepted, so a transposed view of the next layer's weight needs no copy.
Eq. (7) of Massart 2022, separable per unit:

    F_i(d) = sum_j [a_ij/d - l_in]_+^2 + sum_k [b_ik*d - l_out]_+^2

Each solver maps (a, b, l_in, l_out) to d [U] > 0, vectorised over units (the only Python loops
run over iterations, never over units). They know nothing of modules.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .scratch import Work, scratch


def _bc(r: Tensor, x: Tensor) -> Tensor:
    """A per-unit vector shaped to broadcast against a [U, ...] tensor."""
    return r.view(-1, *([1] * (x.dim() - 1)))


def _dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.dim()))


def _reduce(x: Tensor, op) -> Tensor:
    """``op`` (sum or amax) over all but the unit dim. A transposed view of a [K, U, ...]
    weight is reduced over K first, in its own memory order: reducing it directly over
    strided dims is several times slower."""
    if x.dim() == 1:
        return x
    if x.numel() == 0:
        return x.new_zeros(x.shape[0])
    if not x.is_contiguous() and x.transpose(0, 1).is_contiguous():
        x = op(x.transpose(0, 1), 0)
        # a Linear's [U, K, 1]: the second stage would reduce single entries (op overhead only)
        return op(x, _dims(x)) if x.numel() > x.shape[0] else x.reshape(x.shape[0])
    return op(x, _dims(x))


def _rowsum(x: Tensor) -> Tensor:
    return _reduce(x, torch.sum)


def _rowmax(x: Tensor) -> Tensor:
    return _reduce(x, torch.amax)


def violation(c: Tensor, l: float, scale: Optional[Tensor] = None, *, divide: bool = False,
              work: Work = None, key: str = "v") -> Tensor:
    """sum_j [c_ij * scale_i - l]_+^2 per unit (squared distance of a side to its box);
    ``divide``: c_ij / scale_i instead."""
    x = scratch(work, key, c, strided=True)
    if scale is None:
        torch.sub(c, l, out=x)
    else:
        (torch.div if divide else torch.mul)(c, _bc(scale, c), out=x)
        x.sub_(l)
    return _rowsum(x.clamp_min_(0).mul_(x))  # x*x: as square_, bitwise, but faster


def box_distance2(a: Tensor, b: Tensor, l_in: float, l_out: float,
                  d: Optional[Tensor] = None, work: Work = None) -> Tensor:
    """F_i(d) of eq. (7) per unit (d = 1 when omitted)."""
    if d is None:
        return violation(a, l_in, work=work, key="a") + violation(b, l_out, work=work, key="b")
    return (violation(a, l_in, d, divide=True, work=work, key="a")
            + violation(b, l_out, d, work=work, key="b"))


# ----------------------------------------------------------------------------- Algorithm 1

def paper(a: Tensor, b: Tensor, l_in: float, l_out: float, alpha: float = 1.1,
          k_max: int = 5, work: Work = None, sync_free: Optional[bool] = None) -> Tensor:
    """Algorithm 1 of Massart 2022 exactly as printed, vectorised over units.

    As printed: D starts at alpha (1/alpha where the outgoing side violates more); then, while
    k <= k_max (k_max + 1 rounds), D is multiplied (divided) by alpha as long as the side that
    violated more at D = 1 still violates more at D. Consequences of the printed text, kept on
    purpose: a unit whose two sides violate equally (e.g. not at all) keeps D = alpha and is
    rescaled by 1.1 for nothing; D can reach alpha**(k_max + 2). Each round evaluates only the
    units still moving, and skips a side whose largest entry is inside the box (sum = 0).

    ``sync_free`` (default: on any device but the CPU) never reads a value back to the host:
    every round evaluates all units (masked) and all k_max + 1 rounds run, so an accelerator
    is never stalled; the result is the same.
    """
    return _paper(a, b, l_in, l_out, alpha, k_max, work, _sync_free(a, sync_free))[0]


def _sync_free(x: Tensor, flag: Optional[bool]) -> bool:
    """Avoid host reads (``nonzero``, ``.any()``, ``float()``)? By default off the CPU only: on
    the CPU reading a value costs nothing and lets the solvers skip work."""
    return x.device.type != "cpu" if flag is None else bool(flag)


def _paper(a: Tensor, b: Tensor, l_in: float, l_out: float, alpha: float, k_max: int,
           work: Work, sync_free: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``paper``'s D, plus what paper_guarded reuses: the distance at D = 1 and the row maxima."""
    n_in = violation(a, l_in, work=work, key="a")      # line 4, at D = 1
    n_out = violation(b, l_out, work=work, key="b")    # line 5
    up = n_in > n_out
    down = n_out > n_in
    D = torch.full_like(n_in, alpha)
    D = torch.where(n_in < n_out, 1 / D, D)            # line 8
    active = up | down
    # a side whose largest entry stays inside the box at D violates by exactly 0: skip its pass
    amax, bmax = _rowmax(a), _rowmax(b)
    for _ in range(k_max + 1):                         # while k <= k_max
        n_in_new = _violation_where(active & (amax / D > l_in), a, l_in, D, True, work, "a",
                                    sync_free)
        n_out_new = _violation_where(active & (bmax * D > l_out), b, l_out, D, False, work, "b",
                                     sync_free)
        grow = active & up & (n_in_new > n_out_new)    # line 17
        shrink = active & down & (n_out_new > n_in_new)  # line 19
        D = torch.where(grow, D * alpha, torch.where(shrink, D / alpha, D))
        active = grow | shrink                         # else: k = k_max, the loop ends here
        if not sync_free and not bool(active.any()):
            break
    return D, n_in + n_out, amax, bmax


def _violation_where(rows: Tensor, c: Tensor, l: float, D: Tensor, divide: bool, work: Work,
                     key: str, sync_free: bool = False) -> Tensor:
    """``violation`` at scale D (c/D or c*D) for the selected rows, 0 elsewhere."""
    if sync_free:  # every row, masked: no host read of how many rows are selected
        v = violation(c, l, D, divide=divide, work=work, key=key)
        return torch.where(rows, v, torch.zeros_like(v))
    idx = rows.nonzero().squeeze(1)
    if idx.numel() == rows.numel():
        return violation(c, l, D, divide=divide, work=work, key=key)
    out = torch.zeros_like(D)
    if idx.numel():
        out[idx] = violation(c.index_select(0, idx), l, D[idx], divide=divide)
    return out


def paper_guarded(a: Tensor, b: Tensor, l_in: float, l_out: float, alpha: float = 1.1,
                  k_max: int = 5, work: Work = None, sync_free: Optional[bool] = None) -> Tensor:
    """Algorithm 1, but a unit keeps its D only where D lowers its own eq. (7) distance.

    Reuses Algorithm 1's distance at D = 1, and skips a side whose largest entry is inside the
    box at D (its distance is exactly 0): on saturated critics D = alpha empties the incoming
    side, so only the small outgoing side is evaluated."""
    sf = _sync_free(a, sync_free)
    D, before, amax, bmax = _paper(a, b, l_in, l_out, alpha, k_max, work, sf)
    after = (_violation_where(amax / D > l_in, a, l_in, D, True, work, "a", sf)
             + _violation_where(bmax * D > l_out, b, l_out, D, False, work, "b", sf))
    return torch.where(after < before, D, torch.ones_like(D))


# ----------------------------------------------------------------------------- exact

def exact(a: Tensor, b: Tensor, l_in: float, l_out: float, wa: Optional[Tensor] = None,
          wb: Optional[Tensor] = None, tol: Optional[float] = None, max_iter: int = 100,
          work: Work = None, sync_free: Optional[bool] = None, sync_free_iter: int = 12) -> Tensor:
    """The minimiser of eq. (7) per unit (optionally with weights per entry, see below).

    F_i is convex in d. With hi = max_j a_ij / l_in and lo = l_out / max_k b_ik, every d in
    [hi, lo] has zero violation: when that interval is not empty the answer is the point of it
    closest to 1 (1 itself when nothing violates). Otherwise ("conflicted" units) the minimiser
    is unique and lies in (lo, hi); it is found by Newton's method on dF/dt in t = log d,
    safeguarded by bisection of the bracket [log lo, log hi], stopping once every unit's
    Newton step (the relative change of d) is below ``tol``: 1e-4 in float32 and 1e-10 in
    float64 by default. The last step is applied, and with Newton's quadratic convergence the
    error left is far smaller: ~1e-7 relative (float32's own precision) on realistic critics
    after two evaluations (benchmarks/), < 1e-6 against a brute-force search in float64 (tests).

    ``wa``/``wb`` (broadcastable to a/b, >= 0) weight each entry's squared violation; entries
    of weight 0 are ignored. Used by the data-weighted ``function`` solver.

    ``sync_free`` (default: on any device but the CPU) reads nothing back to the host: all
    units are iterated (the unconflicted ones masked out at the end) for exactly
    ``sync_free_iter`` steps instead of testing the tolerance, which a safeguarded Newton
    method from d = 1 meets in 2-4 steps on realistic critics (tests compare both paths).
    """
    if tol is None:
        tol = 1e-10 if a.dtype == torch.float64 else 1e-4
    if wa is not None:
        a = a * (wa > 0)
    if wb is not None:
        b = b * (wb > 0)
    U = a.shape[0]
    amax, bmax = _rowmax(a), _rowmax(b)
    hi = amax / l_in            # d >= hi: incoming side inside its box
    lo = l_out / bmax           # d <= lo: outgoing side inside its box (inf when b == 0)
    d = torch.minimum(torch.maximum(torch.ones_like(hi), hi), lo)  # point of [hi, lo] closest to 1
    conflicted = hi > lo
    sync_free = _sync_free(a, sync_free)
    n = U if sync_free else int(conflicted.sum())  # on realistic critics every unit conflicts
    if n == 0:
        return d
    whole = n == U
    idx = None if whole else conflicted.nonzero().squeeze(1)
    pick = (lambda x: x) if whole else (lambda x: x.index_select(0, idx))
    A, B = pick(a), pick(b)
    WA = None if wa is None else pick(wa.expand_as(a))
    WB = None if wb is None else pick(wb.expand_as(b))
    w = work if whole else None
    tL, tR = pick(lo).log(), pick(hi).log()
    if sync_free:  # unconflicted units (masked out below) iterate on a harmless bracket
        tL, tR = torch.where(conflicted, tL, -1.0), torch.where(conflicted, tR, 1.0)
        max_iter = sync_free_iter
    t = torch.zeros_like(tL).clamp_(min=tL, max=tR)
    # sums [s2, s1, s0] of y = [c - thr]_+ per side, times these powers of e = d give
    # sum z^2, sum z (z = the violation itself) and #active; coef maps them to dF/dt, d2F/dt2
    coef = 2 * t.new_tensor([[-1.0, -l_in, 0.0, 1.0, l_out, 0.0],
                             [2.0, 3 * l_in, l_in * l_in, 2.0, 3 * l_out, l_out * l_out]])
    one = torch.ones_like(t)
    for _ in range(max_iter):
        e = t.exp()
        r = 1 / e
        sums = torch.stack([*_side_sums(A, e * l_in, WA, w, "a"),
                            *_side_sums(B, l_out * r, WB, w, "b")])
        sums.mul_(torch.stack([r * r, r, one, e * e, e, one]))
        G, H = coef @ sums          # dF/dt and d2F/dt2 (> 0 inside the bracket)
        tL = torch.where(G < 0, t, tL)
        tR = torch.where(G > 0, t, tR)
        tn = t - G / H
        tn = torch.where((tn >= tL) & (tn <= tR), tn, 0.5 * (tL + tR))
        if sync_free:
            t = tn
            continue
        step = float((tn - t).abs().max())
        t = tn
        if step <= tol:
            break
    t = t.exp().to(d.dtype)
    if sync_free:
        return torch.where(conflicted, t, d)
    return t if whole else d.index_copy(0, idx, t)


def _side_sums(c: Tensor, thr: Tensor, w: Optional[Tensor], work: Work,
               key: str) -> tuple[Tensor, Tensor, Tensor]:
    """(sum y^2, sum y, #active) per row (weighted by w), y = [c - thr]_+.

    With z = y*r the violation of a side at scale r (c*r - l, r = 1/d or d, thr = l/r),
    S(t) = sum_j w_j z_j^2 and dr/dt = +-r give |dS/dt| = 2 (sum w z^2 + l sum w z) and
    d2S/dt2 = 2 (2 sum w z^2 + 3 l sum w z + l^2 sum_{z>0} w): y is one pass cheaper than z.
    """
    y = scratch(work, key, c, strided=True)
    torch.sub(c, _bc(thr, c), out=y).clamp_min_(0)
    if w is None:
        s1 = _rowsum(y)
        if y.dim() > 1 and y.is_contiguous():  # one read-only pass: cheaper than y*y, sum
            s2 = torch.linalg.vector_norm(y, 2, dim=_dims(y)).square_()
        else:  # transposed views: vector_norm over strided dims is slow
            s2 = _rowsum(y.mul_(y))
        s0 = _rowsum(y.sign_())
    else:
        wy = w * y
        s1 = _rowsum(wy)
        s2 = _rowsum(wy.mul_(y))
        s0 = _rowsum(y.sign_().mul_(w))
    return s2, s1, s0


# ----------------------------------------------------------------------------- balance

def balance(a: Tensor, b: Tensor, l_in: Optional[float] = None,
            l_out: Optional[float] = None) -> Tensor:
    """The minimum-norm member of each unit's equivalence class (Equi-normalisation, Stock et
    al. 2019): d minimising ||a/d||^2 + ||b*d||^2, i.e. d = (||a|| / ||b||)^(1/2).

    With the bounds given, each side's norm is measured in units of its box (its RMS entry
    over its bound): d minimising ||a/d||^2 / (m l_in^2) + ||b*d||^2 / (n l_out^2), for m and n
    entries per side, so that both sides use the same share of their box.

    Unlike eq. (7)'s, the target depends only on the unit's class, so the solver applied to its
    own output moves nothing. A unit with an all-zero side keeps d = 1."""
    na, nb = _rowsum(a.square()).double(), _rowsum(b.square()).double()
    if l_in is not None and l_out is not None:
        na = na / (max(a[0].numel(), 1) * l_in ** 2)
        nb = nb / (max(b[0].numel(), 1) * l_out ** 2)
    ok = (na > 0) & (nb > 0)
    d = torch.where(ok, (na / torch.where(ok, nb, 1.0)) ** 0.25, 1.0)
    return d.to(a.dtype)


def log_balance(row_norm: Tensor, col_norm: Tensor) -> Tensor:
    """log(||incoming|| / ||outgoing||) per unit (0 where either side is all zero)."""
    tiny = torch.finfo(row_norm.dtype).tiny
    out = row_norm.clamp_min(tiny).log() - col_norm.clamp_min(tiny).log()
    return torch.where((row_norm > 0) & (col_norm > 0), out, torch.zeros_like(out))


__all__ = ["violation", "box_distance2", "paper", "paper_guarded", "exact", "balance",
           "log_balance"]
