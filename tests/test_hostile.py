"""Hostile inputs and concurrent runs: every path wganlab writes or deletes lies inside the folder
it owns, a run folder serves one process and one run, non-finite weights are never final or
"good", and every bad config, data file or checkpoint ends in wganlab's own one-line error
(or a fallback to the older valid checkpoint), after bounded work."""
import gzip
import hashlib
import json
import math
import os
import signal
import struct
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from wganlab.cli import main
from wganlab.config import ConfigError, load_config
from wganlab.data import DataError, load_idx_folder, read_idx
from wganlab.train import Trainer, TrainingError
from wganlab.train.checkpoint import MANIFEST, latest_checkpoint, list_checkpoints

from conftest import tiny_config
from fastdisk import fast_path  # noqa: F401  (fixture)
from runhelpers import cli_args, exit_code, forked


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wganlab: error: "), err
    return err[0]


def short_run(out: Path, *sets: str) -> list[str]:
    args = cli_args(out, "clip")
    args[args.index("train.generator_steps=24")] = "train.generator_steps=4"
    args[args.index("train.checkpoint_every=1")] = "train.checkpoint_every=2"
    for s in sets:
        args += ["--set", s]
    return args


def rehash(ckpt: Path, name: str) -> None:
    """Make the manifest agree with an edited file: only the content check can catch it."""
    manifest = json.loads((ckpt / MANIFEST).read_text())
    data = (ckpt / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / MANIFEST).write_text(json.dumps(manifest))


# ----------------------------------------------------------------------------- paths

