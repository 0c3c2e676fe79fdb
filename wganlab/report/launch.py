"""Where the runs of a comparison execute: a local process pool, or SLURM through submitit.

Every run is the same ``python -m wganlab train`` command whatever the launcher, so a run
folder does not depend on where it ran. A launcher only starts a command in a free slot and
reports its exit code; :func:`run_all` keeps the slots busy and the progress display current.
Stopping a sweep (Ctrl-C, SIGTERM) sends SIGTERM to the runs in flight: each writes a
checkpoint, and the next ``wganlab compare`` resumes them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .progress import Progress


@dataclass
class Task:
    """One run: its command, the environment it needs on top of the caller's, its log file."""
    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    resumed: bool = False


def run_command(task: Task) -> int:
    """Run a task's command to the end; its output goes to its log (what a SLURM job runs)."""
    with open(task.log_path, "a", encoding="utf-8") as f:
        return subprocess.call(task.cmd, stdout=f, stderr=subprocess.STDOUT,
                               env={**os.environ, **task.env})


class _Process:
    """A local run: a child process."""

    def __init__(self, task: Task, env: dict[str, str]):
        self._log = open(task.log_path, "a", encoding="utf-8")
        self._proc = subprocess.Popen(task.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                      env={**os.environ, **task.env, **env})

    def poll(self) -> Optional[int]:
        rc = self._proc.poll()
        if rc is not None:
            self._log.close()
        return rc

    def cancel(self) -> None:
        """SIGTERM: the trainer checkpoints and exits, so the run resumes next time."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._log.close()


class LocalPool:
    """``jobs`` runs at a time on this machine. With CUDA and several visible GPUs, slot k
    sees only GPU k mod n (``CUDA_VISIBLE_DEVICES``), so runs never share a device."""

    name = "local"

    def __init__(self, jobs: int, gpus: Optional[list[str]] = None):
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1 (got {jobs})")
        self.slots = jobs
        self.gpus = gpus or []

    def start(self, task: Task, slot: int) -> _Process:
        env = {"CUDA_VISIBLE_DEVICES": self.gpus[slot % len(self.gpus)]} if self.gpus else {}
        return _Process(task, env)


class _Job:
    """A submitit job, read like a process."""

    def __init__(self, job, log_path: Path):
        self._job, self._log_path = job, log_path

    def poll(self) -> Optional[int]:
        if not self._job.done():
            return None
        try:
            return int(self._job.result())
        except Exception as e:  # the job itself failed (node lost, time limit, ...)
            with open(self._log_path, "a", encoding="utf-8") as f:
                f.write(f"\nsubmitit job {self._job.job_id} failed: {e}\n")
            return 1

    def cancel(self) -> None:
        self._job.cancel(check=False)


class SubmititLauncher:
    """Each run a submitit job: SLURM where ``srun`` exists, else submitit's local executor
    (or the ``cluster`` named). ``params`` go to ``AutoExecutor.update_parameters``
    (``timeout_min``, ``cpus_per_task``, ``slurm_partition``, ...); jobs logs land in
    ``folder``."""

    name = "submitit"

    def __init__(self, folder: Path, jobs: int, params: dict[str, Any],
                 cluster: Optional[str] = None):
        try:
            import submitit
        except ImportError:
            raise ImportError("--launcher submitit needs the submitit package: "
                              "pip install 'wganlab[slurm]'") from None
        self.slots = jobs
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        self.executor.update_parameters(**params)

    def start(self, task: Task, slot: int) -> _Job:
        self.executor.update_parameters(name=task.name)
        return _Job(self.executor.submit(run_command, task), task.log_path)


def run_all(tasks: list[Task], launcher, on_done: Callable[[Task, int, float], None],
            progress: Progress, on_start: Callable[[Task], None] = lambda task: None,
            poll_seconds: float = 0.5) -> None:
    """Run ``tasks`` in order, ``launcher.slots`` at a time; ``on_start(task)`` as each
    starts, ``on_done(task, rc, seconds)`` as each ends. An interruption cancels the runs in
    flight (they checkpoint) and re-raises."""
    pending = deque(tasks)
    running: dict[int, tuple[Task, Any, float]] = {}
    free = list(range(launcher.slots))
    previous = _sigterm_interrupts()
    try:
        while pending or running:
            while pending and free:
                slot, task = free.pop(0), pending.popleft()
                on_start(task)
                running[slot] = (task, launcher.start(task, slot), time.time())
                progress.started(task.name)
            for slot, (task, handle, t0) in list(running.items()):
                rc = handle.poll()
                if rc is not None:
                    del running[slot]
                    free.append(slot)
                    seconds = time.time() - t0
                    progress.finished(task.name, rc, seconds)
                    on_done(task, rc, seconds)
            progress.tick()
            if running:
                time.sleep(poll_seconds)
    except BaseException:
        for task, handle, _ in running.values():
            handle.cancel()
        raise
    finally:
        progress.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_interrupts():
    """Make SIGTERM raise KeyboardInterrupt (as Ctrl-C does), so that a killed sweep stops
    its runs instead of orphaning them; returns the handler to restore (None: not the main
    thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")
    return signal.signal(signal.SIGTERM, interrupt)


def visible_gpus() -> list[str]:
    """The GPUs a local pool may hand out: ``CUDA_VISIBLE_DEVICES`` if set, else all torch
    sees (none without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
