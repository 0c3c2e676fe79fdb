"""Runs that survive: a run killed with SIGKILL and resumed ends bit-identical to an
uninterrupted one; repeated kills during checkpoint writes never leave a checkpoint that loads
wrong; SIGINT/SIGTERM checkpoint and exit 130/143; resuming with another config is refused.

The killed runs are forked children of the test process running the CLI's ``main``: a child
costs milliseconds instead of an interpreter start (seconds), and runs the very code the test
compares against. Determinism needed on CPU: the same thread count (``train.threads=1``,
OMP_NUM_THREADS=1); the trainer's seeding and the checkpointed RNG states do the rest."""
import json
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wganlab.cli import main
from wganlab.constraints import available
from wganlab.train import Trainer
from wganlab.train.checkpoint import (CheckpointError, list_checkpoints, load_checkpoint,
                                      resume)
from wganlab.metrics.records import read_metrics

from conftest import tiny_config
from fastdisk import fast_module_path, fast_path  # noqa: F401  (fixtures)
from runhelpers import CLI_SETS, STEPS, cli_args, exit_code, forked  # noqa: F401

CONSTRAINTS = ["clip", "invclip", "gp", "bjorck"]
def newest_step(run: Path) -> int:
    steps = [s for s, _ in list_checkpoints(run)]
    return steps[0] if steps else -1


def weights(run: Path) -> dict:
    return {f"{n}.{k}": v for n in ("generator", "critic")
            for k, v in load_file(run / f"{n}.safetensors").items()}


def log_records(run: Path) -> list[dict]:
    """metrics.jsonl without clock readings (they differ between any two runs)."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["generator_step"] % CLI_SETS["train.log_every"] == 0:
            out.append({k: v for k, v in rec.items() if not k.endswith("_time")})
    return out


@pytest.fixture(scope="module")
def killed_runs(fast_module_path):
    """`wganlab train` per constraint (the CLI's main in a forked child: no interpreter
    start-up, and the same code as the test), SIGKILLed once its checkpoint of a random step
    has appeared."""
    import torch._dynamo  # noqa: F401  (optimizers load it on their first step: load it once)
    root = fast_module_path
    rng = random.Random(7)
    kills = {}
    for c in CONSTRAINTS:
        if c not in available():
            continue
        at = rng.randint(3, STEPS - 6)
        pid = forked(lambda: main(cli_args(root / c, c)), root / f"{c}.stderr")
        deadline = time.monotonic() + 60
        while newest_step(root / c) < at and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)
        kills[c] = (exit_code(pid), at, newest_step(root / c), (root / f"{c}.stderr").read_text())
    return root, kills


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_resume_after_sigkill_is_bit_identical(killed_runs, fast_path, constraint, capsys):
    if constraint not in available():
        pytest.skip(f"constraint {constraint} is not registered yet")
    root, kills = killed_runs
    rc, at, step, err = kills[constraint]
    assert rc == -signal.SIGKILL, f"the run was not killed mid-way (rc {rc}): {err}"
    assert at <= step < STEPS
    run = root / constraint
    assert main(["train", "--resume", str(run)]) == 0
    assert "resuming" in capsys.readouterr().err
    ref = fast_path / "ref"
    assert main(cli_args(ref, constraint)) == 0
    a, b = weights(ref), weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert log_records(run) == log_records(ref)  # history cut back and continued, no duplicates


# ----------------------------------------------------------------------------- kill storm

STORM = {"train.generator_steps": 60, "train.checkpoint_every": 1, "train.keep_checkpoints": 2,
         "train.log_every": 3}


def storm_child(run: Path):
    def go() -> int:
        t = Trainer(tiny_config(**STORM), run)
        try:
            resume(t, run)
        except CheckpointError:  # killed before any checkpoint was complete: start afresh
            pass
        t.run()
        return 0
    return go


def check_on_disk(run: Path, reference: dict) -> tuple[int, int]:
    """Every checkpoint directory either loads and equals the uninterrupted run's state at
    its step, or is rejected as invalid. Returns (valid, invalid) counts."""
    valid = invalid = 0
    for step, path in list_checkpoints(run):
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError:
            invalid += 1
            continue
        valid += 1
        ref = reference[step]
        for key in ("generator", "critic", "opt_generator", "opt_critic", "stream", "rng"):
            assert _equal(ckpt.state[key], ref[key]), f"{path}: {key} differs"
        assert ckpt.critic_step == ref["counters"]["critic_step"]
    return valid, invalid


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def writing(root: Path, timeout: float) -> None:
    """Wait until a checkpoint's temporary folder exists under ``root``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if any(p.name.startswith(".tmp-") for p in root.iterdir()):
                return
        except OSError:
            pass
        time.sleep(0.0002)


