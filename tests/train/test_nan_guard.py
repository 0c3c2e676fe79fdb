"""The finite guard: a planted NaN stops the run naming the step and the network, exits non-zero
from the CLI, and never touches the last good checkpoint."""
import hashlib
import math

import pytest
import torch

from wganlab.cli import main
from wganlab.train import Trainer, TrainingError
from wganlab.train.checkpoint import list_checkpoints, load_checkpoint

from conftest import tiny_config


def plant(step: int, net: str, where: str = "weight"):
    """A callback that poisons one tensor of ``net`` after generator step ``step``."""
    def cb(trainer, record):
        if trainer.generator_step == step:
            with torch.no_grad():
                if where == "weight":
                    getattr(trainer, net)[0].weight[0, 0] = math.nan
                else:  # the optimizer's second moment of the first parameter
                    opt = trainer.opt_critic if net == "critic" else trainer.opt_generator
                    next(iter(opt.state.values()))["exp_avg_sq"].fill_(math.inf)
    return cb


def digests(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_nan_in_critic_stops_at_the_next_log_step(tmp_path):
    t = Trainer(tiny_config(**{"train.generator_steps": 20, "train.checkpoint_every": 2,
                               "train.log_every": 2}), tmp_path)
    t.callbacks.append(plant(5, "critic"))
    with pytest.raises(TrainingError) as e:
        t.run()
    msg = str(e.value)
    assert "generator step 6" in msg and "the critic (weight 0.weight" in msg
    assert "step_0000004" in msg  # the last good checkpoint is named
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 2]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "step_0000004")
    assert all(torch.isfinite(v).all() for v in ckpt.state["critic"].values())
    assert not (tmp_path / "critic.safetensors").exists()  # no final weights either


@pytest.mark.parametrize("net", ["generator", "critic"])
def test_no_checkpoint_is_written_with_a_nan(tmp_path, net):
    t = Trainer(tiny_config(**{"train.generator_steps": 20, "train.checkpoint_every": 1,
                               "train.log_every": 100}), tmp_path)
    t.callbacks.append(plant(5, net))
    with pytest.raises(TrainingError, match=f"generator step 5 .*in the {net} .*no checkpoint"):
        t.run()
    assert list_checkpoints(tmp_path)[0][0] == 4


def test_non_finite_optimizer_state_is_never_checkpointed(tmp_path):
    t = Trainer(tiny_config(**{"train.generator_steps": 20, "train.checkpoint_every": 1,
                               "constraint.name": "gp"}), tmp_path)
    t.callbacks.append(plant(3, "critic", where="optimizer"))
    with pytest.raises(TrainingError, match="opt_critic.* of the critic at generator step 3"):
        t.run()
    assert list_checkpoints(tmp_path)[0][0] == 2


def test_cli_divergence_exits_non_zero_and_keeps_the_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--config", "toy", "--out", str(out), "--set", "model.toy_hidden=16",
            "--set", "train.n_critic=2", "--set", "train.warmup_generator_steps=0",
            "--set", "train.log_every=2", "--set", "train.tensorboard=false",
            "--set", "train.checkpoint_every=2", "--set", "constraint.name=none",
            "--set", "data.batch_size=32", "--set", "train.generator_steps=4"]
    assert main(base) == 0
    good = digests(out / "checkpoints" / "step_0000004")
    capsys.readouterr()
    # an absurd learning rate from the good checkpoint on: diverges within one log interval
    rc = main(["train", "--resume", str(out), "--force-resume", "--set", "optim.critic.lr=1e30",
               "--set", "train.generator_steps=40"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "wganlab: error: non-finite values at generator step 6" in err
    assert "in the critic" in err and "Traceback" not in err
    assert [s for s, _ in list_checkpoints(out)] == [4, 2]
    assert digests(out / "checkpoints" / "step_0000004") == good
    load_checkpoint(out / "checkpoints" / "step_0000004")
