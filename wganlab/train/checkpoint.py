"""Checkpoints that survive crashes, and resuming runs from them: the public names in one place.

The work is done in three modules, one concept each:

* :mod:`.checkpoint_format`: a trainer state as a checkpoint directory (safetensors + JSON +
  manifest), written atomically and durably, read back verified;
* :mod:`.checkpoint_schedule`: when a run writes checkpoints, which it keeps, SIGINT/SIGTERM;
* :mod:`.resuming`: which checkpoint a resume uses, the rules it must pass, restoring it.

This module re-exports their public names, so ``wganlab.train.checkpoint`` stays the one
import for code that uses checkpoints.
"""
from __future__ import annotations

from ..errors import CheckpointError
from .checkpoint_format import (FILES, FORMAT, MANIFEST, MAX_JSON_BYTES, MAX_JSON_DEPTH,
                                STATE_JSON, STEP_DIR, VERSION, WEIGHT_KEYS, Checkpoint,
                                flatten_state, list_checkpoints, load_checkpoint,
                                save_checkpoint, step_dir_name, unflatten_state)
from .checkpoint_schedule import BEST_JSON, Checkpointer, CheckpointedRun, RunInterrupted
from .resuming import (RESUMABLE_KEYS, Restorable, check_in_place, check_resume,
                       check_resume_config, check_resume_data, config_diff, find_checkpoint,
                       latest_checkpoint, read_metrics_upto, restore, resume, resume_config)

__all__ = [
    "CheckpointError",
    # format
    "FILES", "FORMAT", "MANIFEST", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "STATE_JSON", "STEP_DIR",
    "VERSION", "WEIGHT_KEYS", "Checkpoint", "flatten_state", "list_checkpoints",
    "load_checkpoint", "save_checkpoint", "step_dir_name", "unflatten_state",
    # schedule
    "BEST_JSON", "Checkpointer", "CheckpointedRun", "RunInterrupted",
    # resuming
    "RESUMABLE_KEYS", "Restorable", "check_in_place", "check_resume", "check_resume_config",
    "check_resume_data", "config_diff", "find_checkpoint", "latest_checkpoint",
    "read_metrics_upto", "restore", "resume", "resume_config",
]
