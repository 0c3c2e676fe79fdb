"""Finding rescalable unit pairs: Sequential walks, fx tracing, flatten groups, breakers."""
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wganlab.models import dcgan_critic, mlp_critic
from wganlab.rescale import InvarianceError, find_pairs


def summary(pairs):
    return [(p.name_in, p.name_out, p.units, p.group) for p in pairs]


def test_table_one_mlp_critic():
    pairs = find_pairs(mlp_critic())
    assert summary(pairs) == [("1", "3", 512, 1), ("3", "5", 256, 1)]
    assert [(p.index_in, p.index_out) for p in pairs] == [(0, 1), (1, 2)]


def test_table_two_dcgan_critic():
    pairs = find_pairs(dcgan_critic())
    assert summary(pairs) == [("0", "2", 64, 1), ("2", "4", 128, 1), ("4", "6", 256, 1)]


def test_nested_sequential_and_harmless_layers():
    net = nn.Sequential(
        nn.Sequential(nn.Linear(4, 6), nn.ReLU()),
        nn.Dropout(0.1), nn.Identity(), nn.Flatten(),
        nn.Sequential(nn.Linear(6, 5), nn.LeakyReLU(-0.3), nn.PReLU()),
        nn.Linear(5, 1))
    assert summary(find_pairs(net)) == [("0.0", "4.0", 6, 1), ("4.0", "5", 5, 1)]


def test_conv_pool_flatten_linear_groups():
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 2 * 2, 1))
    assert summary(find_pairs(net)) == [("0", "3", 3, 1), ("3", "7", 4, 4)]


@pytest.mark.parametrize("breaker", [nn.BatchNorm1d(6), nn.LayerNorm(6), nn.ELU(), nn.Tanh(),
                                     nn.GELU(), nn.Sigmoid()])
def test_breaking_layers_skip_with_warning_or_raise(breaker, caplog):
    net = nn.Sequential(nn.Linear(3, 6), breaker, nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1))
    with caplog.at_level(logging.WARNING, logger="wganlab.rescale"):
        pairs = find_pairs(net)
    assert summary(pairs) == [("2", "4", 4, 1)]
    assert type(breaker).__name__ in caplog.text and "'1'" in caplog.text
    with pytest.raises(InvarianceError, match=type(breaker).__name__):
        find_pairs(net, strict=True)


def test_pooling_after_linear_breaks():
    net = nn.Sequential(nn.Linear(3, 6), nn.MaxPool1d(2), nn.Linear(3, 1))
    assert find_pairs(net) == []


class FunctionalCritic(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5 * 4 * 4, 7)
        self.out = nn.Linear(7, 1)

    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.out(torch.relu(self.fc(x)) * 2.0)


def test_fx_traced_functional_model():
    pairs = find_pairs(FunctionalCritic())
    assert summary(pairs) == [("c1", "c2", 4, 1), ("c2", "fc", 5, 16), ("fc", "out", 7, 1)]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.c = nn.Linear(4, 1)

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.c(F.relu(self.b(h) + h))


def test_fx_residual_add_breaks(caplog):
    with caplog.at_level(logging.WARNING, logger="wganlab.rescale"):
        pairs = find_pairs(Residual())
    assert summary(pairs) == []
    assert "residual" in caplog.text or "add" in caplog.text
    with pytest.raises(InvarianceError, match="'a'"):
        find_pairs(Residual(), strict=True)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.b = nn.Linear(3, 1)

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.b(F.relu(self.a(x)))


def test_untraceable_model_warns_or_raises(caplog):
    with caplog.at_level(logging.WARNING, logger="wganlab.rescale"):
        assert find_pairs(Untraceable()) == []
    assert "trace" in caplog.text
    with pytest.raises(InvarianceError, match="trace"):
        find_pairs(Untraceable(), strict=True)


def test_shared_layer_is_not_rescaled():
    lin = nn.Linear(4, 4)
    net = nn.Sequential(lin, nn.ReLU(), lin, nn.ReLU(), nn.Linear(4, 1))
    assert find_pairs(net) == []
