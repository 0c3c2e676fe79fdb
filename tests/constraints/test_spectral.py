"""Spectral normalisation through PyTorch's parametrisation, applied in place."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from wganlab.config import ConstraintConfig
from wganlab.constraints import SpectralNorm, build_constraint

torch.set_num_threads(1)


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 16),
                         nn.LeakyReLU(0.2), nn.Linear(16, 1))


def convnet(channels: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, 8, 4, 2, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                         nn.Linear(16 * 2 * 2, 1))


def layers(m: nn.Module) -> list[nn.Module]:
    return [x for x in m.modules() if isinstance(x, (nn.Linear, nn.Conv2d))]


def matrix_sigma(layer: nn.Module) -> float:
    """Largest singular value of the weight the layer uses, reshaped to [out, -1] as SN does."""
    with torch.no_grad():
        return float(torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2))


@pytest.mark.parametrize("make, shape", [(mlp, (16, 2)), (convnet, (4, 3, 8, 8))])
def test_every_layer_normalised_to_one(make, shape):
    torch.manual_seed(0)
    critic = make()
    raw = [layer.weight for layer in layers(critic)]
    c = build_constraint(critic, ConstraintConfig.from_raw({"name": "sn", "sn": {"power_iterations": 3}}))
    assert isinstance(c, SpectralNorm) and c.n_power_iterations == 3
    for layer, w in zip(layers(critic), raw):
        assert parametrize.is_parametrized(layer, "weight")
        # in place: the raw weight is the very same Parameter an optimizer may already hold
        assert layer.parametrizations.weight.original is w
    critic.train()
    for _ in range(10):
        critic(torch.randn(shape))
    for layer in layers(critic):
        assert matrix_sigma(layer) == pytest.approx(1.0, abs=1e-3)


def test_optimizer_built_before_keeps_training_the_raw_weight():
    torch.manual_seed(0)
    critic = mlp()
    opt = torch.optim.SGD(critic.parameters(), lr=0.1)
    SpectralNorm(critic)
    before = critic[0].parametrizations.weight.original.detach().clone()
    critic(torch.randn(8, 2)).mean().backward()
    opt.step()
    assert not torch.equal(before, critic[0].parametrizations.weight.original.detach())


def test_idempotent_and_diagnostics():
    torch.manual_seed(0)
    critic = mlp()
    SpectralNorm(critic)
    c = SpectralNorm(critic, n_power_iterations=2)  # second build: no double wrapping
    for layer in layers(critic):
        assert len(layer.parametrizations.weight) == 1
    assert not c.needs_penalty and c.penalty(torch.zeros(1, 2), torch.zeros(1, 2)) is None
    assert c.default_optimizer["name"] == "adam"
    critic.train()
    for _ in range(30):
        critic(torch.randn(8, 2))
    c.step(None, diagnose=True)
    d = c.diagnostics()
    raw = [float(torch.linalg.matrix_norm(layer.parametrizations.weight.original.detach(), ord=2))
           for layer in layers(critic)]
    assert d["sn/raw_sigma_max"] == pytest.approx(max(raw), rel=1e-3)
    assert d["sn/raw_sigma_min"] == pytest.approx(min(raw), rel=1e-3)


def test_state_lives_in_the_critic_state_dict():
    """Power-iteration vectors are critic buffers: a critic checkpoint restores them."""
    torch.manual_seed(0)
    a, b = mlp(), mlp()
    SpectralNorm(a)
    SpectralNorm(b)
    a.train()
    for _ in range(5):
        a(torch.randn(8, 2))
    assert any(k.endswith("_u") for k in a.state_dict())
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(4, 2)
    torch.testing.assert_close(a(x), b(x))


def test_sn_with_clip_composes():
    torch.manual_seed(0)
    critic = mlp()
    c = build_constraint(critic, ConstraintConfig.from_raw({"name": "sn+clip", "clip": {"bound": 0.05}}))
    with torch.no_grad():
        for layer in layers(critic):
            layer.parametrizations.weight.original.mul_(10)
    c.step(None)
    for layer in layers(critic):  # clipping reaches the raw weight under the parametrisation
        assert float(layer.parametrizations.weight.original.detach().abs().max()) <= 0.05 + 1e-7


def test_rejects_critic_without_layers():
    with pytest.raises(ValueError, match="no Linear or Conv"):
        SpectralNorm(nn.Sequential(nn.ReLU()))
