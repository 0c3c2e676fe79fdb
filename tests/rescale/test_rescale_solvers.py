"""The per-unit solvers against plain references: a per-unit loop transcription of Algorithm 1,
and a brute-force 1-D search for the minimiser of eq. (7)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wganlab.rescale import solvers

SETTINGS = settings(max_examples=25, deadline=None)


# ----------------------------------------------------------------------------- references

def algorithm1_loop(a, b, l_in, l_out, alpha, k_max):
    """Algorithm 1 of seed 001, transcribed line by line with a loop over units."""
    U = a.shape[0]
    D = torch.full((U,), alpha, dtype=a.dtype)                      # line 1
    n_in = torch.empty(U, dtype=a.dtype)
    n_out = torch.empty(U, dtype=a.dtype)
    for i in range(U):                                              # line 3
        n_in[i] = ((a[i] - l_in).clamp_min(0) ** 2).sum()           # line 4
        n_out[i] = ((b[i] - l_out).clamp_min(0) ** 2).sum()         # line 5
        if n_in[i] < n_out[i]:                                      # line 6
            D[i] = 1 / D[i]                                         # line 8
    for i in range(U):                                              # line 12
        k = 0                                                       # line 13
        while k <= k_max:                                           # line 14
            n_in_new = ((a[i] / D[i] - l_in).clamp_min(0) ** 2).sum()    # line 15
            n_out_new = ((b[i] * D[i] - l_out).clamp_min(0) ** 2).sum()  # line 16
            if n_in[i] > n_out[i] and n_in_new > n_out_new:         # line 17
                D[i] = alpha * D[i]
            elif n_out[i] > n_in[i] and n_out_new > n_in_new:       # line 19
                D[i] = D[i] / alpha
            else:
                k = k_max                                           # line 22
            k += 1
    return D


def objective(a, b, l_in, l_out, d):
    """eq. (7) for one unit (1-D a, b) at a python float d, in float64."""
    a, b = a.double(), b.double()
    return float(((a / d - l_in).clamp_min(0) ** 2).sum()
                 + ((b * d - l_out).clamp_min(0) ** 2).sum())


def brute_minimiser(a, b, l_in, l_out):
    """Plain 1-D search for one unit. F is convex in t = log d, so its slope is nondecreasing:
    bisect for the two ends of the set where the slope is zero, then take its point closest
    to t = 0 (d = 1)."""
    a, b = a.double(), b.double()

    def slope(t):  # dF/dt at d = exp(t)
        d = math.exp(t)
        zi = (a / d - l_in).clamp_min(0)
        zo = (b * d - l_out).clamp_min(0)
        return float(-2 * (zi * a / d).sum() + 2 * (zo * b * d).sum())

    def bisect(pred):  # the last t in [-16, 16] where pred holds (pred: True then False)
        lo, hi = -16.0, 16.0
        for _ in range(70):
            m = 0.5 * (lo + hi)
            lo, hi = (m, hi) if pred(m) else (lo, m)
        return lo

    left = bisect(lambda t: slope(t) < 0)
    right = bisect(lambda t: slope(t) <= 0)
    return math.exp(min(max(0.0, left), right))


# ----------------------------------------------------------------------------- inputs

@st.composite
def unit_problems(draw, dtype=torch.float64):
    """Random magnitudes around the bounds, with feasible, tied and conflicted units."""
    U = draw(st.integers(1, 12))
    m = draw(st.integers(1, 9))
    n = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    g = torch.Generator().manual_seed(seed)
    l_in = draw(st.floats(0.01, 2.0))
    l_out = draw(st.floats(0.01, 2.0))
    spread_a = draw(st.floats(0.1, 4.0))
    spread_b = draw(st.floats(0.1, 4.0))
    a = torch.rand(U, m, generator=g, dtype=dtype) * spread_a * l_in
    b = torch.rand(U, n, generator=g, dtype=dtype) * spread_b * l_out
    # a few special rows: all feasible (a tie at zero), equal violations, zeros
    if U >= 3:
        a[0] *= 0.5 / max(spread_a, 0.5)
        b[0] *= 0.5 / max(spread_b, 0.5)
        a[1].zero_()
        b[2] = 0
    return a, b, l_in, l_out


# ----------------------------------------------------------------------------- paper

@SETTINGS
@given(unit_problems(), st.sampled_from([1.05, 1.1, 1.5]), st.integers(1, 6))
def test_paper_equals_loop_transcription(problem, alpha, k_max):
    a, b, l_in, l_out = problem
    got = solvers.paper(a, b, l_in, l_out, alpha, k_max)
    want = algorithm1_loop(a, b, l_in, l_out, alpha, k_max)
    assert torch.equal(got, want)


@SETTINGS
@given(unit_problems(dtype=torch.float32))
def test_paper_equals_loop_transcription_float32(problem):
    a, b, l_in, l_out = problem
    assert torch.equal(solvers.paper(a, b, l_in, l_out), algorithm1_loop(a, b, l_in, l_out, 1.1, 5))


def test_paper_rescales_feasible_units_by_alpha_as_printed():
    """The printed tie rule: nothing violates, yet D = alpha (documented, reproduced)."""
    a = torch.full((3, 4), 0.5, dtype=torch.float64)
    b = torch.full((3, 2), 0.5, dtype=torch.float64)
    assert torch.allclose(solvers.paper(a, b, 1.0, 1.0), torch.full((3,), 1.1, dtype=torch.float64))
    assert torch.equal(solvers.exact(a, b, 1.0, 1.0), torch.ones(3, dtype=torch.float64))
    assert torch.equal(solvers.paper_guarded(a, b, 1.0, 1.0), torch.ones(3, dtype=torch.float64))


def test_paper_reaches_alpha_to_the_k_max_plus_two():
    """k runs from 0 to k_max inclusive: up to k_max + 1 multiplications after D = alpha."""
    a = torch.tensor([[100.0]], dtype=torch.float64)
    b = torch.tensor([[0.0]], dtype=torch.float64)
    assert solvers.paper(a, b, 1.0, 1.0, 1.1, 5).item() == pytest.approx(1.1 ** 7)


@SETTINGS
@given(unit_problems())
def test_paper_guarded_never_increases_a_units_distance(problem):
    a, b, l_in, l_out = problem
    d = solvers.paper_guarded(a, b, l_in, l_out)
    before = solvers.box_distance2(a, b, l_in, l_out)
    after = solvers.box_distance2(a, b, l_in, l_out, d)
    assert torch.all(after <= before)
    assert torch.all((d == 1) | (after < before))


# ----------------------------------------------------------------------------- exact

@SETTINGS
@given(unit_problems())
def test_exact_beats_paper_and_no_rescaling(problem):
    a, b, l_in, l_out = problem
    d = solvers.exact(a, b, l_in, l_out)
    f = solvers.box_distance2(a, b, l_in, l_out, d)
    slack = 1e-10 * (1 + f)
    for other in (solvers.paper(a, b, l_in, l_out), solvers.paper_guarded(a, b, l_in, l_out),
                  torch.ones_like(d)):
        assert torch.all(f <= solvers.box_distance2(a, b, l_in, l_out, other) + slack)


@SETTINGS
@given(unit_problems())
def test_exact_matches_brute_force(problem):
    a, b, l_in, l_out = problem
    d = solvers.exact(a, b, l_in, l_out, tol=1e-10)
    for i in range(a.shape[0]):
        want = brute_minimiser(a[i], b[i], l_in, l_out)
        assert d[i].item() == pytest.approx(want, rel=1e-6), i
        assert objective(a[i], b[i], l_in, l_out, d[i].item()) <= \
            objective(a[i], b[i], l_in, l_out, want) * (1 + 1e-9) + 1e-24


def test_exact_prefers_the_point_closest_to_one():
    # feasible interval [hi, lo] = [2, 4]: 2; [0.25, 0.5]: 0.5; [0.5, 3]: 1
    a = torch.tensor([[2.0], [0.25], [0.5]], dtype=torch.float64)
    b = torch.tensor([[0.25], [2.0], [1 / 3]], dtype=torch.float64)
    d = solvers.exact(a, b, 1.0, 1.0)
    assert torch.allclose(d, torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64))


def test_exact_accepts_strided_views_and_trailing_dims():
    g = torch.Generator().manual_seed(1)
    w_out = torch.rand(7, 5, 3, generator=g, dtype=torch.float64) * 1.5   # [K, U, group]
    a = torch.rand(5, 2, 3, 3, generator=g, dtype=torch.float64) * 1.5    # conv filters
    b = w_out.transpose(0, 1)                                                # no copy
    d = solvers.exact(a, b, 1.0, 1.0)
    d_flat = solvers.exact(a.reshape(5, -1), b.reshape(5, -1).contiguous(), 1.0, 1.0)
    assert torch.allclose(d, d_flat, rtol=1e-12)
    assert torch.equal(solvers.paper(a, b, 1.0, 1.0),
                       solvers.paper(a.reshape(5, -1), b.reshape(5, -1), 1.0, 1.0))


@SETTINGS
@given(unit_problems(), st.integers(0, 2 ** 31 - 1))
def test_weighted_exact_minimises_the_weighted_objective(problem, seed):
    a, b, l_in, l_out = problem
    g = torch.Generator().manual_seed(seed)
    wa = torch.rand(1, a.shape[1], generator=g, dtype=a.dtype)
    wb = torch.rand(a.shape[0], 1, generator=g, dtype=a.dtype)

    def weighted(d):
        return ((wa * (a / d[:, None] - l_in).clamp_min(0) ** 2).sum(1)
                + (wb * (b * d[:, None] - l_out).clamp_min(0) ** 2).sum(1))
    d = solvers.exact(a, b, l_in, l_out, wa=wa, wb=wb, tol=1e-10)
    f = weighted(d)
    for factor in (0.9, 0.99, 0.999, 1.001, 1.01, 1.1):
        assert torch.all(f <= weighted(d * factor) * (1 + 1e-9) + 1e-24)
    assert torch.all(f <= weighted(torch.ones_like(d)) * (1 + 1e-9) + 1e-24)


def test_log_balance():
    r = torch.tensor([1.0, 2.0, 0.0])
    c = torch.tensor([1.0, 1.0, 3.0])
    assert torch.allclose(solvers.log_balance(r, c), torch.tensor([0.0, math.log(2), 0.0]))


@SETTINGS
@given(unit_problems(), st.sampled_from([1.05, 1.1, 1.5]), st.integers(1, 6))
def test_sync_free_paths_give_the_same_scales(problem, alpha, k_max):
    """The accelerator path (no host reads: masked rows, fixed Newton steps) agrees with the
    CPU path that skips work by reading values back."""
    a, b, l_in, l_out = problem
    for fn in (solvers.paper, solvers.paper_guarded):
        torch.testing.assert_close(fn(a, b, l_in, l_out, alpha, k_max, sync_free=True),
                                   fn(a, b, l_in, l_out, alpha, k_max, sync_free=False),
                                   rtol=0, atol=0)
    d_free = solvers.exact(a, b, l_in, l_out, sync_free=True, sync_free_iter=60)
    d_host = solvers.exact(a, b, l_in, l_out, sync_free=False)
    assert torch.isfinite(d_free).all()
    F_free = torch.tensor([objective(a[i], b[i], l_in, l_out, float(d_free[i]))
                           for i in range(len(a))])
    F_host = torch.tensor([objective(a[i], b[i], l_in, l_out, float(d_host[i]))
                           for i in range(len(a))])
    assert (F_free <= F_host * (1 + 1e-9) + 1e-15).all()
    torch.testing.assert_close(d_free, d_host, rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------- balance

@SETTINGS
@given(unit_problems())
def test_balance_is_the_minimum_norm_member(problem):
    a, b, _, _ = problem
    d = solvers.balance(a, b)
    grid = torch.logspace(-4, 4, 4001, dtype=torch.float64)  # ratio 1.0046 between points
    for i in range(a.shape[0]):
        if not (a[i].any() and b[i].any()):
            assert d[i].item() == 1.0                          # no minimum-norm member
            continue
        norm2 = lambda s: (a[i] / s).square().sum() + (b[i] * s).square().sum()  # noqa: E731
        best = grid[torch.stack([norm2(s) for s in grid]).argmin()].item()
        assert d[i].item() == pytest.approx(best, rel=5e-3)
        assert norm2(d[i]) <= norm2(torch.tensor(best, dtype=torch.float64)) * (1 + 1e-12)


def test_balance_does_not_compound():
    """Applied to its own output the solver moves nothing: its target depends only on the
    unit's class, unlike eq. (7)'s, which keeps pushing saturated units the same way."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 5, generator=g, dtype=torch.float64) * 3
    b = torch.rand(6, 4, generator=g, dtype=torch.float64)
    d = solvers.balance(a, b)
    d2 = solvers.balance(a / d[:, None], b * d[:, None])
    torch.testing.assert_close(d2, torch.ones_like(d2), rtol=0, atol=1e-12)


@SETTINGS
@given(unit_problems())
def test_box_relative_balance_equalises_each_sides_share_of_its_box(problem):
    """With the bounds, both sides end with the same RMS entry relative to their bound."""
    a, b, l_in, l_out = problem
    d = solvers.balance(a, b, l_in, l_out)
    for i in range(a.shape[0]):
        if not (a[i].any() and b[i].any()):
            assert d[i].item() == 1.0
            continue
        rms_in = (a[i] / d[i]).square().mean().sqrt() / l_in
        rms_out = (b[i] * d[i]).square().mean().sqrt() / l_out
        assert rms_in.item() == pytest.approx(rms_out.item(), rel=1e-9)
