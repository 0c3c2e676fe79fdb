"""`wganlab compare` fanned out: a local pool gives the same runs as one at a time, submitit's
local executor runs the same commands, an interrupted sweep resumes, the progress display."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wganlab.cli import main
from wganlab.report.compare import _has_checkpoint, run_complete
from wganlab.report.progress import Progress

SETS = ["train.n_critic=2", "train.warmup_generator_steps=0", "train.log_every=2",
        "train.sample_every=1000", "train.tensorboard=false", "train.progress=false",
        "model.toy_hidden=16", "data.batch_size=32"]
#: two runs for the equivalence tests, three for the interruption (one ends, two in flight)
PAIR, TRIPLE = ("clip,none", "0"), ("clip", "0,1,2")
#: results.json keys that measure time or say how the sweep ran, not what it found
TIMING = {"wall_time", "cpu_time", "ms_per_critic_step_wall", "ms_per_critic_step_cpu",
          "load_before", "load_after", "duration_s", "started", "written", "jobs", "launcher"}


def argv(out: Path, *extra: str, runs=PAIR, steps: int = 6) -> list[str]:
    args = ["compare", "--config", "toy", "--constraints", runs[0], "--seeds", runs[1],
            "--generator-steps", str(steps), "--out", str(out), "--no-final-eval"]
    for s in SETS:
        args += ["--set", s]
    return args + list(extra)


def weights(run: Path) -> dict:
    return {f"{n}.{k}": v for n in ("generator", "critic")
            for k, v in load_file(run / f"{n}.safetensors").items()}


def untimed(value):
    """results.json without what differs between two sweeps of the same runs."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def same_results(a: Path, b: Path) -> None:
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    for run in ra["runs"] + rb["runs"]:
        run["command"] = [c.replace(str(a), "OUT").replace(str(b), "OUT") for c in run["command"]]
        run["series"] = {k: v for k, v in run["series"].items() if k not in TIMING}
    assert untimed(ra["runs"]) == untimed(rb["runs"])
    assert untimed(ra["summary"]) == untimed(rb["summary"])
    for name in (r["name"] for r in ra["runs"]):
        wa, wb = weights(a / "runs" / name), weights(b / "runs" / name)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}: {k} differs"


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "cmp"
    assert main(argv(out, "--jobs", "1")) == 0
    return out


def test_jobs_2_gives_the_same_runs_as_jobs_1(serial, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(argv(out, "--jobs", "2")) == 0
    err = capsys.readouterr().err
    assert "sweep: 2/2 done, 0 running, 0 failed, 0 waiting" in err
    results = json.loads((out / "results.json").read_text())
    assert results["jobs"] == 2 and results["launcher"] == "local"
    assert "runs up to 2 at a time" in (out / "report.md").read_text()
    same_results(serial, out)


def test_submitit_local_executor_runs_the_same_commands(serial, tmp_path, capsys):
    pytest.importorskip("submitit")
    out = tmp_path / "cmp"
    assert main(argv(out, "--launcher", "submitit", "--cluster", "local", "--jobs", "2",
                     "--timeout-min", "10", "--slurm", "qos=low")) == 0
    assert "(submitit)" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["launcher"] == "submitit"
    assert list((out / "submitit").glob("*_submitted.pkl")), "no submitit job was written"
    same_results(serial, out)


def test_interrupted_sweep_resumes(tmp_path):
    """SIGTERM to a `--jobs 2` sweep once its first run is done: the runs in flight checkpoint
    and stop; a second call keeps the finished runs and completes the others."""
    out = tmp_path / "cmp"
    steps = 40
    extra = ["--jobs", "2", "--set", "train.checkpoint_every=2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "wganlab",
                             *argv(out, *extra, runs=TRIPLE, steps=steps)],
                            stderr=subprocess.PIPE, text=True, env=env)
    runs = ["clip-s0", "clip-s1", "clip-s2"]
    deadline = time.monotonic() + 300
    while not any(run_complete(out / "runs" / n) for n in runs):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    assert "compare interrupted" in proc.stderr.read()
    finished = [n for n in runs if run_complete(out / "runs" / n)]
    assert 1 <= len(finished) < len(runs), "the sweep was not interrupted mid-way"
    checkpointed = sorted(n for n in runs if n not in finished
                          and _has_checkpoint(out / "runs" / n))
    stamps = {n: (out / "runs" / n / "generator.safetensors").stat().st_mtime_ns
              for n in finished}
    assert main(argv(out, *extra, runs=TRIPLE, steps=steps)) == 0
    results = json.loads((out / "results.json").read_text())
    assert all(r["ok"] and r["final"]["generator_step"] == steps for r in results["runs"])
    for n in finished:  # kept, not retrained
        assert (out / "runs" / n / "generator.safetensors").stat().st_mtime_ns == stamps[n]
    resumed = sorted(r["name"] for r in results["runs"] if r.get("resumed"))
    assert resumed == checkpointed, "an interrupted run was not resumed from its checkpoint"
    alive = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout
    assert not alive.strip(), "a run of the interrupted sweep outlived it"


def test_progress_lines_and_eta():
    lines = []
    p = Progress(total=3, slots=2, log=lines.append, stream=io.StringIO(), tty=False)
    p.started("a")
    p.started("b")
    assert lines[-1] == "sweep: 0/3 done, 2 running, 0 failed, 1 waiting"
    p.finished("a", 0, 10.0)
    p.started("c")
    p.finished("b", 1, 3.0)
    assert lines[-1].startswith("sweep: 1/3 done, 1 running, 1 failed, 0 waiting, ETA ")
    assert 0 <= p.eta() <= 10.0
    tty = io.StringIO()
    p = Progress(total=1, slots=1, log=lines.append, stream=tty, tty=True)
    p.started("a")
    p.say("hello")
    p.close()
    assert "\r\033[K" in tty.getvalue() and lines[-1] == "hello"
