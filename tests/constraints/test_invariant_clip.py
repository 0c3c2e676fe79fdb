"""InvariantClip end to end: rescaling keeps the critic's function, the step lands in the box,
the optimizer-state transform matches autograd on rescaled copies, diagnostics and state."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wganlab import InvariantClip, WeightClip
from wganlab.config import ConstraintConfig
from wganlab.constraints import build_constraint
from wganlab.models import dcgan_critic, mlp_critic
from wganlab.rescale import find_pairs, rescale_pair_, transform_state_

SETTINGS = settings(max_examples=30, deadline=None)
SOLVERS = ["paper", "paper-guarded", "exact", "function", "balance"]


# ----------------------------------------------------------------------------- random critics

def activation(draw):
    kind = draw(st.sampled_from(["relu", "leaky", "identity"]))
    if kind == "relu":
        return nn.ReLU()
    if kind == "identity":
        return nn.Identity()
    return nn.LeakyReLU(draw(st.floats(-0.5, 1.5)))


@st.composite
def critics(draw):
    """(critic, input) for random MLP, conv, and conv -> flatten -> linear critics."""
    torch.manual_seed(draw(st.integers(0, 2 ** 20)))
    kind = draw(st.sampled_from(["mlp", "conv", "convflat"]))
    bias = draw(st.booleans())
    if kind == "mlp":
        widths = draw(st.lists(st.integers(1, 7), min_size=2, max_size=4))
        layers: list[nn.Module] = []
        for i, o in zip(widths, widths[1:] + [1]):
            layers += [nn.Linear(i, o, bias=bias), activation(draw)]
        return nn.Sequential(*layers[:-1]), torch.randn(9, widths[0])
    c1, c2 = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    layers = [nn.Conv2d(2, c1, 3, padding=1, bias=bias), activation(draw)]
    if draw(st.booleans()):
        layers.append(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2)])))
    else:
        layers.append(nn.Conv2d(c1, c1, 3, stride=2, padding=1, bias=bias))
        layers.append(activation(draw))
    if kind == "conv":
        layers += [nn.Conv2d(c1, c2, 2, bias=bias), activation(draw), nn.Conv2d(c2, 1, 1)]
    else:
        layers += [nn.Conv2d(c1, c2, 1, bias=bias), activation(draw), nn.Flatten(),
                   nn.Linear(c2 * 2 * 2, 1, bias=bias)]
    return nn.Sequential(*layers), torch.randn(9, 2, 4, 4)


def tight_bounds(critic, frac):
    """Per-layer bounds at a fraction of each layer's largest weight, so rescaling matters."""
    return [max(float(m.weight.detach().abs().max()) * frac, 1e-3)
            for m in critic.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def rel_change(f0, f1):
    return float((f1 - f0).norm() / f0.norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------- properties

@SETTINGS
@given(critics(), st.sampled_from(SOLVERS), st.sampled_from([torch.float32, torch.float64]),
       st.floats(0.2, 1.2), st.integers(1, 2))
def test_rescaling_alone_keeps_the_function(net_x, solver, dtype, frac, sweeps):
    net, x = net_x
    net, x = net.to(dtype), x.to(dtype)
    proj = InvariantClip(net, tight_bounds(net, frac), solver=solver, sweeps=sweeps)
    proj.observe(x)
    with torch.no_grad():
        f0 = net(x)
        scales = proj.rescale()
        f1 = net(x)
    assert len(scales) == len(proj.pairs)
    # float32: outputs that cancel to ~1e-4 of their terms lose a few more digits
    assert rel_change(f0, f1) < (1e-4 if dtype == torch.float32 else 1e-12)


@SETTINGS
@given(critics(), st.integers(0, 2 ** 20))
def test_any_positive_scales_keep_the_function_float64(net_x, seed):
    net, x = net_x
    net, x = net.double(), x.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        f0 = net(x)
        for pair in find_pairs(net):
            d = torch.exp(2 * torch.randn(pair.units, generator=g, dtype=torch.float64))
            rescale_pair_(pair, d)
        assert rel_change(f0, net(x)) < 1e-12


@SETTINGS
@given(critics(), st.sampled_from(SOLVERS), st.floats(0.2, 1.2))
def test_step_lands_in_the_box(net_x, solver, frac):
    net, x = net_x
    bounds = tight_bounds(net, frac)
    proj = InvariantClip(net, bounds, solver=solver)
    proj.observe(x)
    proj.step(None, diagnose=True)
    for _, p, b in proj.targets:  # the bound as the parameter's dtype holds it
        assert p.abs().max() <= torch.tensor(b, dtype=p.dtype)
    assert proj.diagnostics()["invclip/fraction_clipped"] >= 0


# ----------------------------------------------------------------------------- optimizer state

def small_critic(kind):
    if kind == "linear":
        return nn.Sequential(nn.Linear(5, 6), nn.LeakyReLU(0.2), nn.Linear(6, 4), nn.ReLU(),
                             nn.Linear(4, 1)), (8, 5)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 2 * 2, 1)), (8, 2, 4, 4)


