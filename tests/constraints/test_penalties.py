"""Gradient penalties (gp, lp, r1, gp-adaptive) against hand-computed values on linear critics."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wganlab.config import ConstraintConfig
from wganlab.constraints import (AdaptiveGradientPenalty, Compose, GradientPenalty,
                                 LipschitzPenalty, R1Penalty, WeightClip, build_constraint)
from wganlab.metrics.lipschitz import interpolate

torch.set_num_threads(1)


def linear_critic(w: torch.Tensor, flatten: bool = False) -> nn.Module:
    """f(x) = w . x + 0.3 (after flattening for images)."""
    lin = nn.Linear(w.numel(), 1, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w.reshape(1, -1))
        lin.bias.fill_(0.3)
    return nn.Sequential(nn.Flatten(), lin) if flatten else lin


def weight_with_norm(d: int, norm: float, seed: int = 0) -> torch.Tensor:
    w = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return w / w.norm() * norm


def eff(norm: float) -> float:
    """The norm as the penalties measure it: sqrt(||g||^2 + 1e-12) (eps against NaN at 0)."""
    return math.sqrt(norm ** 2 + 1e-12)


def batch(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def as_double(m: nn.Module) -> nn.Module:
    return m.double()


@pytest.mark.parametrize("norm", [0.4, 1.0, 2.5])
def test_linear_critic_hand_values(norm):
    w = weight_with_norm(5, norm)
    real, fake = batch((16, 5), 1), batch((16, 5), 2)
    lam, gamma = 10.0, 4.0
    gp = GradientPenalty(as_double(linear_critic(w)), lam).penalty(real, fake)
    lp = LipschitzPenalty(as_double(linear_critic(w)), lam).penalty(real, fake)
    r1 = R1Penalty(as_double(linear_critic(w)), gamma).penalty(real, fake)
    assert gp.item() == pytest.approx(lam * (norm - 1) ** 2, abs=1e-9)
    assert lp.item() == pytest.approx(lam * max(0.0, norm - 1) ** 2, abs=1e-9)
    assert r1.item() == pytest.approx(gamma / 2 * norm ** 2, rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(norm=st.floats(0.0, 5.0), lam=st.floats(0.0, 20.0), d=st.integers(1, 8))
def test_gp_lp_property(norm, lam, d):
    w = weight_with_norm(d, norm)
    real, fake = batch((4, d), 3), batch((4, d), 4)
    gp = GradientPenalty(as_double(linear_critic(w)), lam).penalty(real, fake)
    lp = LipschitzPenalty(as_double(linear_critic(w)), lam).penalty(real, fake)
    assert torch.isfinite(gp) and torch.isfinite(lp)
    assert gp.item() == pytest.approx(lam * (eff(norm) - 1) ** 2, abs=1e-9)
    assert lp.item() == pytest.approx(lam * max(0.0, eff(norm) - 1) ** 2, abs=1e-9)


@pytest.mark.parametrize("norm", [0.5, 2.0])
def test_gp_gradient_wrt_weight_is_analytic(norm):
    """d/dw lam (||w|| - 1)^2 = 2 lam (||w|| - 1) w / ||w||: needs create_graph=True."""
    w = weight_with_norm(3, norm)
    critic = as_double(linear_critic(w))
    GradientPenalty(critic, 10.0).penalty(batch((8, 3), 5), batch((8, 3), 6)).backward()
    expected = 2 * 10.0 * (norm - 1) * w / norm
    torch.testing.assert_close(critic.weight.grad.reshape(-1), expected)
    assert critic.bias.grad is None or float(critic.bias.grad.abs().max()) == 0.0


def test_zero_gradient_is_finite():
    """A flat critic: ||g|| = 0 where the norm's derivative is 0/0; eps keeps it finite."""
    critic = as_double(linear_critic(torch.zeros(4, dtype=torch.float64)))
    for cls in (GradientPenalty, LipschitzPenalty, AdaptiveGradientPenalty):
        critic.zero_grad()
        p = cls(critic).penalty(batch((6, 4), 7), batch((6, 4), 8))
        p.backward()
        assert torch.isfinite(p)
        assert torch.isfinite(critic.weight.grad).all()


