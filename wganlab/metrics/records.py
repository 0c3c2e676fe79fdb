"""Reading a run's ``metrics.jsonl`` (one JSON object per logged step), for every reader."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional


def read_metrics(path: str | Path, upto_step: Optional[float] = None, *,
                 missing_ok: bool = False) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in order. A torn last line (a killed run) is skipped
    silently, any other line that is not a JSON object with a warning naming the file and line.
    ``upto_step``: only records whose ``generator_step`` is at most it (records without a
    numeric one are kept). ``missing_ok``: a missing file reads as no records."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            rec = None
            if i == len(lines):
                continue
        if isinstance(rec, dict):
            step = rec.get("generator_step")
            if upto_step is None or not isinstance(step, (int, float)) or step <= upto_step:
                out.append(rec)
        elif line.strip():
            logging.getLogger("wganlab").warning("%s line %d is not a JSON object; skipped",
                                                 path, i)
    return out