OPTIMIZERS = {
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-2, eps=1e-30),
    "rmsprop-momentum": lambda ps: torch.optim.RMSprop(ps, lr=1e-2, momentum=0.9, eps=1e-30),
    "rmsprop-centered": lambda ps: torch.optim.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True,
                                                       eps=1e-30),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, eps=1e-30),
    "adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True, eps=1e-30),
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
}


def wgan_loss(net, x):
    f = net(x)
    half = x.shape[0] // 2
    return -(f[:half].mean() - f[half:].mean())


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_state_transform_matches_autograd_on_rescaled_copies(kind, opt_name):
    torch.manual_seed(0)
    net, shape = small_critic(kind)
    net = net.double()
    pairs = find_pairs(net)
    ds = [torch.exp(0.7 * torch.randn(p.units, dtype=torch.float64)) for p in pairs]
    opt = OPTIMIZERS[opt_name](net.parameters())
    shadow_params = [torch.zeros_like(p, requires_grad=True) for p in net.parameters()]
    shadow = OPTIMIZERS[opt_name](shadow_params)
    for _ in range(4):
        x = torch.randn(*shape, dtype=torch.float64)
        twin = copy.deepcopy(net)  # the rescaled critic at this trajectory point
        with torch.no_grad():
            for pair, d in zip(find_pairs(twin), ds):
                rescale_pair_(pair, d)
        wgan_loss(twin, x).backward()
        for sp, tp in zip(shadow_params, twin.parameters()):
            sp.grad = tp.grad.clone()
        shadow.step()
        opt.zero_grad()
        wgan_loss(net, x).backward()
        opt.step()
    for pair, d in zip(pairs, ds):
        transform_state_(opt, pair, d)
    checked = 0
    for p, sp in zip(net.parameters(), shadow_params):
        for key, value in opt.state[p].items():
            if torch.is_tensor(value) and value.shape == p.shape:
                assert torch.allclose(value, shadow.state[sp][key], rtol=1e-9, atol=1e-15), key
                checked += 1
    assert checked >= len(list(net.parameters()))


def test_invariant_clip_transforms_state_when_asked():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 1)).double()
    opt = torch.optim.RMSprop(net.parameters(), lr=0.1)
    wgan_loss(net, torch.randn(6, 4, dtype=torch.float64)).backward()
    opt.step()
    sq_in = opt.state[net[0].weight]["square_avg"].clone()
    sq_out = opt.state[net[2].weight]["square_avg"].clone()
    proj = InvariantClip(net, 0.05, transform_state=True)
    (d,) = proj.rescale(opt)
    assert torch.allclose(opt.state[net[0].weight]["square_avg"], sq_in * d[:, None] ** 2)
    assert torch.allclose(opt.state[net[2].weight]["square_avg"], sq_out / d[None, :] ** 2)


# ----------------------------------------------------------------------------- behaviour

def test_paper_rescales_a_feasible_critic_exact_leaves_it():
    torch.manual_seed(2)
    net = mlp_critic()
    before = [p.detach().clone() for p in net.parameters()]
    exact = InvariantClip(net, 1.0, solver="exact")
    exact.step()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    paper = InvariantClip(net, 1.0, solver="paper")
    scales = paper.rescale()
    assert all(torch.allclose(d, torch.full_like(d, 1.1)) for d in scales)


