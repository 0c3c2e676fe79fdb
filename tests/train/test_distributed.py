"""Multi-process training (wganlab.train.distributed): a 2-process run with per-rank batch B/2
trains the same weights as a 1-process run with batch B, for every kind of constraint, and the
ranks stay identical replicas.

The 2-process runs are real processes talking over gloo on 127.0.0.1 (this file, run as a
script, is the worker), started with the environment torchrun would set (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: conftest, when this file runs as a worker
from conftest import tiny_config  # noqa: E402

#: name -> config overrides. The equality cases train with plain SGD: RMSProp and Adam divide
#: by the gradient's running RMS, so on a parameter whose gradient is ~0 (float noise, e.g. a
#: unit that is almost never active) they turn a different summation order into a step of ~lr,
#: which hides nothing about the distributed plumbing but breaks any float tolerance.
SGD = {"optim.critic.name": "sgd", "optim.critic.lr": 0.05,
       "optim.generator.name": "sgd", "optim.generator.lr": 0.05}

def _registered_cases() -> dict[str, dict]:
    """Every registered constraint, and invclip with every registered solver (the contract:
    a plugin is tested the day it is registered). ``WGANLAB_TEST_CASES`` (comma-separated)
    keeps only those cases (the single-file plugin test)."""
    from wganlab.plugins import CONSTRAINTS, SOLVERS
    cases = {p.name: {"constraint.name": p.name, **SGD} for p in CONSTRAINTS}
    cases.update({f"invclip-{s.name}": {"constraint.name": "invclip",
                                        "constraint.invclip.solver": s.name, **SGD}
                  for s in SOLVERS})
    cases.update({
        "clip+gp": {"constraint.name": "clip+gp", **SGD},
        # the literature's optimizers (RMSProp / Adam): replicas must still be identical
        "clip-rmsprop": {"constraint.name": "clip"},
        "gp-adam": {"constraint.name": "gp"},
    })
    only = [c for c in os.environ.get("WGANLAB_TEST_CASES", "").split(",") if c]
    return {k: v for k, v in cases.items() if k in only} if only else cases


CASES = _registered_cases()


def _exact(case: str) -> bool:
    """The 2-process weights must equal the 1-process ones, unless a part of the constraint
    keeps per-process statistics (``rank_local``: replicas, not equal to one process) or the
    solver picks among candidates (``discrete``: a float-level difference can flip a pick)."""
    from wganlab.plugins import CONSTRAINTS, SOLVERS
    parts = CASES[case]["constraint.name"].split("+")
    solver = CASES[case].get("constraint.invclip.solver")
    return ("optim.critic.name" in CASES[case]
            and not any(CONSTRAINTS.get(p).has("rank_local") for p in parts)
            and not (solver and SOLVERS.get(solver).has("discrete")))


EXACT = [c for c in CASES if _exact(c)]
STEPS = {"train.generator_steps": 4, "train.n_critic": 3}


def _config(case: str):
    return tiny_config(**CASES[case], **STEPS)


def _weights(trainer) -> dict[str, torch.Tensor]:
    out = {f"critic.{k}": v.detach().clone() for k, v in trainer.critic.state_dict().items()}
    out.update({f"generator.{k}": v.detach().clone()
                for k, v in trainer.generator.state_dict().items()})
    return out


def _train(case: str, run_dir: Path, rank: int = 0, world: int = 1):
    from wganlab.train import Trainer
    trainer = Trainer(_config(case), run_dir, rank=rank, world=world)
    record = trainer.run()
    return trainer, record


CLI_ARGS = ["train", "--config", "toy", "--set", "train.generator_steps=2",
            "--set", "train.n_critic=2", "--set", "train.warmup_generator_steps=0",
            "--set", "model.toy_hidden=16", "--set", "data.batch_size=32",
            "--set", "train.tensorboard=false", "--set", "train.progress=false",
            "--set", "train.sample_every=1000", "--set", "train.threads=1"]


def _worker(out: Path) -> None:
    """One rank of the 2-process run: first ``wganlab train`` as torchrun would start it (the
    CLI joins the process group from the environment), then every case in the same group."""
    import torch.distributed as dist
    from wganlab.cli import main
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    assert main(CLI_ARGS + ["--out", str(out / "cli-run")]) == 0
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    try:
        results = {}
        for case in CASES:
            trainer, record = _train(case, out / f"{case}-run", rank, world)
            results[case] = {"weights": _weights(trainer), "record": record,
                             "steps": (trainer.generator_step, trainer.critic_step)}
        # a wall-clock budget: each rank's clock says something else, they must stop together
        from wganlab.train import Trainer
        trainer = Trainer(tiny_config(**{"train.generator_steps": "null",
                                         "train.budget_seconds": 1.0}),
                          out / "budget-run", rank=rank, world=world)
        trainer.run()
        results["budget"] = {"weights": _weights(trainer),
                             "steps": (trainer.generator_step, trainer.critic_step)}
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(argv: list[str], world: int, cwd: Path, timeout: float = 120):
    """Start ``world`` processes with the environment torchrun sets; wait for all."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    failed = [f"rank {r} (rc {p.returncode}):\n{text}"
              for r, (p, text) in enumerate(zip(procs, outputs)) if p.returncode != 0]
    assert not failed, "\n".join(failed)   # every failed rank: the first is often a bystander
    return outputs


