"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half.

Every file wganlab writes that another process may read while it is written (results.json,
checkpoints' side files, the evaluator cache, the run folder's identity) goes through here.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

Data = Union[bytes, str]


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse directory fsync
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | str, data: Data | Callable[[str], None], *,
                 durable: bool = False) -> None:
    """Write ``data`` (bytes, text, or a function that writes a given temporary path) to
    ``path`` through a hidden temporary file in the same folder and one rename. ``durable``
    also fsyncs the file and the folder (checkpoints: survive a power cut, not just a kill)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
            if durable:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def atomic_write_json(path: Path | str, data: Any, *, indent: int | None = 1,
                      durable: bool = False) -> None:
    """``data`` as JSON (paths become strings), written atomically."""
    atomic_write(path, json.dumps(data, indent=indent, default=_json_default), durable=durable)