def test_diagnostics_keys_and_impact():
    torch.manual_seed(3)
    net = mlp_critic()
    x = torch.randn(16, 1, 32, 32)
    clip = [0.035, 0.045, 0.0625]
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.3)
    twin = copy.deepcopy(net)
    proj = InvariantClip(net, clip, solver="exact")
    proj.observe(x)
    proj.step(None, diagnose=True)
    diag = proj.diagnostics()
    for key in ["invclip/impact", "invclip/impact_rms", "invclip/loss_change",
                "invclip/box_before_L0", "invclip/box_after_L0", "invclip/clipped_L0",
                "invclip/box_before_L2", "invclip/box_before", "invclip/box_after",
                "invclip/fraction_clipped", "balance/L0_median", "balance/L0_p10",
                "balance/L0_p90", "balance/L1_absmedian", "invclip/logd_max_L1"]:
        assert key in diag and isinstance(diag[key], float), key
    assert diag["invclip/box_after"] <= diag["invclip/box_before"]
    assert diag["invclip/impact"] > 0
    plain = WeightClip(twin, clip)
    plain.observe(x)
    plain.step(None, diagnose=True)
    d2 = plain.diagnostics()
    assert d2["clip/impact"] > 0 and "clip/loss_change" in d2


def test_no_impact_without_clipping():
    net = mlp_critic()
    proj = WeightClip(net, 10.0)
    proj.observe(torch.randn(4, 1, 32, 32))
    proj.step(None, diagnose=True)
    assert proj.diagnostics()["clip/impact"] == 0.0


def test_every_and_state_dict():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    proj = InvariantClip(net, 0.01, solver="paper", every=3)
    rescaled = []
    for _ in range(7):
        proj.step(None, diagnose=True)
        rescaled.append(proj.diagnostics()["invclip/rescaled"])
    assert rescaled == [1, 0, 0, 1, 0, 0, 1]
    state = proj.state_dict()
    other = InvariantClip(net, 0.01, solver="paper", every=3)
    other.load_state_dict(state)
    other.step(None, diagnose=True)
    assert other.diagnostics()["invclip/rescaled"] == 0.0 and other.steps == 8


def test_built_from_config():
    cfg = ConstraintConfig.from_raw({
        "name": "invclip", "clip": {"bound": [0.05, 0.008, 0.006, 0.004]},
        "invclip": {"solver": "paper", "sweeps": 2, "every": 2, "transform_state": True,
                    "strict": True}})
    proj = build_constraint(dcgan_critic(), cfg)
    assert isinstance(proj, InvariantClip)
    assert (proj.solver, proj.sweeps, proj.every, proj.transform_state) == ("paper", 2, 2, True)
    assert len(proj.pairs) == 3 and proj.bounds == [0.05, 0.008, 0.006, 0.004]


def test_strict_mode_refuses_batchnorm():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        InvariantClip(net, 0.01, strict=True)
    proj = InvariantClip(net, 0.01, params=("weight", "bias", "norm"))
    assert proj.pairs == [] and any(k == -1 for k, _, _ in proj.targets)


def test_unknown_solver():
    with pytest.raises(ValueError, match="unknown rescaling solver"):
        InvariantClip(mlp_critic(), 0.01, solver="nope")


# ----------------------------------------------------------------------------- bounded drift

def _train_steps(proj, critic, opt, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(32, critic[0].in_features, generator=g, dtype=critic[0].weight.dtype)
        loss = -critic(x).mean() + critic(x.flip(0) * 0.5).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        proj.step(opt)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.LeakyReLU(0.2), nn.Linear(16, 8),
                         nn.LeakyReLU(0.2), nn.Linear(8, 1))


