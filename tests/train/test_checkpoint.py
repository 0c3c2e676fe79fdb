"""Checkpoint files: exact round trip, atomic layout, damage and misuse detected with clear
errors, the keep-last-K / best schedule."""
import json
from collections.abc import Mapping

import pytest
import torch
from safetensors.torch import load_file

from wganlab.train import Trainer
from wganlab.train.checkpoint import (FILES, MANIFEST, CheckpointError, config_diff,
                                      flatten_state, latest_checkpoint, list_checkpoints,
                                      load_checkpoint, resume, save_checkpoint, unflatten_state)

from conftest import tiny_config


def same(a, b, path="state") -> None:
    """Exact equality of nested states: tensors bit-identical with the same dtype, tuples stay
    tuples, int keys stay ints (a module's OrderedDict may come back as a dict)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, path
        assert a.shape == b.shape and torch.equal(a.cpu(), b), path
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), path
        for k in a:
            same(a[k], b[k], f"{path}/{k!r}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"


def timeless(state: dict) -> dict:
    """A trainer state without the clock readings (they move while a test looks)."""
    counters = {k: v for k, v in state["counters"].items() if not k.endswith("_time")}
    return {**state, "counters": counters}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished gp run (Adam: tuple betas, int-keyed optimizer state) with checkpoints at
    steps 4 and 6 (every 2, keep 2)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    t = Trainer(tiny_config(**{"constraint.name": "gp", "train.checkpoint_every": 2}), out)
    t.run()
    return out, t


def test_state_round_trip_is_exact(run_dir):
    _, t = run_dir
    state = t.state_dict()
    files, tree = flatten_state(state)
    back = unflatten_state(json.loads(json.dumps(tree)), files)
    same(state, back)
    assert isinstance(back["opt_critic"]["param_groups"][0]["betas"], tuple)
    assert set(back["opt_critic"]["state"]) == set(range(8))


def test_layout_and_standalone_weights(run_dir):
    out, t = run_dir
    assert [s for s, _ in list_checkpoints(out)] == [6, 4]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000004",
                                                                        "step_0000006"]
    path = out / "checkpoints" / "step_0000006"
    assert sorted(p.name for p in path.iterdir()) == sorted(FILES + (MANIFEST,))
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["generator_step"] == 6 and manifest["reason"] in ("periodic", "final")
    weights = load_file(path / "critic.safetensors")  # plain safetensors, usable alone
    same(dict(t.critic.state_dict()), weights)
    same(load_file(out / "critic.safetensors"), weights)
    ckpt = load_checkpoint(path)
    same(timeless(t.state_dict()), timeless(ckpt.state))
    assert ckpt.config == json.loads(json.dumps(t.config.to_dict()))


def test_loading_never_unpickles(run_dir, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("torch.load called")
    monkeypatch.setattr(torch, "load", refuse)
    import pickle
    monkeypatch.setattr(pickle, "loads", refuse)
    load_checkpoint(run_dir[0] / "checkpoints" / "step_0000006")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "no-manifest", "bad-manifest"])
@pytest.mark.parametrize("name", FILES)
def test_damaged_checkpoint_is_detected_and_skipped(run_dir, tmp_path, damage, name, caplog):
    import shutil
    src, _ = run_dir
    out = tmp_path / "run"
    shutil.copytree(src, out)
    path = out / "checkpoints" / "step_0000006"
    target = path / (MANIFEST if "manifest" in damage else name)
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = len(data) // 3
        target.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:])
    elif damage in ("delete", "no-manifest"):
        target.unlink()
    else:
        target.write_text("{not json")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert target.name in str(e.value)
    with caplog.at_level("WARNING", logger="wganlab"):
        assert latest_checkpoint(out).generator_step == 4
    assert "skipping invalid checkpoint" in caplog.text


def test_checkpoint_of_another_model_is_refused(run_dir, tmp_path):
    out, _ = run_dir
    other = Trainer(tiny_config(**{"constraint.name": "gp", "model.toy_hidden": 8}), tmp_path)
    wrong = r"generator\.safetensors holds the weights of another model.*wrong shape: " \
            r"0\.weight is \[16, 2\]"
    with pytest.raises(CheckpointError, match=wrong):
        resume(other, out, force=True)
    with pytest.raises(CheckpointError, match="model.toy_hidden: 16 -> 8"):
        resume(other, out)


def test_python_resume_follows_the_command_line_rules(run_dir, tmp_path):
    """``resume`` applies check_resume, the rules ``wganlab train --resume`` applies: an older
    checkpoint named explicitly may not be resumed in place (it would discard step 6)."""
    out, _ = run_dir
    older = out / "checkpoints" / "step_0000004"
    in_place = Trainer(tiny_config(**{"constraint.name": "gp", "train.checkpoint_every": 2}),
                       out)
    with pytest.raises(CheckpointError, match="not the newest valid checkpoint"):
        resume(in_place, older)
    assert [s for s, _ in list_checkpoints(out)] == [6, 4]  # nothing was touched
    branch = Trainer(tiny_config(**{"constraint.name": "gp", "train.checkpoint_every": 2}),
                     tmp_path / "branch")
    assert resume(branch, older).generator_step == 4 == branch.generator_step


def test_missing_and_foreign_inputs(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds no checkpoints"):
        latest_checkpoint(tmp_path)
    (tmp_path / "step_0000001").mkdir()
    (tmp_path / "step_0000001" / MANIFEST).write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="not a wganlab checkpoint"):
        load_checkpoint(tmp_path / "step_0000001")
    with pytest.raises(CheckpointError, match="cannot store a object"):
        flatten_state({"x": object()})


def test_atomic_replace_of_same_step(tmp_path):
    state = {"generator": {"w": torch.ones(2)}, "critic": {"w": torch.zeros(3)},
             "counters": {"generator_step": 3, "critic_step": 9}, "rng": {1: (1.5, None)}}
    cfg = tiny_config().to_dict()
    path = tmp_path / "checkpoints" / "step_0000003"
    save_checkpoint(state, cfg, path)
    state["generator"]["w"] = torch.full((2,), 7.0)
    save_checkpoint(state, cfg, path)
    ckpt = load_checkpoint(path)
    same(state["rng"], ckpt.state["rng"])
    assert torch.equal(ckpt.state["generator"]["w"], torch.full((2,), 7.0))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000003"]


def test_keep_last_k_and_best(tmp_path):
    cfg = tiny_config(**{"train.generator_steps": 8, "train.checkpoint_every": 1,
                         "train.keep_checkpoints": 2, "train.log_every": 1,
                         "train.best_metric": "loss_generator"})
    t = Trainer(cfg, tmp_path)
    t.run()
    records = {r["generator_step"]: r["loss_generator"] for r in t.history}
    best_step = min(records, key=records.get)
    best = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert best["step"] == best_step and best["metric"] == "loss_generator"
    kept = {s for s, _ in list_checkpoints(tmp_path)}
    assert kept == {8, 7} | {best_step}
    for s, p in list_checkpoints(tmp_path):
        load_checkpoint(p)


def test_config_diff_ignores_keys_an_old_checkpoint_lacks():
    new = tiny_config().to_dict()
    old = json.loads(json.dumps(new))
    del old["train"]["best_metric"]
    assert config_diff(old, new) == []
    old["constraint"]["clip"]["bound"] = 0.5
    assert config_diff(old, new) == [("constraint.clip.bound", 0.5,
                                      new["constraint"]["clip"]["bound"])]
