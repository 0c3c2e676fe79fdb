"""The output-aware ``output`` solver (wganlab/rescale/output.py, capture.py, output_terms.py)."""
from __future__ import annotations

import copy
import gc

import pytest
import torch
from torch import nn

from wganlab import InvariantClip
from wganlab.rescale import (SolveContext, critic_output, find_pairs, rescale_critic_,
                             rescale_pair_)
from wganlab.rescale import capture as K
from wganlab.rescale import output as O


def mlp(dtype=torch.float32, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12, bias=bias), nn.LeakyReLU(0.2),
                         nn.Linear(12, 8, bias=bias), nn.LeakyReLU(0.2),
                         nn.Linear(8, 1, bias=bias)).to(dtype)


def convnet(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(4, 6, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                         nn.Linear(6 * 16, 1)).to(dtype)


def step_batch(critic, dtype, shape, opt=None, penalty=False, seed=1):
    """One trainer-style critic step (forward on cat([real, fake]), backward); returns batch."""
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(8, *shape, generator=g).to(dtype)
    fake = (0.5 * torch.randn(8, *shape, generator=g)).to(dtype)
    batch = torch.cat([real, fake])
    out = critic(batch).reshape(-1)
    loss = -(out[:8].mean() - out[8:].mean())
    if penalty:  # a GP-like term on interpolates: its forward must not be mistaken for the batch
        x = (0.3 * real + 0.7 * fake).requires_grad_(True)
        gr, = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
        loss = loss + 10 * (gr.flatten(1).norm(dim=1) - 1).square().mean()
    if opt is not None:
        opt.zero_grad()
    loss.backward()
    if opt is not None:
        opt.step()
    return batch


def bounds_violating(critic, frac=0.7):
    """Per-layer bounds below the largest |entry|, so that several entries violate."""
    out = []
    for m in critic.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            ps = [m.weight] + ([m.bias] if m.bias is not None else [])
            out.append(frac * max(float(p.detach().abs().max()) for p in ps))
    return out


@pytest.mark.parametrize("make,shape", [(mlp, (1, 4, 4)), (convnet, (1, 16, 16))])
def test_no_violation_is_identity(make, shape):
    C = make()
    bounds = [10.0] * 3
    proj = InvariantClip(C, bounds, solver="output")
    batch = step_batch(C, torch.float32, shape)
    before = [p.detach().clone() for p in C.parameters()]
    proj.observe(batch)
    proj.step()
    assert all(torch.equal(a, b) for a, b in zip(before, C.parameters()))
    assert all(torch.equal(d, torch.ones_like(d)) for d in proj.last_scales)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("make,shape", [(mlp, (1, 4, 4)), (convnet, (1, 16, 16))])
@pytest.mark.parametrize("penalty", [False, True])
def test_rescaling_keeps_the_function(make, shape, dtype, tol, penalty):
    C = make(dtype)
    opt = torch.optim.RMSprop(C.parameters(), lr=1e-2)
    bounds = bounds_violating(C, 0.8)
    proj = InvariantClip(C, bounds, solver="output", options={"subsample": 0})
    moved = 0.0
    for k in range(3):
        batch = step_batch(C, dtype, shape, opt, penalty=penalty, seed=k)
        proj.observe(batch)
        f0 = critic_output(C, batch)
        scales = proj.rescale(opt)
        f1 = critic_output(C, batch)
        assert float((f1 - f0).norm() / f0.norm()) < tol
        moved = max(moved, max(float(d.double().log().abs().max()) for d in scales))
        proj.clip_()
    assert moved > 0  # the solver did rescale something


def test_one_sided_violation_is_moved_into_the_box():
    # hidden unit 0: incoming entries 2.0 (bound 1.5) violate, outgoing 0.5 (bound 1) has slack
    C = nn.Sequential(nn.Linear(2, 2, bias=False), nn.LeakyReLU(0.2), nn.Linear(2, 1, bias=False))
    C = C.double()
    with torch.no_grad():
        C[0].weight.copy_(torch.tensor([[2.0, -1.8], [0.5, 0.3]], dtype=torch.float64))
        C[2].weight.copy_(torch.tensor([[0.5, -0.9]], dtype=torch.float64))
    bounds = [1.5, 1.0]
    proj = InvariantClip(C, bounds, solver="output")
    batch = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = C(batch).reshape(-1)
    (-(out[:8].mean() - out[8:].mean())).backward()
    f0 = critic_output(C, batch)
    proj.observe(batch)
    proj.step()
    d = proj.last_scales[0]
    assert d[0] == pytest.approx(2.0 / 1.5) and d[1] == 1
    for m, b in zip((C[0], C[2]), bounds):
        assert float(m.weight.detach().abs().max()) <= b + 1e-15
    assert torch.allclose(critic_output(C, batch), f0, rtol=0, atol=1e-12)


def sweep_with_prediction(C, bounds, batch, options, state=None):
    pairs = find_pairs(C)
    cache = {"pairs": pairs}
    for k, pair in enumerate(pairs):
        ctx = SolveContext(pair, k, bounds[pair.index_in], bounds[pair.index_out],
                           options={"record_prediction": True, **options}, critic=C,
                           batch=batch, cache=cache, work={}, state=state)
        rescale_pair_(pair, O.output_solver(ctx))
    return cache


@pytest.mark.parametrize("bias", [False, True])
def test_predicted_first_order_change_matches_measured(bias):
    # a two-layer critic (one rescalable layer), entries pushed 0.1-0.5 % past the bounds
    torch.manual_seed(3)
    C = nn.Sequential(nn.Linear(10, 16, bias=bias), nn.LeakyReLU(0.2),
                      nn.Linear(16, 1, bias=False)).double()
    l_in, l_out = 0.2, 0.3
    with torch.no_grad():
        g = torch.Generator().manual_seed(4)
        for m, l in ((C[0], l_in), (C[2], l_out)):
            w = torch.rand(m.weight.shape, generator=g, dtype=torch.float64) * 2 - 1
            m.weight.copy_(w.sign() * l * (1 + 0.005 * torch.rand(w.shape, generator=g,
                                                                   dtype=torch.float64)))
            m.weight.mul_(torch.where(torch.rand(w.shape, generator=g) < 0.5, 1.0, 0.9))
        if bias:
            C[0].bias.copy_(torch.linspace(-l_in * 1.003, l_in * 1.003, 16))
    x = torch.randn(32, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    state = {}                        # (InvariantClip's work: the solver installs it there)
    O.capture_in(state, [C[0], C[2]])
    out = C(x).reshape(-1)
    (-(out[:16].mean() - out[16:].mean())).backward()   # the capture sees this pass
    f0 = critic_output(C, x).reshape(-1)
    clipped = copy.deepcopy(C)
    with torch.no_grad():
        for m, l in ((clipped[0], l_in), (clipped[2], l_out)):
            for p in m.parameters():
                p.clamp_(-l, l)
    plain = float((critic_output(clipped, x).reshape(-1) - f0).norm())
    cache = sweep_with_prediction(C, [l_in, l_out], x, {"subsample": 0}, state)
    assert cache["output_source"] == "capture"
    with torch.no_grad():
        for m, l in ((C[0], l_in), (C[2], l_out)):
            for p in m.parameters():
                p.clamp_(-l, l)
    measured = critic_output(C, x).reshape(-1) - f0
    predicted = O.predicted_change(cache)
    assert predicted is not None and measured.abs().max() > 0
    # first order in the clip errors; with the LeakyReLU kinks only a few samples may flip
    rel = float((predicted - measured).norm() / measured.norm())
    print(f"linear, bias={bias}: relative error of the prediction {rel:.2e}")
    assert rel < 0.01
    assert float(measured.norm()) <= plain * 1.0001  # never worse than plain clipping here


def test_capture_equals_own_pass_and_ignores_penalty_forward():
    """The sensitivities from the step's own backward (sign and scale restored) equal those of
    a separate pass; a penalty's extra forward on interpolates is not used."""
    C = convnet(torch.float64)
    bounds = bounds_violating(C, 0.8)
    batch = step_batch(C, torch.float64, (1, 16, 16), penalty=True)
    idx = K.subsample(batch.shape[0], None, batch.device)
    layers = [m for m in C.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    proj = InvariantClip(C, bounds, solver="output", options={"subsample": 0})
    assert O.capture_in(proj._work) is not None  # installed when the projection is built
    proj.observe(batch)
    proj.rescale()          # the batch was computed before the capture: own pass
    batch = step_batch(C, torch.float64, (1, 16, 16), penalty=True, seed=2)
    cap = O.capture_in(proj._work)
    assert len(cap.records) == 2      # the main forward and the penalty's
    got = K.from_capture(cap, batch, idx)
    assert got is not None
    xs, gs = K.own_pass(C, layers, batch, idx)
    for a, b in zip(got[0], xs):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)
    for a, b in zip(got[1], gs):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_deepcopy_and_fallback_without_batch():
    C = mlp()
    bounds = bounds_violating(C, 0.8)
    proj = InvariantClip(C, bounds, solver="output")
    batch = step_batch(C, torch.float32, (1, 4, 4))
    proj.observe(batch)
    proj.step()
    twin = copy.deepcopy(C)           # hooks are copied but stay inert on the copy
    twin(batch).sum().backward()
    assert len(O.capture_in(proj._work).records) == 0
    plain = InvariantClip(twin, bounds, solver="output")   # no observe(): exact fallback
    plain.step()
    for m, b in zip([m for m in twin.modules() if isinstance(m, nn.Linear)], bounds):
        assert float(m.weight.detach().abs().max()) <= b * (1 + 1e-6)


def test_diagnostics_and_balance_option():
    C = mlp()
    opt = torch.optim.RMSprop(C.parameters(), lr=1e-2)
    bounds = bounds_violating(C, 0.8)
    proj = InvariantClip(C, bounds, solver="output", transform_state=True,
                         options={"balance_weight": 100.0, "subsample": 8})
    for k in range(3):
        batch = step_batch(C, torch.float32, (1, 4, 4), opt, seed=k)
        proj.observe(batch)
        proj.step(opt, diagnose=True)
    diag = proj.diagnostics()
    for key in ("invclip/impact", "invclip/impact_rms", "invclip/loss_change",
                "balance/L0_absmedian", "invclip/logd_max_L0"):
        assert key in diag


class _ConvCritic(nn.Module):
    """conv -> LeakyReLU -> conv, averaged over positions: one rescalable conv pair whose
    outgoing side has several positions (the DCGAN case)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, 1, 1)
        self.act = nn.LeakyReLU(0.2)
        self.c2 = nn.Conv2d(4, 1, 3, 2, 1)

    def forward(self, x):
        return self.c2(self.act(self.c1(x))).mean((1, 2, 3))


def test_predicted_change_conv():
    torch.manual_seed(6)
    C = _ConvCritic().double()
    l_in, l_out = 0.15, 0.1
    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        for m, l in ((C.c1, l_in), (C.c2, l_out)):
            w = torch.rand(m.weight.shape, generator=g, dtype=torch.float64) * 2 - 1
            m.weight.copy_(w.sign() * l * (1 + 0.005 * torch.rand(w.shape, generator=g,
                                                                   dtype=torch.float64)))
            m.weight.mul_(torch.where(torch.rand(w.shape, generator=g) < 0.5, 1.0, 0.9))
        C.c1.bias.copy_(torch.linspace(-l_in * 1.003, l_in * 1.003, 4))
    x = torch.randn(16, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    state = {}
    O.capture_in(state, [C.c1, C.c2])
    out = C(x).reshape(-1)
    (-(out[:8].mean() - out[8:].mean())).backward()
    f0 = critic_output(C, x).reshape(-1)
    cache = sweep_with_prediction(C, [l_in, l_out], x, {"subsample": 0}, state)
    assert cache["output_source"] == "capture"
    with torch.no_grad():
        for m, l in ((C.c1, l_in), (C.c2, l_out)):
            for p in m.parameters():
                p.clamp_(-l, l)
    measured = critic_output(C, x).reshape(-1) - f0
    predicted = O.predicted_change(cache)
    rel = float((predicted - measured).norm() / measured.norm())
    print(f"conv: relative error of the prediction {rel:.2e}")
    assert rel < 0.01


def test_trainer_uses_the_steps_own_backward(tmp_path, monkeypatch):
    """In the trainer the solver reads the critic step's captured sensitivities: its own
    forward/backward never runs (the hooks exist from the projection's construction on, so
    even the first step reads the training pass)."""
    from conftest import tiny_config
    from wganlab.train import Trainer
    calls = []
    real_own_pass = K.own_pass
    monkeypatch.setattr(K, "own_pass", lambda *a: calls.append(1) or real_own_pass(*a))
    cfg = tiny_config(**{"constraint.name": "invclip", "constraint.invclip.solver": "output",
                         "constraint.clip.bound": 0.05, "train.generator_steps": 3})
    Trainer(cfg, tmp_path / "run").run()
    assert len(calls) == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert any("invclip/impact" in line for line in lines)


def test_clip_before_the_step_uses_the_previous_steps_capture(monkeypatch):
    """when='before' (original WGAN code): the projection in prepare() sees the previous
    step's batch and that step's captured forward/backward."""
    calls = []
    real_own_pass = K.own_pass
    monkeypatch.setattr(K, "own_pass", lambda *a: calls.append(1) or real_own_pass(*a))
    C = mlp()
    opt = torch.optim.RMSprop(C.parameters(), lr=1e-2)
    bounds = bounds_violating(C, 0.8)
    proj = InvariantClip(C, bounds, solver="output", when="before")
    for k in range(4):
        proj.prepare()
        batch = step_batch(C, torch.float32, (1, 4, 4), opt, seed=k)
        proj.observe(batch)
        proj.step(opt)
    assert len(calls) == 0  # step 0: no batch yet (exact fallback); then the captures


def forward_hooks(module):
    return [m for m in module.modules() if m._forward_hooks]


def test_capture_hooks_go_with_their_owner():
    """The capture's hooks stay while the projection that keeps it lives (they record the next
    step), and leave the critic when it is dropped; a solve whose caller keeps no work dict
    leaves no hook at all."""
    C = mlp()
    bounds = bounds_violating(C, 0.8)
    proj = InvariantClip(C, bounds, solver="output")
    for k in range(2):
        proj.observe(step_batch(C, torch.float32, (1, 4, 4), seed=k))
        proj.step()
    assert forward_hooks(C)                       # kept for the next step
    del proj
    gc.collect()
    assert not forward_hooks(C)

    pairs = find_pairs(C)
    batch = step_batch(C, torch.float32, (1, 4, 4), seed=3)
    rescale_critic_(pairs, bounds, "output", critic=C, batch=batch)     # no work: own pass
    assert not forward_hooks(C)
    work = {}
    rescale_critic_(pairs, bounds, "output", critic=C, batch=batch, work=work)
    assert forward_hooks(C)
    O.capture_in(work).close()
    assert not forward_hooks(C)


def test_capture_as_a_context():
    C = mlp()
    with K.ActivationCapture([C[1], C[3]]) as cap:
        C(torch.randn(4, 1, 4, 4)).sum().backward()
        assert len(cap.records) == 1 and cap.records[0].complete()
    assert cap.closed and not cap.records and not forward_hooks(C)