@pytest.mark.parametrize("option", [{"max_drift": 0.0}, {"rescale_steps": 0}])
def test_no_rescaling_allowed_is_plain_clipping(option):
    a, b = _mlp(), _mlp()
    pa = InvariantClip(a, 0.05, solver="exact", **option)
    pb = WeightClip(b, 0.05)
    oa = torch.optim.RMSprop(a.parameters(), lr=1e-2)
    ob = torch.optim.RMSprop(b.parameters(), lr=1e-2)
    _train_steps(pa, a, oa, 10)
    _train_steps(pb, b, ob, 10)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_bounded_drift_stays_bounded_and_exact_stays_optimal_within_it():
    from wganlab.rescale import incoming, outgoing
    from wganlab.rescale.solvers import box_distance2
    critic = _mlp(1).double()
    m = 0.02
    proj = InvariantClip(critic, 0.05, solver="exact", max_drift=m)
    opt = torch.optim.RMSprop(critic.parameters(), lr=1e-2)
    _train_steps(proj, critic, opt, 15)
    assert all((acc.abs() <= m + 1e-12).all() for acc in proj.drift)
    assert any((acc.abs() > m / 2).any() for acc in proj.drift)   # the bound was reached
    # one more step by hand: the bounded d minimises eq. (7) over the allowed interval
    x = torch.randn(32, 12, dtype=torch.float64)
    opt.zero_grad()
    (-critic(x).mean()).backward()
    opt.step()
    pair, acc = proj.pairs[0], proj.drift[0].clone()
    a, b = incoming(pair).clone(), outgoing(pair).clone()
    d = proj.rescale()[0]
    lo, hi = (-m - acc).exp(), (m - acc).exp()
    assert ((d >= lo * (1 - 1e-12)) & (d <= hi * (1 + 1e-12))).all()
    F = box_distance2(a, b, 0.05, 0.05, d)
    for f in torch.linspace(0, 1, 101, dtype=torch.float64):
        cand = lo * (hi / lo) ** f
        assert (F <= box_distance2(a, b, 0.05, 0.05, cand) * (1 + 1e-7) + 1e-18).all()


def test_drift_is_saved_and_restored():
    critic = _mlp(2)
    proj = InvariantClip(critic, 0.05, solver="exact", max_drift=0.5)
    opt = torch.optim.RMSprop(critic.parameters(), lr=1e-2)
    _train_steps(proj, critic, opt, 5)
    state = proj.state_dict()
    other = InvariantClip(_mlp(2), 0.05, solver="exact", max_drift=0.5)
    other.load_state_dict(state)
    for x, y in zip(proj.drift, other.drift):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert any(t.abs().max() > 0 for t in other.drift)
    with pytest.raises(ValueError, match="max_drift"):
        InvariantClip(_mlp(), 0.05, max_drift=-1.0)


def test_rescale_steps_rescales_only_the_first_steps():
    """The rebalanced-start control: after N steps the accumulated drift is frozen."""
    critic = _mlp(3).double()
    proj = InvariantClip(critic, 0.05, solver="exact", max_drift=0.1, rescale_steps=4)
    opt = torch.optim.RMSprop(critic.parameters(), lr=1e-2)
    _train_steps(proj, critic, opt, 4)
    frozen = [t.clone() for t in proj.drift]
    assert any(t.abs().max() > 0 for t in frozen)
    _train_steps(proj, critic, opt, 6, seed=1)
    for t, f in zip(proj.drift, frozen):
        torch.testing.assert_close(t, f, rtol=0, atol=0)
    with pytest.raises(ValueError, match="rescale_steps"):
        InvariantClip(_mlp(), 0.05, rescale_steps=-1)


def test_balance_reaches_the_minimum_norm_point_of_the_whole_critic():
    """With enough sweeps the balance solver reaches a fixed point (the critic's minimum-norm
    member, Stock et al. 2019): rescaling it again moves nothing, and the function is kept."""
    critic = _mlp(4).double()
    x = torch.randn(16, 12, dtype=torch.float64)
    f0 = critic(x).detach()
    proj = InvariantClip(critic, 10.0, solver="balance", sweeps=200)  # a box that clips nothing
    norm0 = sum(float(p.detach().square().sum()) for p in critic.parameters())
    proj.rescale()
    norm1 = sum(float(p.detach().square().sum()) for p in critic.parameters())
    again = proj.rescale()
    assert norm1 < norm0
    for d in again:
        torch.testing.assert_close(d, torch.ones_like(d), rtol=0, atol=1e-9)
    torch.testing.assert_close(critic(x).detach(), f0, rtol=1e-12, atol=1e-12)
