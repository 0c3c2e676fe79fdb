"""The layering of wganlab.train: the modules below the trainer never import it (the trainer
imports them). Each import runs in a fresh interpreter, so nothing an earlier test imported
can hide a cycle."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BELOW_TRAINER = ["wganlab.train.checkpoint", "wganlab.train.checkpoint_format",
                 "wganlab.train.checkpoint_schedule", "wganlab.train.resuming",
                 "wganlab.train.guard", "wganlab.train.distributed"]


def imported_after(module: str) -> list[str]:
    """The wganlab modules loaded by ``import module`` in a fresh interpreter."""
    code = ("import importlib, json, sys\n"
            f"importlib.import_module({module!r})\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('wganlab'))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", BELOW_TRAINER)
def test_does_not_import_the_trainer(module):
    loaded = imported_after(module)
    assert module in loaded
    assert "wganlab.train.trainer" not in loaded


def test_the_package_still_offers_the_trainer_and_the_checkpoint_names():
    import wganlab.train as train
    from wganlab.train import checkpoint, checkpoint_format, checkpoint_schedule, resuming
    assert train.Trainer.__module__ == "wganlab.train.trainer"
    assert train.resume is resuming.resume and train.load_checkpoint is checkpoint.load_checkpoint
    assert train.RunInterrupted is checkpoint_schedule.RunInterrupted
    for name in checkpoint.__all__:  # the facade re-exports every public name it lists
        assert getattr(checkpoint, name) is not None
    assert checkpoint.save_checkpoint is checkpoint_format.save_checkpoint
