"""The contract every registered plugin keeps, tested the day it is registered: each constraint
(and invclip with each rescaling solver) builds from its config section, trains with finite
float diagnostics, composes with another constraint, and resumes from its state (plain data,
loadable without code) exactly as if never interrupted. One-vs-two-process equality is in
test_distributed.py, whose cases come from the same registries."""
from __future__ import annotations

import io
import math

import pytest
import torch

from conftest import tiny_config
from wganlab.constraints import Compose, build_constraint, critic_activation
from wganlab.models import build_models
from wganlab.plugins import CONSTRAINTS, SOLVERS

CASES = {p.name: {"constraint.name": p.name} for p in CONSTRAINTS}
CASES.update({f"invclip-{s.name}": {"constraint.name": "invclip",
                                    "constraint.invclip.solver": s.name} for s in SOLVERS})


def _build(case: str, name: str | None = None, seed: int = 0):
    cfg = tiny_config(**CASES[case])
    if name is not None:
        cfg.constraint.name = name
    torch.manual_seed(seed)
    _, critic = build_models(cfg.model, cfg.data,
                             critic_activation(cfg.model.activation, cfg.constraint))
    con = build_constraint(critic, cfg.constraint)
    opt = torch.optim.SGD(critic.parameters(), lr=0.05, momentum=0.5)
    return critic, con, opt


def _steps(critic, con, opt, first: int, n: int) -> list[dict[str, float]]:
    diags = []
    for i in range(first, first + n):
        g = torch.Generator().manual_seed(1000 + i)
        real = torch.randn(32, 2, generator=g) * 0.5 + 1
        fake = torch.randn(32, 2, generator=g)
        torch.manual_seed(i)  # the penalties' per-sample draws
        con.prepare()
        con.observe(torch.cat([real, fake]))
        loss = -(critic(real).mean() - critic(fake).mean())
        pen = con.penalty(real, fake)
        if pen is not None:
            loss = loss + pen
        opt.zero_grad()
        loss.backward()
        opt.step()
        con.step(opt, diagnose=True)
        assert math.isfinite(float(loss.detach()))
        diags.append(con.diagnostics())
    return diags


@pytest.mark.parametrize("case", list(CASES))
def test_trains_with_finite_float_diagnostics(case):
    critic, con, opt = _build(case)
    for diag in _steps(critic, con, opt, 0, 3):
        for key, value in diag.items():
            assert isinstance(key, str) and type(value) in (float, int), (key, type(value))
            assert math.isfinite(value), (key, value)
    assert all(torch.isfinite(p).all() for p in critic.parameters())


@pytest.mark.parametrize("case", list(CASES))
def test_state_round_trip_resumes_exactly(case):
    critic, con, opt = _build(case)
    _steps(critic, con, opt, 0, 6)
    straight = {k: v.clone() for k, v in critic.state_dict().items()}

    critic, con, opt = _build(case)
    _steps(critic, con, opt, 0, 3)
    buf = io.BytesIO()  # the state must be plain data: loadable with weights_only
    torch.save({"critic": critic.state_dict(), "optim": opt.state_dict(),
                "constraint": con.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    critic, con, opt = _build(case)
    critic.load_state_dict(saved["critic"])
    opt.load_state_dict(saved["optim"])
    con.load_state_dict(saved["constraint"])
    _steps(critic, con, opt, 3, 3)
    for k, v in critic.state_dict().items():
        torch.testing.assert_close(v, straight[k], rtol=0, atol=0, msg=f"{case}: {k}")


@pytest.mark.parametrize("case", list(CASES))
def test_composes(case):
    base = CASES[case]["constraint.name"]
    partner = "clip" if CONSTRAINTS.get(base).has("penalty") else "r1"
    critic, con, opt = _build(case, f"{base}+{partner}")
    assert isinstance(con, Compose) and len(con.parts) == 2
    _steps(critic, con, opt, 0, 2)
    state = con.state_dict()
    con.load_state_dict(state)
    assert all(torch.isfinite(p).all() for p in critic.parameters())


@pytest.mark.parametrize("solver", [s.name for s in SOLVERS])
def test_solver_rescaling_leaves_the_function_unchanged(solver):
    critic, con, _ = _build(f"invclip-{solver}")
    with torch.no_grad():  # weights far outside the box, so that every solver moves units
        for p in critic.parameters():
            p.mul_(20)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    before = critic(x).detach().double()
    con.observe(x)
    scales = con.rescale()
    assert any((d != 1).any() for d in scales), f"{solver} moved no unit"
    scale = float(before.abs().max())  # float32 rounding is relative to the output's size
    torch.testing.assert_close(critic(x).detach().double(), before, rtol=1e-5,
                               atol=1e-5 * scale)


def test_capabilities_are_declared():
    assert SOLVERS.get("output").has("uses_batch") and not SOLVERS.get("exact").has("uses_batch")
    assert CONSTRAINTS.get("sn").has("reparametrises")
    assert CONSTRAINTS.get("gp").has("draws_per_sample") and not CONSTRAINTS.get("r1").has(
        "draws_per_sample")
    critic, con, _ = _build("invclip-function")
    assert con.uses_batch
    critic, con, _ = _build("invclip-exact", "invclip+r1")
    assert not con.uses_batch