@pytest.fixture(scope="module")
def two_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    texts = _launch([sys.executable, str(Path(__file__).resolve()), str(out)], 2, cwd=out)
    for rank, text in enumerate(texts):
        (out / f"log{rank}.txt").write_text(text)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)], out


@pytest.mark.parametrize("case", list(CASES))
def test_ranks_hold_identical_weights(two_process, case):
    (r0, r1), _ = two_process
    assert r0[case]["steps"] == r1[case]["steps"] == (STEPS["train.generator_steps"],
                                                       STEPS["train.generator_steps"]
                                                       * STEPS["train.n_critic"])
    for k, v in r0[case]["weights"].items():
        assert torch.equal(v, r1[case]["weights"][k]), f"{case}: {k} differs between ranks"


@pytest.mark.parametrize("case", EXACT)
def test_two_processes_equal_one(two_process, tmp_path, case):
    (r0, _), _ = two_process
    trainer, record = _train(case, tmp_path / "single")
    single = _weights(trainer)
    assert single.keys() == r0[case]["weights"].keys()
    for k, v in single.items():
        torch.testing.assert_close(r0[case]["weights"][k], v, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{case}: {k}: {m}")
    # the logged losses are the global batch's (averaged over the ranks)
    for key in ("w_estimate", "loss_critic", "loss_generator", "penalty"):
        if key in record:
            assert r0[case]["record"][key] == pytest.approx(record[key], rel=1e-4, abs=1e-6)


def test_time_budget_stops_all_ranks_together(two_process):
    (r0, r1), _ = two_process
    assert r0["budget"]["steps"] == r1["budget"]["steps"] and r0["budget"]["steps"][1] > 0
    for k, v in r0["budget"]["weights"].items():
        assert torch.equal(v, r1["budget"]["weights"][k]), k


def test_only_rank0_writes(two_process):
    _, out = two_process
    if "clip" not in CASES:
        pytest.skip("clip not among WGANLAB_TEST_CASES")
    run = out / "clip-run"
    assert (run / "metrics.jsonl").is_file() and (run / "critic.safetensors").is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["generator_step"] for line in lines]
    assert steps == sorted(set(steps)), "records written more than once"


def test_cli_under_torchrun_environment(two_process):
    """``python -m wganlab train`` with torchrun's variables joined the group (gloo on CPU),
    rank 0 alone reported and wrote the run."""
    _, out = two_process
    texts = (out / "log0.txt").read_text(), (out / "log1.txt").read_text()
    assert "(2 processes)" in texts[0] and "wganlab: training" not in texts[1]
    assert (out / "cli-run" / "generator.safetensors").is_file()


def test_launch_detection_and_backend():
    from wganlab.train.distributed import backend_for, from_env, init_from_env
    assert from_env({}) is None
    launch = from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})
    assert (launch.rank, launch.world, launch.local_rank) == (1, 4, 0)
    with pytest.raises(ValueError):
        from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert backend_for("cpu") == "gloo" and backend_for("cuda:0") == "nccl"
    if "WORLD_SIZE" not in os.environ:
        assert init_from_env("cpu", 64) == (0, 1, "cpu")


def test_single_process_needs_no_group(tmp_path):
    from wganlab.train import Trainer
    trainer = Trainer(_config("clip"), tmp_path / "run")
    assert not trainer._dist.active
    with pytest.raises(RuntimeError, match="torch.distributed"):
        Trainer(_config("clip"), tmp_path / "run2", rank=0, world=2)


if __name__ == "__main__":  # a worker of the two-process fixture
    _worker(Path(sys.argv[1]))
