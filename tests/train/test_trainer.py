import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from wganlab.cli import main
from wganlab.train import Trainer

from conftest import tiny_config


def _weights(trainer):
    return {**{f"g.{k}": v for k, v in trainer.generator.state_dict().items()},
            **{f"c.{k}": v for k, v in trainer.critic.state_dict().items()}}


def test_seeded_run_is_reproducible(tmp_path):
    a = Trainer(tiny_config(seed=5), tmp_path / "a")
    a.run()
    b = Trainer(tiny_config(seed=5), tmp_path / "b")
    b.run()
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = Trainer(tiny_config(seed=6), tmp_path / "c")
    c.run()
    assert not all(torch.equal(wa[k], v) for k, v in _weights(c).items())


def test_clip_bounds_hold_after_every_critic_step(tmp_path):
    cfg = tiny_config(**{"constraint.clip.bound": "[0.01, 0.02, 0.03, 0.04]",
                         "optim.critic.lr": 0.05})
    t = Trainer(cfg, tmp_path)
    layers = [m for m in t.critic.modules() if isinstance(m, torch.nn.Linear)]
    for _ in range(5):
        t._critic_step(diagnose=False)
        for layer, bound in zip(layers, [0.01, 0.02, 0.03, 0.04]):
            assert layer.weight.abs().max() <= bound
            assert layer.bias.abs().max() <= bound
    # the large learning rate pushed weights onto the box: clipping really acted
    assert any((layer.weight.abs() == b).any() for layer, b in zip(layers, [0.01, 0.02, 0.03, 0.04]))


def test_clip_before_step_mode(tmp_path):
    cfg = tiny_config(**{"constraint.clip.when": "before", "optim.critic.lr": 0.05,
                         "constraint.clip.bound": 0.01})
    t = Trainer(cfg, tmp_path)
    t._critic_step(diagnose=False)
    w = t.critic[0].weight
    assert w.abs().max() > 0.01  # the last update is not clipped yet
    t.constraint.prepare()
    assert w.abs().max() <= 0.01


def test_warmup_schedule(tmp_path):
    cfg = tiny_config(**{"train.warmup_generator_steps": 3, "train.warmup_n_critic": 10,
                         "train.warmup_every": 7, "train.n_critic": 2})
    t = Trainer(cfg, tmp_path)
    assert [t.n_critic(g) for g in range(9)] == [10, 10, 10, 2, 2, 2, 2, 10, 2]


def test_stops_by_critic_steps(tmp_path):
    cfg = tiny_config(**{"train.generator_steps": "null", "train.critic_steps": 9})
    t = Trainer(cfg, tmp_path)
    t.run()
    assert t.critic_step == 9


def test_cli_train_writes_run_directory(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--config", "toy", "--out", str(out), "--set", "train.generator_steps=4",
               "--set", "train.n_critic=1", "--set", "train.warmup_generator_steps=0",
               "--set", "train.log_every=2", "--set", "model.toy_hidden=8",
               "--set", "constraint.name=clip"])
    assert rc == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["generator_step"] for r in records] == [2, 4]
    for key in ("generator_step", "critic_step", "wall_time", "loss_critic", "loss_generator",
                "w_estimate"):
        assert key in records[-1]
    assert records[-1]["loss_critic"] == pytest.approx(-records[-1]["w_estimate"])
    assert (out / "config.yaml").exists() and list((out / "samples").glob("*.png"))
    assert list((out / "tensorboard").iterdir())
    g = load_file(out / "generator.safetensors")
    assert any(v.ndim == 2 for v in g.values())


def test_cli_bad_config_value_exits_with_clear_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wganlab", "train", "--config", "toy",
                           "--out", str(tmp_path), "--set", "train.n_critic=-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "train.n_critic" in proc.stderr and "Traceback" not in proc.stderr
