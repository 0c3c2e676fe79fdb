"""When a run writes checkpoints, which it keeps, and stopping cleanly on SIGINT/SIGTERM.

* Checkpoints are written only between generator steps (the loop's one resumable point), after
  a finite-value check (:mod:`.guard`): a non-finite checkpoint is never written.
* The schedule: every ``train.checkpoint_every`` generator steps and/or
  ``train.checkpoint_seconds`` of wall time, at the end of the run, on SIGINT/SIGTERM, and
  (with ``train.best_metric``) whenever that metric improves. The newest
  ``train.keep_checkpoints`` are kept, plus the best one (recorded in ``best.json``).

The run is reached through the :class:`CheckpointedRun` protocol; nothing here imports the
trainer.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Optional, Protocol

from ..atomic import atomic_write_json
from ..config import Config
from ..errors import CheckpointError, TrainingError, inside
from .checkpoint_format import (Checkpoint, list_checkpoints, read_json, read_small, remove_dir,
                                save_checkpoint, step_dir_name)
from .guard import Guarded, check_finite, first_nonfinite

log = logging.getLogger("wganlab")

BEST_JSON = "best.json"


class RunInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped the run (after writing a checkpoint, unless sent twice)."""

    def __init__(self, signum: int, step: int, checkpoint: Optional[Path]):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        where = (f"checkpoint {checkpoint} written" if checkpoint is not None
                 else "no checkpoint written")
        super().__init__(f"stopped by {name} at generator step {step}; {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum



class CheckpointedRun(Guarded, Protocol):
    """What a :class:`Checkpointer` needs of the run it checkpoints (a Trainer)."""
    config: Config
    run_dir: Path
    is_main: bool
    #: the logged records so far (a best metric may come from an evaluation's own record)
    history: list[dict[str, Any]]
    #: entering it pauses the run's budget clock (writing a checkpoint is not training)
    clock: AbstractContextManager

    def state_dict(self) -> dict[str, Any]: ...


class Checkpointer:
    """Writes a trainer's checkpoints on schedule, keeps the newest (and the best), and turns
    SIGINT/SIGTERM into a checkpoint and a clean stop at the end of the generator step."""

    def __init__(self, run: CheckpointedRun):
        self.run = run
        self.root = run.run_dir / "checkpoints"
        #: step and path of the newest checkpoint written or resumed from in this run
        self.last_step: Optional[int] = None
        self.last_path: Optional[Path] = None
        self.best: Optional[dict[str, Any]] = None
        self.signal: Optional[int] = None
        self._resumed = False
        self._boundary: tuple[int, int] = (0, 0)
        self._last_time = time.monotonic()
        self._handlers: dict[int, Any] = {}

    # -- lifecycle (called by Trainer.run) ---------------------------------------------------
    def start(self) -> None:
        run = self.run
        self._boundary = (run.generator_step, run.critic_step)
        self._last_time = time.monotonic()
        self.signal = None
        if run.is_main and self.root.is_dir():
            for p in self.root.iterdir():  # leftovers of a writer that was killed
                if p.name.startswith((".tmp-", ".trash-")):
                    shutil.rmtree(inside(run.run_dir, p), ignore_errors=True)
            if not self._resumed and list_checkpoints(run.run_dir):
                log.warning("%s holds checkpoints of an earlier run; this fresh run replaces "
                            "them", self.root)
                for _, p in list_checkpoints(run.run_dir):
                    remove_dir(p, run.run_dir)
                (self.root / BEST_JSON).unlink(missing_ok=True)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._handlers[sig] = signal.signal(sig, self._on_signal)

    def stop(self) -> None:
        for sig, old in self._handlers.items():
            signal.signal(sig, old)
        self._handlers.clear()

    def _on_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:  # sent twice: stop now, without a checkpoint
            raise RunInterrupted(signum, self.run.generator_step, None)
        self.signal = signum
        os.write(2, f"wganlab: {name} received: writing a checkpoint at the end of this "
                    f"generator step, then stopping (send it again to stop at once)\n".encode())

    def resumed_from(self, ckpt: Checkpoint, same_run: bool) -> None:
        self._resumed = True
        if same_run:
            self.last_step, self.last_path = ckpt.generator_step, ckpt.path
            best = _read_best(self.root)
            if best is not None and best.get("step", math.inf) <= ckpt.generator_step:
                self.best = best

    # -- the hooks ---------------------------------------------------------------------------
    def after_step(self, record: dict[str, Any]) -> None:
        """At the end of every generator step: write what the schedule (or a signal) asks."""
        run = self.run
        tc = run.config.train
        g = run.generator_step
        self._boundary = (g, run.critic_step)
        due = bool(tc.checkpoint_every) and g % tc.checkpoint_every == 0
        if tc.checkpoint_seconds is not None:
            due = due or time.monotonic() - self._last_time >= tc.checkpoint_seconds
        best = self._improved(record)
        if due or best is not None or self.signal is not None:
            with run.clock:
                self.save("periodic" if due else "best" if best is not None else "signal", best)
        if self.signal is not None:
            raise RunInterrupted(self.signal, g, self.last_path)

    def final(self) -> None:
        """At the end of the run. A run that stopped inside a generator step (a critic-step or
        time budget) cannot be resumed from there; its newest checkpoint stays the last one."""
        run = self.run
        if (run.generator_step, run.critic_step) != self._boundary:
            if run.is_main:
                log.info("the run stopped inside generator step %d; its last checkpoint is %s",
                         run.generator_step + 1, self.last_path)
            return
        self.save("final", self._improved({}))

    # -- writing -----------------------------------------------------------------------------
    def save(self, reason: str = "periodic",
             best: Optional[dict[str, Any]] = None) -> Optional[Path]:
        """Check every value is finite, then write this step's checkpoint and prune old ones."""
        run = self.run
        g = run.generator_step
        check_finite(run, "checkpoint", self.last_path)
        if not run.is_main:
            return None
        if self.last_step == g and best is None:
            return self.last_path
        state = run.state_dict()
        bad = first_nonfinite({k: state.get(k) for k in ("opt_generator", "opt_critic",
                                                          "constraint")})
        if bad is not None:
            net = "generator" if bad.startswith("opt_generator") else "critic"
            raise TrainingError(f"non-finite optimizer/constraint state {bad} of the {net} at "
                                f"generator step {g}; the run diverged and stops (no checkpoint "
                                f"written). Last good checkpoint: {self.last_path or 'none'}")
        path = save_checkpoint(state, run.config, self.root / step_dir_name(g), reason=reason)
        self.last_step, self.last_path = g, path
        self._last_time = time.monotonic()
        if best is not None:
            self.best = best
            atomic_write_json(self.root / BEST_JSON, best, durable=True)
        self.prune()
        return path

    def _improved(self, record: dict[str, Any]) -> Optional[dict[str, Any]]:
        tc = self.run.config.train
        metric = tc.best_metric
        if not metric:
            return None
        g = self.run.generator_step
        value = record.get(metric)
        for rec in reversed(self.run.history[-4:]):  # e.g. an evaluation's own record
            if value is None and rec.get("generator_step") == g:
                value = rec.get(metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        sign = -1.0 if tc.best_mode == "max" else 1.0
        if self.best is not None and sign * value >= sign * self.best["value"]:
            return None
        return {"step": g, "metric": metric, "value": float(value)}

    def prune(self) -> None:
        """Keep the newest ``train.keep_checkpoints`` checkpoints and the best one."""
        keep_n = self.run.config.train.keep_checkpoints
        found = list_checkpoints(self.run.run_dir)
        keep = {s for s, _ in found[:keep_n]}
        if self.best is not None:
            keep.add(self.best["step"])
        if self.last_step is not None:
            keep.add(self.last_step)
        for step, path in found:
            if step not in keep:
                remove_dir(path, self.run.run_dir)


def _read_best(root: Path) -> Optional[dict[str, Any]]:
    try:
        best = read_json(root / BEST_JSON, read_small(root / BEST_JSON, 1 << 16))
    except (OSError, CheckpointError):
        return None
    ok = isinstance(best, dict) and isinstance(best.get("step"), int) and isinstance(
        best.get("value"), (int, float))
    return best if ok else None
