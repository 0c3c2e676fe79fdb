"""lipschitz_diagnostics: gradient norms, Wasserstein estimate, spectral bound."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wganlab.metrics.lipschitz import (_conv_bound_factor, conv_operator_norm,
                                       lipschitz_diagnostics, spectral_product)

torch.set_num_threads(1)


def linear(w: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(w.numel(), 1, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w.reshape(1, -1))
        lin.bias.fill_(-0.7)
    return lin


@pytest.mark.parametrize("norm", [0.3, 1.0, 4.0])
def test_linear_critic_exact(norm):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, generator=g, dtype=torch.float64)
    w = w / w.norm() * norm
    critic = linear(w)
    real = torch.randn(32, 5, generator=g, dtype=torch.float64) + 1
    fake = torch.randn(24, 5, generator=g, dtype=torch.float64)
    d = lipschitz_diagnostics(critic, real, fake)
    for where in ("interp", "real", "fake"):
        for stat in ("mean", "max", "p95"):
            assert d[f"lipschitz/{where}_{stat}"] == pytest.approx(norm, rel=1e-9)
    assert d["lipschitz/spectral_product"] == pytest.approx(norm, rel=1e-9)
    expected_w = float(w @ (real.mean(0) - fake.mean(0)))
    assert d["lipschitz/w_estimate"] == pytest.approx(expected_w, rel=1e-9, abs=1e-12)
    assert all(isinstance(v, float) for v in d.values())


def test_no_side_effects():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                           nn.Linear(4 * 6 * 6, 1))
    torch.nn.utils.parametrizations.spectral_norm(critic[0])
    real, fake = torch.randn(8, 3, 6, 6), torch.randn(8, 3, 6, 6)
    u_before = critic[0].parametrizations.weight[0]._u.clone()
    for mode in (True, False):
        critic.train(mode)
        rng = torch.get_rng_state()
        d = lipschitz_diagnostics(critic, real, fake)
        assert critic.training is mode
        assert torch.equal(rng, torch.get_rng_state())  # training's random stream untouched
        assert all(p.grad is None for p in critic.parameters())
        assert torch.isfinite(torch.tensor(list(d.values()))).all()
    # eval mode inside: spectral norm's power iteration did not advance
    assert torch.equal(u_before, critic[0].parametrizations.weight[0]._u)
    # existing gradients are left as they were
    critic(real).sum().backward()
    grads = [p.grad.clone() for p in critic.parameters()]
    lipschitz_diagnostics(critic, real, fake)
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, critic.parameters()))


def test_runs_under_no_grad():
    critic = linear(torch.tensor([3.0, 4.0]))
    with torch.no_grad():
        d = lipschitz_diagnostics(critic, torch.randn(4, 2), torch.randn(4, 2))
    assert d["lipschitz/real_mean"] == pytest.approx(5.0, rel=1e-6)


def dense_conv_norm(conv: nn.Conv2d, shape) -> float:
    """Exact operator norm from the conv's full Jacobian matrix."""
    x = torch.zeros((1,) + shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(
        lambda v: conv._conv_forward(v, conv.weight.detach().double(), None), x)
    m = jac.reshape(-1, x.numel())
    return float(torch.linalg.matrix_norm(m, ord=2))


@pytest.mark.parametrize("k, s, p, groups", [(3, 1, 1, 1), (4, 2, 1, 1), (3, 2, 0, 2)])
def test_conv_operator_norm_matches_dense(k, s, p, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, k, s, p, groups=groups).double()
    shape = (4, 7, 7)
    exact = dense_conv_norm(conv, shape)
    est = conv_operator_norm(conv, shape, iterations=500, tol=1e-12)
    assert est == pytest.approx(exact, rel=1e-3)
    # the fallback used when the input size is unknown is a valid (looser) upper bound
    bound = _conv_bound_factor(conv) * float(
        torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2))
    assert bound >= exact * (1 - 1e-9)


def test_spectral_product_bounds_gradient_norms():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2),
                           nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(), nn.Flatten(),
                           nn.Linear(8 * 4 * 4, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    real, fake = torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    d = lipschitz_diagnostics(critic, real, fake)
    assert d["lipschitz/spectral_product"] >= max(d[f"lipschitz/{w}_max"]
                                                  for w in ("interp", "real", "fake"))
    # without input sizes the conv fallback bound is looser than the exact operator norm
    assert spectral_product(critic) >= d["lipschitz/spectral_product"] * (1 - 1e-6)


def test_needs_one_score_per_sample():
    with pytest.raises(ValueError, match="one score per sample"):
        lipschitz_diagnostics(nn.Linear(2, 3), torch.randn(4, 2), torch.randn(4, 2))


def test_spectral_product_of_sn_mlp_is_one():
    """Uses the weights the layers actually apply: normalised ones under spectral norm."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                           nn.Linear(32, 1))
    for layer in (critic[0], critic[2], critic[4]):
        torch.nn.utils.parametrizations.spectral_norm(layer, n_power_iterations=5)
    critic.train()
    for _ in range(10):
        critic(torch.randn(8, 2))
    d = lipschitz_diagnostics(critic, torch.randn(64, 2), torch.randn(64, 2))
    assert d["lipschitz/spectral_product"] == pytest.approx(1.0, abs=3e-3)
    assert d["lipschitz/interp_max"] <= d["lipschitz/spectral_product"] + 1e-6
