"""Training: the loop, optimizers, logging, pictures (checkpoints and distributed beside it).

The names below are imported on first use, so that importing one of this package's lower
modules (``wganlab.train.checkpoint``, ``.guard``, ``.distributed``, ...) never pulls in the
trainer: the trainer imports them, not the other way round.
"""
from __future__ import annotations

import importlib
from typing import Any

from ..errors import CheckpointError, TrainingError

#: public name -> the module of this package that defines it
_LAZY = {"Trainer": ".trainer", "train": ".trainer", "RunInterrupted": ".checkpoint_schedule",
         "load_checkpoint": ".checkpoint_format", "resume": ".resuming"}

__all__ = ["Trainer", "TrainingError", "train", "CheckpointError", "RunInterrupted",
           "load_checkpoint", "resume"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # once: later look-ups find it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