def test_compare_variant_names_cannot_leave_the_output_folder(tmp_path, capsys):
    victim = tmp_path / "cmp" / "victim-s0"  # where run "../../victim" of seed 0 would go
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    (victim / "config.yaml").write_text("mine")  # once enough to have it removed as a run
    cfg = tmp_path / "c.yaml"
    cfg.write_text('constraint:\n  variants: {"../../victim": {name: clip}}\n')
    rc = main(["compare", "--config", str(cfg), "--constraints", "../../victim", "--seeds", "0",
               "--generator-steps", "2", "--out", str(tmp_path / "cmp" / "x"),
               "--no-final-eval", "--set", "model.toy_hidden=8", "--set", "data.name=8gaussians",
               "--set", "model.name=toy"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a safe name" in err
    assert sorted(p.name for p in victim.iterdir()) == ["config.yaml", "precious.txt"]
    assert not (tmp_path / "cmp" / "x").exists() and not any(tmp_path.glob("**/*.log"))
    with pytest.raises(ConfigError, match="constraint.variants key 'a/b'"):
        load_config("toy", ["constraint.variants={a/b: {name: clip}}"])


def test_deletes_refuse_a_symlink_out_of_the_run(fast_path, tmp_path, capsys):
    outside = tmp_path / "outside"
    (outside / "step_0000009").mkdir(parents=True)
    (outside / "step_0000009" / "precious.txt").write_text("keep me")
    run = fast_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_0000009").symlink_to(outside / "step_0000009")
    t = Trainer(tiny_config(), run)
    with pytest.raises(Exception, match="outside"):
        t.run()  # a fresh run clears old checkpoints: not one that leads elsewhere
    assert (outside / "step_0000009" / "precious.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- locks

def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists(), f"{path} never appeared"


@pytest.mark.parametrize("second", ["fresh", "resume"])
def test_second_process_on_one_folder_fails_at_once_naming_the_holder(fast_path, capsys, second):
    run = fast_path / "run"
    assert main(short_run(run)) == 0
    holder = ["train", "--resume", str(run), "--set", "train.generator_steps=100000"]

    def child():
        sys.argv = ["wganlab", *holder]  # what the lock's holder file records
        return main(holder)
    pid = forked(child)
    try:
        _wait_for(run / ".wganlab.lock.json")
        before = (run / "metrics.jsonl").read_bytes()
        capsys.readouterr()
        t0 = time.monotonic()
        argv = short_run(run) if second == "fresh" else ["train", "--resume", str(run)]
        assert main(argv) == 2
        assert time.monotonic() - t0 < 10
        err = one_line_error(capsys)
        assert f"is in use by process {pid} on " in err and "`wganlab train --resume" in err
        assert (run / "metrics.jsonl").read_bytes()[:len(before)] == before
    finally:
        os.kill(pid, signal.SIGKILL)
        exit_code(pid)
    # the kernel released the dead holder's lock: the run resumes
    assert main(["train", "--resume", str(run), "--set", "train.generator_steps=6"]) == 0


# ----------------------------------------------------------------------------- ownership

def test_fresh_run_into_a_folder_holding_other_files_is_refused(fast_path, capsys):
    out = fast_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "metrics.jsonl").write_text("not yours\n")
    assert main(short_run(out)) == 2
    assert "is not empty (it holds metrics.jsonl, notes.txt)" in one_line_error(capsys)
    assert (out / "metrics.jsonl").read_text() == "not yours\n"
    assert main(short_run(out) + ["--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # other files are left alone
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["generator_step"] == 2


def test_resume_into_another_runs_folder_is_refused(fast_path, capsys):
    a, b = fast_path / "a", fast_path / "b"
    assert main(short_run(a)) == 0
    assert main(short_run(b, "seed=5")) == 0
    b_metrics = (b / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    step2 = a / "checkpoints" / "step_0000002"
    assert main(["train", "--resume", str(step2), "--out", str(b)]) == 2
    assert f"is not a branch of {a}" in one_line_error(capsys)
    assert (b / "metrics.jsonl").read_bytes() == b_metrics
    assert [s for s, _ in list_checkpoints(b)] == [4, 2]
    # an empty folder, or an earlier branch of the same run, is fine
    c = fast_path / "c"
    assert main(["train", "--resume", str(step2), "--out", str(c)]) == 0
    assert main(["train", "--resume", str(step2), "--out", str(c)]) == 0
    assert json.loads((c / "run.json").read_text())["parent"]["run"] == str(a.resolve())
    steps = [json.loads(line)["generator_step"] for line in open(c / "metrics.jsonl")]
    assert steps == [2, 4]


# ----------------------------------------------------------------------------- non-finite

def test_run_stopping_inside_a_generator_step_never_saves_nan_weights(tmp_path):
    # logged at generator step 4, poisoned right after, stopped by the critic-step budget
    # inside generator step 5: no log or checkpoint check ran since the poison
    cfg = tiny_config(**{"train.generator_steps": "null", "train.critic_steps": 9,
                         "train.log_every": 2})
    t = Trainer(cfg, tmp_path)

    def poison(trainer, record):
        if trainer.generator_step == 4:
            with torch.no_grad():
                trainer.critic[0].weight[0, 0] = math.nan
    t.callbacks.append(poison)
    with pytest.raises(TrainingError, match="no final weights written"):
        t.run()
    assert not (tmp_path / "critic.safetensors").exists()


def test_checkpoint_with_nan_weights_is_not_the_last_good_one(fast_path, caplog):
    Trainer(tiny_config(**{"train.generator_steps": 4, "train.checkpoint_every": 2}),
            fast_path).run()
    newest = fast_path / "checkpoints" / "step_0000004"
    weights = load_file(newest / "critic.safetensors")
    next(iter(weights.values()))[0] = math.nan
    save_file(weights, newest / "critic.safetensors")
    rehash(newest, "critic.safetensors")
    assert latest_checkpoint(fast_path).generator_step == 2
    assert "non-finite values" in caplog.text


# ----------------------------------------------------------------------------- configs

BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.timeout(30)
def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 700
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="more than 10000 values"):
        load_config(path)
    assert time.monotonic() - t0 < 5
    path.write_text("seed: 1\nmodel: &m {z_dim: 8}\nconstraint: {variants: {v: {name: clip}}}\n"
                    "x: *m\n")  # a harmless alias still works (then the unknown key is named)
    with pytest.raises(ConfigError, match="unknown config key 'x'"):
        load_config(path)


def test_duplicate_keys_are_refused_naming_the_key(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  generator_steps: 5\n  n_critic: 2\n  generator_steps: 7\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: duplicate key 'generator_steps' "
                                          r"\(lines 2 and 4\)"):
        load_config(path)


@pytest.mark.parametrize("key, value, limit", [
    ("data.batch_size", "1000000000", "65536"), ("model.z_dim", "1000000000", "65536"),
    ("data.image_size", "100000", "256"), ("seed", "1" * 400, "4294967295"),
    ("train.generator_steps", "9" * 400, str(2**63 - 1)),
    ("constraint.solvers.output.subsample", "1000000000000", "65536"),
])
def test_huge_sizes_are_refused_before_any_allocation(key, value, limit):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}=.* is too large "
                                          rf"\(at most {limit}\)$"):
        load_config("mnist_mlp", [f"{key}={value}"])
    with pytest.raises(ConfigError, match="constraint.gp.weight must be a finite number"):
        load_config("toy", ["constraint.gp.weight=" + "7" * 400])


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["train", "--config", "toy", "--set", "data.batch_size=1000000000",
                 "--out", str(tmp_path / "r")]) == 2
    assert "data.batch_size=1000000000 is too large (at most 65536)" in one_line_error(capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {generator_steps: [1,\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bad.yaml is not valid YAML" in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_default_run_keeps_a_periodic_checkpoint():
    for preset in ("mnist_mlp", "mnist_dcgan", "toy", "wgan_original"):
        assert load_config(preset).train.checkpoint_seconds == 600


# ----------------------------------------------------------------------------- data

def _gzip_bomb(path: Path, dims: tuple, extra: int) -> None:
    """A gzip file whose header declares ``dims`` but which inflates to ``extra`` bytes more."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(idx_bytes(np.zeros(dims, np.uint8)))
        zeros = bytes(1 << 20)
        for _ in range(extra >> 20):
            f.write(zeros)


def test_gzip_bomb_and_huge_files_are_bounded_before_reading(tmp_path):
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    _gzip_bomb(bomb, (2, 28, 28), 200 << 20)
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="bytes after the data"):
            read_idx(bomb)
        huge = tmp_path / "huge-idx3-ubyte"
        with open(huge, "wb") as f:
            f.write(idx_bytes(np.zeros((2, 28, 28), np.uint8)))
            f.truncate(100 << 20)  # sparse: 100 MB of trailing zeros
        with pytest.raises(DataError, match="bytes after the data"):
            read_idx(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak} bytes held while refusing"
    big = tmp_path / "big-idx3-ubyte"
    big.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 70000, 1000, 1000))
    with pytest.raises(DataError, match=r"declares \[70000, 1000, 1000\] .* more than"):
        read_idx(big)


@pytest.mark.parametrize("labels, code", [([1, 250], 0x08), ([-1, 3], 0x09)])
def test_labels_out_of_range_are_refused(tmp_path, labels, code):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(np.array(labels, np.uint8 if code == 0x08 else np.int8), code))
    with pytest.raises(DataError, match=rf"labels-idx1-ubyte holds the label "
                                        rf"{[v for v in labels if not 0 <= v <= 9][0]}; "
                                        r"labels must lie in 0..9"):
        load_idx_folder(tmp_path)


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("name", [MANIFEST, "state.json"])
def test_deeply_nested_json_falls_back_to_the_older_checkpoint(fast_path, caplog, name):
    Trainer(tiny_config(**{"train.generator_steps": 4, "train.checkpoint_every": 2}),
            fast_path).run()
    newest = fast_path / "checkpoints" / "step_0000004"
    (newest / name).write_text("[" * 200_000 + "]" * 200_000)
    if name != MANIFEST:
        rehash(newest, name)
    assert latest_checkpoint(fast_path).generator_step == 2
    assert "nested too deeply" in caplog.text


# ----------------------------------------------------------------------------- data on resume

def _idx_folder(folder: Path, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    (folder / "train-images-idx3-ubyte").write_bytes(
        idx_bytes(rng.randint(0, 256, (64, 28, 28)).astype(np.uint8)))
    (folder / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(rng.randint(0, 10, 64).astype(np.uint8)))


def test_resume_on_other_data_is_refused(fast_path, capsys, monkeypatch):
    monkeypatch.chdir(fast_path)
    _idx_folder(fast_path / "data", 0)
    sets = ["data.name=idx", "data.dir=data", "data.batch_size=16", "train.generator_steps=2",
            "train.n_critic=1", "train.warmup_generator_steps=0", "train.log_every=1",
            "train.checkpoint_every=1", "train.tensorboard=false", "train.progress=false",
            "train.sample_every=1000", "train.threads=1"]
    argv = ["train", "--config", "mnist_mlp", "--out", "run"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    capsys.readouterr()
    stored = load_config(fast_path / "run" / "config.yaml").data.dir
    assert stored == str(fast_path / "data")  # absolute: the same files from any folder
    _idx_folder(fast_path / "data", 1)  # same names and sizes, other digits
    resume = ["train", "--resume", "run", "--set", "train.generator_steps=3"]
    assert main(resume) == 2
    err = one_line_error(capsys)
    assert "trained on other data files" in err and "train-images-idx3-ubyte: changed" in err
    assert main(resume + ["--force-resume"]) == 0


# ----------------------------------------------------------------------------- plot, tensorboard

def test_plot_skips_a_non_object_line_and_refuses_an_empty_log(fast_path, capsys, caplog):
    run = fast_path / "run"
    assert main(short_run(run)) == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write("[1, 2]\n")
    assert main(["plot", "--run", str(run)]) == 0
    assert "metrics.jsonl line 3 is not a JSON object" in caplog.text
    (run / "metrics.jsonl").write_text("")
    capsys.readouterr()
    assert main(["plot", "--run", str(run)]) == 2
    assert "nothing to plot" in one_line_error(capsys)


def test_tensorboard_events_are_cut_back_on_resume(fast_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = fast_path / "run"
    assert main(short_run(run, "train.tensorboard=true", "train.generator_steps=6")) == 0
    (run / "checkpoints" / "step_0000006" / MANIFEST).unlink()  # resumes from step 4
    assert main(["train", "--resume", str(run)]) == 0
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("w_estimate")]
    assert steps == [2, 4, 6]