def test_repeated_kills_never_leave_a_wrong_checkpoint(fast_path):
    import copy
    reference: dict[int, dict] = {}
    ref = Trainer(tiny_config(**STORM), fast_path / "ref")
    ref.callbacks.append(lambda t, r: reference.__setitem__(t.generator_step,
                                                            copy.deepcopy(t.state_dict())))
    ref.run()
    run = fast_path / "run"
    rng = random.Random(11)
    kills = valid = invalid = interrupted = 0
    # 24 kills, more (up to 80) while fewer than two landed in a write: on a loaded machine
    # the child may rarely be inside one when the kill arrives
    while kills < 24 or (interrupted < 2 and kills < 80):
        pid = forked(storm_child(run), fast_path / "stderr.txt")
        if kills % 2:  # at a random time
            time.sleep(rng.uniform(0.01, 0.15))
        else:  # as soon as a checkpoint is being written
            writing(run / "checkpoints", timeout=1.0)
            time.sleep(rng.uniform(0, 0.002))
        os.kill(pid, signal.SIGKILL)
        assert exit_code(pid) in (-signal.SIGKILL, 0), (fast_path / "stderr.txt").read_text()
        kills += 1
        root = run / "checkpoints"
        interrupted += root.is_dir() and any(p.name.startswith(".tmp-") for p in root.iterdir())
        v, i = check_on_disk(run, reference)
        valid, invalid = valid + v, invalid + i
    pid = forked(storm_child(run), fast_path / "stderr.txt")
    assert exit_code(pid) == 0, (fast_path / "stderr.txt").read_text()
    check_on_disk(run, reference)
    a, b = weights(fast_path / "ref"), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    print(f"{kills} kills, {interrupted} during a write; checkpoints seen: {valid} valid, "
          f"{invalid} invalid (skipped)")
    assert interrupted >= 2  # the kills did land inside checkpoint writes


# ----------------------------------------------------------------------------- signals

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_checkpoint_and_exits(fast_path, sig):
    out, err = fast_path / "run", fast_path / "stderr.txt"
    args = cli_args(out, "clip")
    args[args.index(f"train.generator_steps={STEPS}")] = "train.generator_steps=100000"
    args[args.index("train.checkpoint_every=1")] = "train.checkpoint_every=0"
    pid = forked(lambda: main(args), err)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it trains (a record is logged)
        m = out / "metrics.jsonl"
        if m.exists() and m.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    os.kill(pid, sig)
    assert exit_code(pid) == 128 + sig
    text = err.read_text()
    assert f"stopped by {signal.Signals(sig).name} at generator step" in text
    assert f"--resume {out}" in text and "Traceback" not in text
    (step, path), = list_checkpoints(out)
    ckpt = load_checkpoint(path)
    assert ckpt.manifest["reason"] == "signal" and ckpt.generator_step == step > 0
    assert main(["train", "--resume", str(out), "--set", f"train.generator_steps={step + 2}"]) == 0
    assert newest_step(out) == step + 2


# ----------------------------------------------------------------------------- config checks

