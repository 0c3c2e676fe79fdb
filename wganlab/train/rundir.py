"""A run folder holds one run and belongs to one process at a time.

Why: two processes writing one folder interleave ``metrics.jsonl`` and delete each other's
checkpoints, and a run started in a folder that holds something else mixes two histories or
overwrites same-named files. So:

* a process that trains into a folder holds ``.wganlab.lock`` there (an OS lock, released by
  the kernel when the process dies: a killed run leaves no stale lock) and writes who it is
  into ``.wganlab.lock.json``; a second process fails at once, naming the holder. Under
  ``torchrun`` rank 0 holds it for all ranks;
* a fresh run goes only into an empty folder, a resume only into its own run, an empty folder
  or an earlier branch of the same run (``run.json`` records where a branch came from);
  anything else needs ``--overwrite``, which removes wganlab's own outputs there and never
  any other file.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from filelock import FileLock, Timeout

from ..atomic import atomic_write_json
from ..errors import WganlabError, inside, RunFolderError  # noqa: F401

LOCK = ".wganlab.lock"
HOLDER = ".wganlab.lock.json"
IDENTITY = "run.json"
#: everything a run writes into its folder: what ``--overwrite`` removes (and nothing else)
OUTPUTS = ("checkpoints", "samples", "tensorboard", "plots", "metrics.jsonl", "config.yaml",
           "generator.safetensors", "critic.safetensors", "eval.json", IDENTITY)


@contextmanager
def locked(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs (re-entrant within one process, so the
    command line and the trainer may both take it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(inside(folder, folder / LOCK)), is_singleton=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunFolderError(f"{folder} is in use by {holder(folder)}; wait for it to end or "
                             "choose another --out") from None
    first = lock.lock_counter == 1
    try:
        if first:
            atomic_write_json(folder / HOLDER, {
                "pid": os.getpid(), "host": socket.gethostname(),
                "command": shlex.join(sys.argv), "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
        yield
    finally:
        if first:  # before the release: afterwards it may be the next holder's
            (folder / HOLDER).unlink(missing_ok=True)
        lock.release()


def holder(folder: Path) -> str:
    """Who holds ``folder``'s lock, as its sidecar file says."""
    try:
        h = _read_json(folder / HOLDER)
        return f"process {h['pid']} on {h['host']} (`{h['command']}`, since {h['since']})"
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return "another process (it has not said which yet)"


def claim(folder: str | Path, *, source: Optional[Path] = None,
          checkpoint: Optional[Path] = None, overwrite: bool = False) -> None:
    """Refuse ``folder`` unless it is empty, the run resumed from (``source``) itself, or an
    earlier branch of it; with ``overwrite`` clear wganlab's outputs there instead. Call it
    holding the lock, before anything is written."""
    folder = Path(folder)
    found = contents(folder)
    if found and source is not None and folder.resolve() == source.resolve():
        return  # resuming in place
    parent = None if source is None else {
        "run": str(source.resolve()), "checkpoint": checkpoint.name if checkpoint else None}
    branch = (source is not None
              and (_read_identity(folder).get("parent") or {}).get("run") == parent["run"])
    if found and not (branch or overwrite):
        listing = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        if source is None and "checkpoints" in found:
            what = (f"{folder} already holds checkpoints of a run: continue it with --resume "
                    f"{folder}")
        elif source is None:
            what = f"{folder} is not empty (it holds {listing})"
        else:
            what = f"{folder} is not empty (it holds {listing}) and is not a branch of {source}"
        raise RunFolderError(f"{what}; choose another --out, or pass --overwrite to replace "
                             "wganlab's outputs there (other files are left alone)")
    clear_outputs(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / IDENTITY, {"created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                          "parent": parent})


def contents(folder: Path) -> list[str]:
    """The names in ``folder`` other than its lock files."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in (LOCK, HOLDER))


def clear_outputs(folder: Path) -> None:
    """Remove what a run writes into ``folder`` (each path checked to lie inside it)."""
    for name in OUTPUTS:
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_symlink():  # the link itself, never where it points
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(inside(folder, path))
        else:
            inside(folder, path).unlink()


def _read_identity(folder: Path) -> dict:
    try:
        data = _read_json(folder / IDENTITY)
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("parent") or {}, dict) else {}


def _read_json(path: Path, limit: int = 1 << 16):
    """A small JSON file of ours; a big or deeply nested one fails as invalid JSON would."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return json.loads(f.read(limit))