@pytest.mark.parametrize("cls", [GradientPenalty, LipschitzPenalty, AdaptiveGradientPenalty,
                                 R1Penalty])
def test_gradients_reach_critic_not_generator(cls):
    torch.manual_seed(0)
    gen = nn.Linear(3, 5)
    critic = nn.Sequential(nn.Linear(5, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    with torch.no_grad():
        critic[0].weight.mul_(4)  # slopes well above 1 so every penalty is active
    real = torch.randn(8, 5)
    fake = gen(torch.randn(8, 3))  # NOT detached: the penalty must detach it itself
    cls(critic).penalty(real, fake).backward()
    # (biases of a piecewise-linear critic do not change its input gradient: only weights)
    assert all(layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
               for layer in (critic[0], critic[2]))
    assert all(p.grad is None for p in gen.parameters())


@pytest.mark.parametrize("cls", [GradientPenalty, LipschitzPenalty, AdaptiveGradientPenalty,
                                 R1Penalty])
def test_images_with_three_channels(cls):
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                           nn.Linear(4 * 4 * 4, 1))
    real, fake = torch.randn(5, 3, 8, 8), torch.randn(5, 3, 8, 8)
    p = cls(critic).penalty(real, fake)
    assert p.shape == () and torch.isfinite(p)
    p.backward()
    assert critic[0].weight.grad is not None


@pytest.mark.parametrize("norm", [0.3, 1.7])
def test_images_linear_critic_hand_values(norm):
    """Per-sample flattening: f(x) = <w, x> over 3x4x4 images."""
    w = weight_with_norm(3 * 4 * 4, norm)
    critic = as_double(linear_critic(w, flatten=True))
    real, fake = batch((6, 3, 4, 4), 9), batch((6, 3, 4, 4), 10)
    assert GradientPenalty(critic, 2.0).penalty(real, fake).item() == pytest.approx(
        2.0 * (norm - 1) ** 2, abs=1e-9)
    assert R1Penalty(critic, 2.0).penalty(real, fake).item() == pytest.approx(norm ** 2, rel=1e-9)


def test_interpolate_one_factor_per_sample():
    real, fake = batch((7, 3, 5, 5), 11), batch((7, 3, 5, 5), 12)
    x = interpolate(real, fake)
    t = ((x - fake) / (real - fake)).flatten(1)
    assert ((t >= 0) & (t <= 1)).all()
    torch.testing.assert_close(t, t[:, :1].expand_as(t))
    assert t[:, 0].std() > 0  # different samples get different factors
    with pytest.raises(ValueError, match="same shape"):
        interpolate(real, fake[:3])


@pytest.mark.parametrize("norm, weight", [(1.5, 0.25), (1.2, 0.04), (0.0, (1 - 1e-6) ** 2),
                                          (5.0, 10.0), (1.0, 0.0)])
def test_adaptive_weight_rule(norm, weight):
    """w = clamp(P, 0, cap) with P = (||w|| - 1)^2 measured, detached; term = w * P."""
    p_val = (eff(norm) - 1) ** 2
    w_vec = weight_with_norm(3, norm) if norm > 0 else torch.zeros(3, dtype=torch.float64)
    critic = as_double(linear_critic(w_vec))
    c = AdaptiveGradientPenalty(critic, max_weight=10.0)
    pen = c.penalty(batch((8, 3), 13), batch((8, 3), 14))
    assert pen.item() == pytest.approx(weight * p_val, abs=1e-9)
    d = c.diagnostics()
    assert d["penalty/gp-adaptive"] == pytest.approx(p_val, abs=1e-9)
    assert d["penalty/gp-adaptive_weight"] == pytest.approx(weight, abs=1e-9)
    if norm > 0:
        # detached weight: the gradient is weight * dP/dw, not d(P^2)/dw
        pen.backward()
        expected = weight * 2 * (norm - 1) * w_vec / norm
        torch.testing.assert_close(critic.weight.grad.reshape(-1), expected)


def test_adaptive_cap_from_config():
    critic = linear_critic(torch.full((2,), 10.0))  # ||w|| ~ 14: P ~ 170
    c = build_constraint(critic, ConstraintConfig.from_raw({"name": "gp-adaptive", "gp-adaptive": {"max_weight": 3.0}}))
    assert isinstance(c, AdaptiveGradientPenalty)
    c.penalty(torch.randn(4, 2), torch.randn(4, 2))
    assert c.diagnostics()["penalty/gp-adaptive_weight"] == pytest.approx(3.0)


def test_registry_config_and_optimizers():
    critic = nn.Linear(2, 1)
    cfg = ConstraintConfig.from_raw({"name": "gp", "gp": {"weight": 0.1}, "lp": {"weight": 0.1}, "r1": {"gamma": 3.0}})
    gp = build_constraint(critic, cfg)
    assert isinstance(gp, GradientPenalty) and gp.weight == 0.1 and gp.needs_penalty
    assert isinstance(build_constraint(critic, cfg, "lp"), LipschitzPenalty)
    r1 = build_constraint(critic, cfg, "r1")
    assert isinstance(r1, R1Penalty) and r1.gamma == 3.0
    for c in (gp, build_constraint(critic, cfg, "lp"),
              build_constraint(critic, cfg, "gp-adaptive")):
        assert c.default_optimizer == {"name": "adam", "lr": 1e-4, "betas": (0.5, 0.9)}
    assert r1.default_optimizer["name"] == "rmsprop" and r1.default_optimizer["lr"] == 1e-4


def test_diagnostics_keys_are_floats():
    c = GradientPenalty(linear_critic(torch.tensor([3.0, 4.0])), 10.0)
    c.penalty(torch.randn(4, 2), torch.randn(4, 2))
    d = c.diagnostics()
    assert set(d) == {"penalty/gp", "penalty/gp_weight", "penalty/gp_grad_norm"}
    assert all(isinstance(v, float) for v in d.values())
    assert d["penalty/gp"] == pytest.approx(16.0, rel=1e-5)
    assert d["penalty/gp_weight"] == 10.0
    assert d["penalty/gp_grad_norm"] == pytest.approx(5.0, rel=1e-5)


def test_compose_clip_r1_penalises_and_clips():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    c = build_constraint(critic, ConstraintConfig.from_raw({"name": "clip+r1", "clip": {"bound": 0.05}, "r1": {"gamma": 10.0}}))
    assert isinstance(c, Compose) and [type(p) for p in c.parts] == [WeightClip, R1Penalty]
    assert c.needs_penalty and c.default_optimizer == R1Penalty.default_optimizer
    opt = torch.optim.SGD(critic.parameters(), lr=0.1)
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    loss = -(critic(real).mean() - critic(fake).mean())
    pen = c.penalty(real, fake)
    assert pen is not None and pen.item() > 0
    (loss + pen).backward()
    opt.step()
    assert max(float(p.detach().abs().max()) for p in critic.parameters()) > 0.05
    c.step(opt, diagnose=True)
    assert all(bool((p.abs() <= torch.tensor(0.05)).all()) for p in critic.parameters())
    d = c.diagnostics()
    assert "penalty/r1" in d and "clip/fraction_clipped" in d


def test_plain_pytorch_loop_pushes_gp_slope_to_one():
    """Drop-in use: a linear critic trained on the penalty alone moves ||w|| towards 1."""
    torch.manual_seed(0)
    critic = linear_critic(torch.tensor([3.0, 0.0, 0.0]))
    gp = GradientPenalty(critic, 1.0)
    opt = torch.optim.SGD(critic.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        gp.penalty(torch.randn(8, 3), torch.randn(8, 3)).backward()
        opt.step()
        gp.step(opt)
    assert math.isclose(float(critic.weight.detach().norm()), 1.0, abs_tol=1e-3)