def test_resume_with_another_config_is_refused_listing_keys(fast_path, capsys):
    out = fast_path / "run"
    args = cli_args(out, "clip")
    args[args.index(f"train.generator_steps={STEPS}")] = "train.generator_steps=4"
    assert main(args) == 0
    capsys.readouterr()
    rc = main(["train", "--resume", str(out), "--set", "constraint.clip.bound=0.5", "--set", "seed=3"])
    err = capsys.readouterr().err
    assert rc == 2 and "wganlab: error:" in err
    assert re.search(r"constraint\.clip\.bound: [0-9.e-]+ -> 0\.5", err) and "seed: 0 -> 3" in err
    assert "--force-resume" in err
    # extending the run is allowed; a fresh run into the same folder is refused
    assert main(["train", "--resume", str(out), "--set", "train.generator_steps=6"]) == 0
    assert newest_step(out) == 6
    assert main(args) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--force-resume", "--set", "seed=3",
                 "--set", "train.generator_steps=8"]) == 0
    assert newest_step(out) == 8
    steps = [r["generator_step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == sorted(steps)


def test_resume_of_nothing_is_a_clear_error(tmp_path, capsys, caplog):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "checkpoints" / "step_0000003").mkdir(parents=True)
    assert main(["train", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no valid checkpoint (1 invalid ones skipped)" in err
    assert "step_0000003/MANIFEST.json is missing" in caplog.text  # the warning says why


def test_branch_from_an_older_checkpoint(fast_path, capsys):
    out = fast_path / "run"
    args = cli_args(out, "clip")
    args[args.index(f"train.generator_steps={STEPS}")] = "train.generator_steps=6"
    assert main(args) == 0
    older = out / "checkpoints" / "step_0000004"
    assert main(["train", "--resume", str(older)]) == 2  # in place it would discard step 6
    assert "--out NEW_DIR" in capsys.readouterr().err
    branch = fast_path / "branch"
    assert main(["train", "--resume", str(older), "--out", str(branch)]) == 0
    a, b = weights(out), weights(branch)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same config: the same steps 5 and 6
    assert newest_step(out) == 6 and newest_step(branch) == 6
    steps = [r["generator_step"] for r in read_metrics(branch / "metrics.jsonl")]
    assert steps == sorted(set(steps))


def test_resume_keeps_the_evaluation_schedule(fast_path, capsys):
    """The last evaluation's step is checkpointed: resuming a finished run (as a comparison
    does) evaluates nothing twice, and an extended run evaluates on schedule."""
    out = fast_path / "run"
    args = cli_args(out, "clip")
    args[args.index(f"train.generator_steps={STEPS}")] = "train.generator_steps=4"
    args += ["--set", "train.eval_every=2", "--set", "train.eval_samples=200"]
    assert main(args) == 0
    assert main(["train", "--resume", str(out)]) == 0          # budget already reached
    assert main(["train", "--resume", str(out), "--set", "train.generator_steps=6"]) == 0
    capsys.readouterr()
    evals = [r["generator_step"] for r in read_metrics(out / "metrics.jsonl")
             if any(k.startswith("eval/") for k in r)]
    assert evals == [2, 4, 6]


def test_resume_restores_the_bounded_drift(fast_path, capsys):
    """With ``max_drift`` the accumulated rescaling steers training: a run stopped and resumed
    must continue with the same accumulated values (checkpointed), ending bit-identical."""
    sets = ["--set", "constraint.invclip.max_drift=0.002", "--set", "constraint.invclip.solver=exact"]
    whole, split = fast_path / "whole", fast_path / "split"

    def args(out, steps):
        a = cli_args(out, "invclip") + sets
        a[a.index(f"train.generator_steps={STEPS}")] = f"train.generator_steps={steps}"
        return a
    assert main(args(whole, 8)) == 0
    assert main(args(split, 4)) == 0
    assert main(["train", "--resume", str(split), "--set", "train.generator_steps=8"]) == 0
    capsys.readouterr()
    a, b = weights(whole), weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ck = load_checkpoint(list_checkpoints(split)[0][1])
    drift = ck.state["constraint"]["drift"]
    # reached, and kept to float32 rounding of the applied scales
    assert max(float(t.abs().max()) for t in drift) == pytest.approx(0.002, rel=1e-4)
