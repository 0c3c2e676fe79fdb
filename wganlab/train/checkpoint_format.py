"""The checkpoint on disk: a trainer state as files, written atomically, read back verified.

One checkpoint is one directory, committed by a single atomic rename::

    RUN/checkpoints/step_0000123/
        generator.safetensors  critic.safetensors   the weights (usable on their own)
        state.safetensors      every other tensor of Trainer.state_dict() (optimizer moments,
                               RNG states, ...)
        state.json             the rest as plain JSON with references to those tensors, and the
                               resolved config of the run
        MANIFEST.json          size and sha256 of each file above; written last

Why this shape:

* Loading never executes code from the file: no pickle, only safetensors and JSON.
* Files are written into ``checkpoints/.tmp-...``, fsynced, then the directory is renamed into
  place and its parent fsynced, so a crash leaves either the whole checkpoint or none. A
  checkpoint is valid iff its manifest exists and every file's hash matches; anything else is
  refused with a :class:`CheckpointError` naming the file, never loaded silently.

When checkpoints are written is :mod:`.checkpoint_schedule`'s business; which one a run
resumes from, and whether it may, is :mod:`.resuming`'s.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..atomic import atomic_write, fsync_dir
from ..config import Config
from ..errors import CheckpointError, inside

FORMAT = "wganlab-checkpoint"
VERSION = 1
MANIFEST = "MANIFEST.json"
STATE_JSON = "state.json"
#: the tensor files of a checkpoint; the top-level state keys stored in their own file
WEIGHT_KEYS = ("generator", "critic")
FILES = ("generator.safetensors", "critic.safetensors", "state.safetensors", STATE_JSON)
STEP_DIR = re.compile(r"^step_(\d+)$")
#: bounds on a checkpoint's JSON files (state.json is a few kilobytes, nests about 8 deep)
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64


# ----------------------------------------------------------------------------- state <-> files

_TENSOR, _TUPLE, _DICT = "__tensor__", "__tuple__", "__dict__"


def flatten_state(state: dict[str, Any]) -> tuple[dict[str, dict[str, torch.Tensor]], Any]:
    """Split a state tree into tensors per file and a JSON-able tree that refers to them.

    Dicts with non-string keys (optimizer states use ints) and tuples are tagged so that they
    come back exactly as they were. Weights keep their plain state_dict keys.
    """
    files: dict[str, dict[str, torch.Tensor]] = {k: {} for k in (*WEIGHT_KEYS, "state")}
    tree = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"trainer state key {key!r} is not a string")
        if key in WEIGHT_KEYS:
            tree[key] = _encode(value, "", key, files[key])
        else:
            tree[key] = _encode(value, key, "state", files["state"])
    return files, tree


def _encode(obj: Any, path: str, file: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = path or "tensor"
        while key in tensors:
            key += "#"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: [file, key]}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj

    def sub(k: Any) -> str:
        return f"{path}/{k}" if path else str(k)

    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, sub(i), file, tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        if all(type(v) in (int, float, str) for v in obj):  # fast path: RNG states
            return list(obj)
        return [_encode(v, sub(i), file, tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, sub(k), file, tensors) for k, v in obj.items()}
        items = []
        for k, v in obj.items():
            if not (k is None or isinstance(k, (bool, int, float, str))):
                raise CheckpointError(f"cannot store the key {k!r} at {path!r} in a checkpoint")
            items.append([k, _encode(v, sub(k), file, tensors)])
        return {_DICT: items}
    raise CheckpointError(f"cannot store a {type(obj).__name__} at {path!r} in a checkpoint "
                          "(only tensors, numbers, strings, lists, tuples and dicts)")


def unflatten_state(tree: Any, files: dict[str, dict[str, torch.Tensor]]) -> Any:
    """The inverse of :func:`flatten_state`."""
    if isinstance(tree, list):
        return [unflatten_state(v, files) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if _TENSOR in tree:
        file, key = tree[_TENSOR]
        try:
            return files[file][key]
        except KeyError:
            raise CheckpointError(f"{file}.safetensors has no tensor {key!r}") from None
    if _TUPLE in tree:
        return tuple(unflatten_state(v, files) for v in tree[_TUPLE])
    if _DICT in tree:
        return {k: unflatten_state(v, files) for k, v in tree[_DICT]}
    return {k: unflatten_state(v, files) for k, v in tree.items()}


# ----------------------------------------------------------------------------- writing

def _put(folder: Path, name: str, data: bytes) -> dict[str, Any]:
    """Write one file of a checkpoint durably; its manifest entry (size and sha256)."""
    atomic_write(folder / name, data, durable=True)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def remove_dir(path: Path, within: Path) -> None:
    """Take a directory out of the listing by one rename, then delete it; refused unless it
    lies inside ``within`` (the run folder), symlinks followed."""
    if not path.exists():
        return
    inside(within, path)
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def save_checkpoint(state: dict[str, Any], config: Config | dict, directory: str | Path,
                    *, reason: str = "periodic", extra: Optional[dict] = None) -> Path:
    """Write ``state`` (a Trainer.state_dict()) atomically as ``directory`` (replacing a
    checkpoint already there only once the new one is complete). Returns ``directory``."""
    from safetensors.torch import save as st_save

    directory = Path(directory)
    root = directory.parent
    root.mkdir(parents=True, exist_ok=True)
    files, tree = flatten_state(state)
    cfg = config.to_dict() if isinstance(config, Config) else config
    counters = state.get("counters", {})
    body = {"format": FORMAT, "version": VERSION, "config": cfg, "state": tree}
    tmp = root / f".tmp-{directory.name}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        hashes = {}
        for name in WEIGHT_KEYS + ("state",):
            hashes[f"{name}.safetensors"] = _put(tmp, f"{name}.safetensors", st_save(files[name]))
        hashes[STATE_JSON] = _put(tmp, STATE_JSON, json.dumps(body).encode())
        manifest = {"format": FORMAT, "version": VERSION,
                    "generator_step": counters.get("generator_step"),
                    "critic_step": counters.get("critic_step"),
                    "reason": reason, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "files": hashes, **(extra or {})}
        _put(tmp, MANIFEST, json.dumps(manifest, indent=1).encode())  # last; fsyncs ``tmp``
        if directory.exists():  # e.g. an invalid checkpoint of the same step
            remove_dir(directory, root)
        os.replace(tmp, directory)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# ----------------------------------------------------------------------------- reading

@dataclasses.dataclass
class Checkpoint:
    """A verified checkpoint read back into memory."""
    path: Path
    generator_step: int
    critic_step: int
    config: dict[str, Any]
    state: dict[str, Any]
    manifest: dict[str, Any]


def read_json(path: Path, data: bytes) -> Any:
    """Parsed JSON of a checkpoint file; nesting deeper than any wganlab state is refused (an
    attacker's ``[[[[...]]]]`` would otherwise end in a RecursionError)."""
    try:
        tree = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to be a checkpoint") from None
    stack = [(tree, 0)]
    while stack:  # iterative: the check itself must not recurse
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise CheckpointError(f"{path} is nested deeper than {MAX_JSON_DEPTH} levels; "
                                  "not a wganlab checkpoint")
        if isinstance(node, dict):
            stack += [(v, depth + 1) for v in node.values()]
        elif isinstance(node, list):
            stack += [(v, depth + 1) for v in node]
    return tree


def read_small(path: Path, limit: int) -> bytes:
    """A file's bytes, refused before reading when it is larger than ``limit``."""
    size = path.stat().st_size
    if size > limit:
        raise CheckpointError(f"{path} is {size} bytes, more than the {limit} a checkpoint's "
                              "JSON holds")
    return path.read_bytes()


def _check_values(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A diverged state is never a good checkpoint, however it came to be on disk."""
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path} holds non-finite values ({name}): written by a run "
                                  "that had diverged")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify one checkpoint directory; any damage raises :class:`CheckpointError`
    naming the file and the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a folder")
    try:
        manifest = read_json(mpath, read_small(mpath, MAX_JSON_BYTES))
    except FileNotFoundError:
        raise CheckpointError(f"{mpath} is missing: the checkpoint was never completed") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {mpath}: {e.strerror or e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{mpath} is not a wganlab checkpoint manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{mpath} has format version {manifest.get('version')!r}; this "
                              f"wganlab reads version {VERSION}")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or any(not isinstance(listed.get(f), dict) for f in FILES):
        raise CheckpointError(f"{mpath} does not list all of {', '.join(FILES)}")
    blobs: dict[str, bytes] = {}
    for name in FILES:
        fpath = path / name
        entry = listed[name]
        try:
            size = fpath.stat().st_size
            if size != entry.get("bytes"):  # before reading: a huge file costs nothing
                raise CheckpointError(f"{fpath} is damaged: {size} bytes, the manifest "
                                      f"says {entry.get('bytes')} (truncated?)")
            data = (read_small(fpath, MAX_JSON_BYTES) if name == STATE_JSON
                    else fpath.read_bytes())
        except OSError as e:
            raise CheckpointError(f"cannot read {fpath}: {e.strerror or e}") from None
        if len(data) != entry.get("bytes"):
            raise CheckpointError(f"{fpath} is damaged: {len(data)} bytes, the manifest "
                                  f"says {entry.get('bytes')} (truncated?)")
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise CheckpointError(f"{fpath} is damaged: its sha256 does not match the manifest")
        blobs[name] = data
    tensors = {}
    for key in WEIGHT_KEYS + ("state",):
        fpath = path / f"{key}.safetensors"
        try:  # cloned: the loaded tensors would share memory with immutable bytes objects
            loaded = st_load(blobs[f"{key}.safetensors"])
            tensors[key] = {k: v.clone() for k, v in loaded.items()}
        except (SafetensorError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{fpath} is not a valid safetensors file ({e})") from None
        _check_values(fpath, tensors[key])
    body = read_json(path / STATE_JSON, blobs[STATE_JSON])
    if (not isinstance(body, dict) or body.get("format") != FORMAT
            or not isinstance(body.get("config"), dict) or not isinstance(body.get("state"), dict)):
        raise CheckpointError(f"{path / STATE_JSON} lacks the config or the trainer state")
    try:
        state = unflatten_state(body["state"], tensors)
        counters = state["counters"]
        g, c = int(counters["generator_step"]), int(counters["critic_step"])
    except CheckpointError as e:
        raise CheckpointError(f"{path / STATE_JSON}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / STATE_JSON} has a malformed trainer state "
                              f"({e!r})") from None
    if manifest.get("generator_step") != g:
        raise CheckpointError(f"{mpath} says generator step {manifest.get('generator_step')} "
                              f"but {STATE_JSON} holds step {g}")
    return Checkpoint(path, g, c, body["config"], state, manifest)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, directory) of every checkpoint directory of a run, newest first (not verified)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out, reverse=True)
