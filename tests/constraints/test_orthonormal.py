"""Critics 1-Lipschitz by construction (bjorck, aol) and the GroupSort activation: every bound
is checked against the exact operator norm, not against the formula that produced it."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from wganlab.config import ConstraintConfig, load_config
from wganlab.constraints import AOL, Bjorck, build_constraint, critic_activation
from wganlab.constraints.orthonormal import aol, bjorck
from wganlab.models import GroupSort, build_models
from wganlab.rescale import InvarianceError
from wganlab.train import Trainer

from conftest import tiny_config

torch.set_num_threads(1)


def gs_mlp(widths=(3, 32, 32, 1)) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            mods.append(GroupSort(2))
    return nn.Sequential(*mods)


def dense_sigmas(critic: nn.Module) -> list[float]:
    with torch.no_grad():
        return [float(torch.linalg.matrix_norm(m.weight.double(), ord=2))
                for m in critic.modules() if isinstance(m, nn.Linear)]


def jacobian_norm(f, x: torch.Tensor) -> float:
    """The exact local Lipschitz constant: the 2-norm of f's Jacobian at x."""
    j = jacobian(f, x).reshape(-1, x.numel())
    return float(torch.linalg.matrix_norm(j.double(), ord=2))


def test_groupsort_sorts_pairs_and_preserves_gradient_norms():
    x = torch.tensor([[3.0, 1.0, -2.0, 5.0]])
    assert GroupSort(2)(x).tolist() == [[1.0, 3.0, -2.0, 5.0]]
    conv = torch.randn(2, 4, 3, 3)
    y = GroupSort(2)(conv)
    assert torch.equal(y[:, 0::2], torch.minimum(conv[:, 0::2], conv[:, 1::2]))
    z = torch.randn(1, 6)
    # a permutation: every singular value of the Jacobian is exactly 1
    s = torch.linalg.svdvals(jacobian(GroupSort(2), z).reshape(6, 6))
    assert torch.allclose(s, torch.ones(6))
    with pytest.raises(ValueError, match="even layer width"):
        GroupSort(2)(torch.randn(2, 5))


@pytest.mark.parametrize("shape", [(64, 3), (64, 64), (1, 64), (40, 100)])
def test_bjorck_weight_is_orthonormal_and_never_above_one(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape) * 5
    s = torch.linalg.svdvals(bjorck(w, 25).double())
    assert s.max() <= 1 + 1e-3
    assert s.min() >= 0.99  # orthonormal on the smaller side
    # even unconverged (2 iterations) the bound holds: iterations only tighten it
    assert torch.linalg.svdvals(bjorck(w, 2).double()).max() <= 1 + 1e-3


def test_bjorck_critic_layers_and_jacobian_within_one():
    torch.manual_seed(0)
    critic = gs_mlp()
    c = build_constraint(critic, ConstraintConfig.from_raw({"name": "bjorck", "bjorck": {"iters": 25}}))
    assert isinstance(c, Bjorck)
    # push the raw weights far from orthonormal: the bound must not care
    opt = torch.optim.SGD(critic.parameters(), lr=1.0)
    for _ in range(5):
        opt.zero_grad()
        critic(torch.randn(64, 3)).pow(2).mean().backward()
        opt.step()
    assert all(s <= 1 + 1e-3 for s in dense_sigmas(critic))
    norms = [jacobian_norm(lambda v: critic(v.unsqueeze(0)), torch.randn(3)) for _ in range(20)]
    assert max(norms) <= 1 + 1e-3
    c.step(diagnose=True)
    d = c.diagnostics()
    assert d["bjorck/sigma_max"] <= 1 + 1e-3 and set(d) >= {"bjorck/sigma_max_0",
                                                           "bjorck/sigma_min"}


def test_square_bjorck_critic_preserves_the_gradient_norm():
    """Square orthonormal layers and GroupSort: the gradient norm is exactly 1 everywhere
    (what lets the critic reach the slope-1 Kantorovich-Rubinstein optimum)."""
    torch.manual_seed(0)
    critic = gs_mlp((8, 8, 8, 1))
    Bjorck(critic, iters=30)
    norms = [jacobian_norm(lambda v: critic(v.unsqueeze(0)), torch.randn(8)) for _ in range(10)]
    assert min(norms) >= 1 - 1e-3 and max(norms) <= 1 + 1e-3


