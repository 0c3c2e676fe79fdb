"""Where logged scalars go: one JSON object per line in metrics.jsonl, and TensorBoard."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional


class MetricsLogger:
    """Appends to the run's records when resuming from generator step ``resume_step`` (> 0);
    TensorBoard's events after that step, written by the run before it was interrupted, are
    purged so that its curves show one history, as metrics.jsonl does."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, resume_step: int = 0):
        self.path = run_dir / "metrics.jsonl"
        self._file = open(self.path, "a" if resume_step else "w", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"),
                                         purge_step=resume_step + 1 if resume_step else None)
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                self._tb = None

    def log(self, record: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = int(record.get("generator_step", 0))
            for k, v in clean.items():
                if k not in ("generator_step",) and isinstance(v, (int, float)) and v is not None:
                    self._tb.add_scalar(k, v, step)

    def add_image(self, tag: str, image, step: int) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HW" if image.ndim == 2 else "HWC")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _jsonable(v: Any) -> Optional[Any]:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v
