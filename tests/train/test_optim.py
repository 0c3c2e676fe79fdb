"""Optimizers from config: per-layer learning rates."""
import pytest
import torch
from torch import nn

from wganlab.config import ConfigError, load_config
from wganlab.train.optim import make_optimizer, param_groups, resolve_optimizer


def _net():
    return nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.BatchNorm1d(8), nn.Linear(8, 1))


def test_layer_lr_gives_each_layer_its_rate_and_keeps_the_rest():
    net = _net()
    groups = param_groups(net, 1e-3, [2.0, 0.5])
    assert [g["lr"] for g in groups] == [2e-3, 5e-4, 1e-3]
    assert groups[0]["params"] == [net[0].weight, net[0].bias]
    assert groups[1]["params"] == [net[3].weight, net[3].bias]
    assert groups[2]["params"] == [net[2].weight, net[2].bias]   # batch norm: the base rate
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_layer_lr_moves_a_layer_proportionally_under_sgd():
    torch.manual_seed(0)
    a, b = _net(), _net()
    b.load_state_dict(a.state_dict())
    spec = dict(resolve_optimizer(load_config("toy").optim.critic, {"name": "sgd"}), lr=0.1)
    oa = make_optimizer(a, spec)
    ob = make_optimizer(b, {**spec, "layer_lr": [3.0, 1.0]})
    x = torch.randn(16, 4)
    for net, opt in ((a, oa), (b, ob)):
        w0 = net[0].weight.detach().clone()
        opt.zero_grad()
        net(x).mean().backward()
        opt.step()
        net.delta = net[0].weight.detach() - w0
    torch.testing.assert_close(b.delta, 3 * a.delta)


def test_layer_lr_errors_name_the_problem():
    with pytest.raises(ConfigError, match="layer_lr"):
        load_config("toy", ["optim.critic.layer_lr=[1.0, -1.0]"])
    with pytest.raises(ValueError, match="one per layer"):
        param_groups(_net(), 1e-3, [1.0])