def test_unconstrained_critic_fails_the_same_check():
    """The check above can fail: the same critic without the constraint is far above 1."""
    torch.manual_seed(0)
    critic = gs_mlp()
    with torch.no_grad():
        for m in critic.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(4)
    assert jacobian_norm(lambda v: critic(v.unsqueeze(0)), torch.randn(3)) > 1.5


@pytest.mark.parametrize("shape", [(64, 3), (64, 64), (1, 64), (40, 100)])
def test_aol_dense_bound(shape):
    torch.manual_seed(1)
    w = torch.randn(*shape)
    assert float(torch.linalg.matrix_norm(aol(w).double(), ord=2)) <= 1 + 1e-5


@pytest.mark.parametrize("conv, size", [
    (nn.Conv2d(3, 8, 3, 1, 1), 6),
    (nn.Conv2d(4, 6, 4, 2, 1), 8),
    (nn.Conv2d(2, 1, 4, 1, 0), 4),
    (nn.Conv1d(3, 5, 5, 1, 2), 12),
])
def test_aol_conv_bound_against_the_exact_operator_norm(conv, size):
    torch.manual_seed(2)
    with torch.no_grad():
        conv.weight.normal_()
    plain = conv.weight.detach().clone()
    AOL(nn.Sequential(conv))
    shape = (conv.in_channels,) + (size,) * (plain.dim() - 2)
    x = torch.randn(shape)
    fn = conv._conv_forward
    exact = jacobian_norm(lambda v: fn(v.unsqueeze(0), conv.weight, None), x)
    assert exact <= 1 + 1e-5
    raw = jacobian_norm(lambda v: fn(v.unsqueeze(0), plain, None), x)
    assert raw > 1.5  # the raw kernel was far above the bound: the rescaling did the work
    assert exact > 0.05  # and it is not a trivial bound


def test_aol_critic_jacobian_within_one_with_convolutions():
    torch.manual_seed(3)
    critic = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), GroupSort(2), nn.Conv2d(4, 8, 4, 2, 1),
                           GroupSort(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 1))
    build_constraint(critic, ConstraintConfig(name="aol"))
    for _ in range(5):
        x = torch.randn(1, 8, 8)
        assert jacobian_norm(lambda v: critic(v.unsqueeze(0)), x) <= 1 + 1e-5


def test_unsupported_convolutions_and_double_reparametrisation_are_refused():
    with pytest.raises(ValueError, match="dilation"):
        AOL(nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2)))
    critic = gs_mlp()
    build_constraint(critic, ConstraintConfig(name="sn"))
    with pytest.raises(ValueError, match="already reparametrised"):
        build_constraint(critic, ConstraintConfig(name="bjorck"))


def test_activation_follows_the_constraint_unless_set():
    assert critic_activation("auto", ConstraintConfig(name="bjorck")) == "groupsort"
    assert critic_activation("auto", ConstraintConfig(name="aol+gp")) == "groupsort"
    assert critic_activation("auto", ConstraintConfig(name="clip")) == "auto"
    assert critic_activation("leaky_relu", ConstraintConfig(name="bjorck")) == "leaky_relu"
    cfg = load_config("mnist_mlp", ["constraint.name=aol"])
    _, critic = build_models(cfg.model, cfg.data,
                             critic_activation(cfg.model.activation, cfg.constraint))
    assert sum(isinstance(m, GroupSort) for m in critic.modules()) == 2
    assert not any(isinstance(m, nn.LeakyReLU) for m in critic.modules())


def test_invclip_refuses_groupsort_critics():
    with pytest.raises(InvarianceError, match="GroupSort.*model.activation=leaky_relu"):
        build_constraint(gs_mlp(), ConstraintConfig(name="invclip"))
    cfg = tiny_config(**{"constraint.name": "invclip", "model.activation": "groupsort"})
    with pytest.raises(InvarianceError, match="sorting mixes the units"):
        Trainer(cfg, "/nonexistent-never-written")


@pytest.mark.parametrize("name", ["bjorck", "aol"])
def test_toy_training_run_stays_within_one(name, tmp_path):
    cfg = tiny_config(**{"constraint.name": name, "train.diagnostics_every": 3})
    trainer = Trainer(cfg, tmp_path)
    last = trainer.run()
    assert any(isinstance(m, GroupSort) for m in trainer.critic.modules())
    assert last["lipschitz/spectral_product"] <= 1 + 1e-3
    assert last[f"{name}/sigma_max"] <= 1 + 1e-3
    assert last["lipschitz/interp_max"] <= 1 + 1e-3
