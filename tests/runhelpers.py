"""Running ``wganlab train`` from tests: the CLI's arguments for a small toy run, and forked
children (cheap: torch is already imported) whose exit codes a test can read."""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

#: generator steps of a run
STEPS = 24
CLI_SETS = {"model.toy_hidden": 16, "data.batch_size": 32, "train.n_critic": 2,
            "train.warmup_generator_steps": 0, "train.log_every": 2, "train.threads": 1,
            "train.tensorboard": "false", "train.progress": "false", "train.sample_every": 1000,
            "train.checkpoint_every": 1, "train.keep_checkpoints": 3,
            "train.generator_steps": STEPS}


def cli_args(out: Path, constraint: str) -> list[str]:
    sets = {**CLI_SETS, "constraint.name": constraint}
    args = ["train", "--config", "toy", "--out", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def forked(fn, stderr: Path | None = None) -> int:
    """Run ``fn`` in a forked child (cheap: torch is already imported); returns its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            if stderr is not None:  # past pytest's capture, which replaced sys.stderr
                fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                os.dup2(fd, 2)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
            code = fn()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
