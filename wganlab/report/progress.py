"""A live view of a sweep: runs done / running / failed / waiting, and when it should end.

On a terminal one status line is redrawn in place; elsewhere (CI logs, ``nohup``) a plain line
is printed whenever a run starts or ends, so a log file reads as a history.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, Optional, TextIO


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Counts of a sweep of ``total`` runs, ``slots`` at a time. The ETA assumes the runs
    still to come last as long as the mean of those finished so far."""

    def __init__(self, total: int, slots: int, log: Callable[[str], None] = print,
                 stream: Optional[TextIO] = None, tty: Optional[bool] = None):
        self.total, self.slots, self._log = total, max(1, slots), log
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.running: dict[str, float] = {}
        self.done = self.failed = 0
        self.durations: list[float] = []
        self._drawn = ""

    def say(self, message: str) -> None:
        """A log message, above the status line on a terminal."""
        if self.tty and self._drawn:
            self.stream.write("\r\033[K")
        self._log(message)
        if self.tty and self._drawn:
            self._show()

    def started(self, name: str) -> None:
        self.running[name] = time.time()
        self._show(force=True)

    def finished(self, name: str, rc: int, seconds: float) -> None:
        self.running.pop(name, None)
        if rc == 0:
            self.done += 1
            self.durations.append(seconds)
        else:
            self.failed += 1
        self._show(force=True)

    def tick(self) -> None:
        if self.tty:
            self._show()

    def eta(self) -> Optional[float]:
        """Seconds until the last run should end (None before any run finished)."""
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        now = time.time()
        left_running = [max(0.0, mean - (now - t0)) for t0 in self.running.values()]
        waiting = self.total - self.done - self.failed - len(self.running)
        waves = math.ceil(waiting / self.slots)
        return max(left_running, default=0.0) + waves * mean

    def line(self) -> str:
        waiting = self.total - self.done - self.failed - len(self.running)
        eta = self.eta()
        return (f"sweep: {self.done}/{self.total} done, {len(self.running)} running, "
                f"{self.failed} failed, {waiting} waiting"
                + (f", ETA {fmt_seconds(eta)}" if eta is not None else ""))

    def _show(self, force: bool = False) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        elif force and text != self._drawn:
            self._log(text)
        self._drawn = text

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
