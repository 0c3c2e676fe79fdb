"""Checkpoints that survive crashes, and resuming runs from them.

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
  skipped (with a warning) when resuming, never loaded silently.
* Checkpoints are written only between generator steps (the loop's one resumable point), after
  a finite-value check (:mod:`.guard`): a non-finite checkpoint is never written.
* The schedule: every ``train.checkpoint_every`` generator steps and/or
  ``train.checkpoint_seconds`` of wall time, at the end of the run, on SIGINT/SIGTERM, and
  (with ``train.best_metric``) whenever that metric improves. The newest
  ``train.keep_checkpoints`` are kept, plus the best one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from ..config import Config
from ..errors import WganlabError, inside, CheckpointError, TrainingError  # noqa: F401
from .guard import check_finite, first_nonfinite

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

log = logging.getLogger("wganlab")

FORMAT = "wganlab-checkpoint"
VERSION = 1
MANIFEST = "MANIFEST.json"
STATE_JSON = "state.json"
#: the tensor files of a checkpoint; the top-level state keys stored in their own file
WEIGHT_KEYS = ("generator", "critic")
FILES = ("generator.safetensors", "critic.safetensors", "state.safetensors", STATE_JSON)
STEP_DIR = re.compile(r"^step_(\d+)$")
BEST_JSON = "best.json"
#: bounds on a checkpoint's JSON files (state.json is a few kilobytes, nests about 8 deep)
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64

#: config keys that may change when a run is resumed: when and how it stops, and where its
#: outputs go. Anything else changes the training itself and needs ``--force-resume``.
RESUMABLE_KEYS = frozenset({
    "train.generator_steps", "train.critic_steps", "train.budget_seconds",
    "train.budget_cpu_seconds", "train.progress", "train.tensorboard",
    "train.checkpoint_every", "train.checkpoint_seconds", "train.keep_checkpoints",
    "train.best_metric", "train.best_mode", "train.device", "train.threads",
})


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

def _write(path: Path, data: bytes) -> dict[str, Any]:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _fsync_dir(path: Path) -> None:
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


def _remove_dir(path: Path, within: Path) -> None:
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
            hashes[f"{name}.safetensors"] = _write(tmp / f"{name}.safetensors",
                                                   st_save(files[name]))
        hashes[STATE_JSON] = _write(tmp / STATE_JSON, json.dumps(body).encode())
        manifest = {"format": FORMAT, "version": VERSION,
                    "generator_step": counters.get("generator_step"),
                    "critic_step": counters.get("critic_step"),
                    "reason": reason, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "files": hashes, **(extra or {})}
        _write(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(tmp)
        if directory.exists():  # e.g. an invalid checkpoint of the same step
            _remove_dir(directory, root)
        os.replace(tmp, directory)
        _fsync_dir(root)
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


def _read_json(path: Path, data: bytes) -> Any:
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


def _read_small(path: Path, limit: int) -> bytes:
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
        manifest = _read_json(mpath, _read_small(mpath, MAX_JSON_BYTES))
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
            data = (_read_small(fpath, MAX_JSON_BYTES) if name == STATE_JSON
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
    body = _read_json(path / STATE_JSON, blobs[STATE_JSON])
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


def latest_checkpoint(run_dir: str | Path, *, warn: bool = True) -> Checkpoint:
    """The newest valid checkpoint of a run; invalid ones are skipped with a warning."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    found = list_checkpoints(run_dir)
    skipped = 0
    for _, path in found:
        try:
            return load_checkpoint(path)
        except CheckpointError as e:
            skipped += 1
            if warn:
                log.warning("skipping invalid checkpoint: %s", e)
    if not found:
        raise CheckpointError(f"{run_dir} holds no checkpoints (nothing under "
                              f"{run_dir / 'checkpoints'})")
    raise CheckpointError(f"{run_dir / 'checkpoints'} holds no valid checkpoint "
                          f"({skipped} invalid ones skipped)")


def find_checkpoint(source: str | Path) -> tuple[Checkpoint, Path]:
    """The checkpoint ``--resume`` names (a run directory: its newest valid checkpoint; or one
    checkpoint directory) and the run directory it belongs to."""
    source = Path(source)
    if (source / MANIFEST).exists() or STEP_DIR.match(source.name):
        ckpt = load_checkpoint(source)
        parent = source.parent
        return ckpt, parent.parent if parent.name == "checkpoints" else parent
    return latest_checkpoint(source), source


# ----------------------------------------------------------------------------- config checks

def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


_MISSING = object()


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every key that differs. A key one side lacks stands for its
    default value (configs gain keys as wganlab grows: old checkpoints stay resumable)."""
    default = _flat(Config().to_dict())
    a, b = _flat(old), _flat(json.loads(json.dumps(new)))
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va is _MISSING:
            va = default.get(key, _MISSING)
        if vb is _MISSING:
            vb = default.get(key, _MISSING)
        if va != vb:
            out.append((key, None if va is _MISSING else va, None if vb is _MISSING else vb))
    return out


def check_resume_config(ckpt: Checkpoint, config: Config, *, force: bool = False) -> None:
    """Refuse to resume with a config that changes training (listing the keys), unless forced."""
    diffs = [d for d in config_diff(ckpt.config, config.to_dict()) if d[0] not in RESUMABLE_KEYS]
    if not diffs:
        return
    listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs)
    if force:
        log.warning("resuming %s with a different config (--force-resume): %s", ckpt.path, listing)
        return
    raise CheckpointError(
        f"checkpoint {ckpt.path} was written with a different config; these keys differ "
        f"(checkpoint -> now): {listing}. Only the stopping and output keys may change on "
        f"resume (e.g. train.generator_steps); pass --force-resume to continue anyway")


def check_resume_data(ckpt: Checkpoint, config: Config, *, force: bool = False) -> None:
    """Refuse to resume on other data files than the run was trained on, unless forced."""
    from ..data import fingerprint
    stored = ckpt.state.get("data")
    if not isinstance(stored, dict):  # written before wganlab recorded its data
        return
    now = fingerprint(config.data)
    old_files, new_files = stored.get("files") or {}, now.get("files") or {}
    diffs = [f"{name}: {'changed' if name in new_files else 'missing'}"
             for name in old_files if old_files[name] != new_files.get(name)]
    diffs += [f"{name}: new" for name in new_files if name not in old_files]
    if stored.get("name") != now.get("name"):
        diffs.insert(0, f"data set {stored.get('name')!r} -> {now.get('name')!r}")
    if not diffs:
        return
    was, is_ = stored.get("dir"), now.get("dir")
    where = str(is_) if was == is_ else f"{was} -> {is_}"
    listing = "; ".join(diffs)
    if force:
        log.warning("resuming %s on other data (--force-resume): %s (%s)", ckpt.path, listing,
                    where)
        return
    raise CheckpointError(
        f"checkpoint {ckpt.path} was trained on other data files ({where}: {listing}); "
        "resume on the same files, or pass --force-resume to continue on these")


def resume_config(ckpt: Checkpoint, overrides: list[str] | None = None) -> Config:
    """The checkpoint's own config with ``key=value`` overrides applied (e.g. more steps)."""
    from ..config import from_dict, parse_override, set_dotted
    raw = json.loads(json.dumps(ckpt.config))
    for item in overrides or []:
        set_dotted(raw, *parse_override(item))
    return from_dict(raw)


# ----------------------------------------------------------------------------- restoring

def _check_weights(module: torch.nn.Module, weights: Any, file: Path) -> None:
    if not isinstance(weights, dict):
        raise CheckpointError(f"{file} does not hold a weight dictionary")
    expected = module.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [f"{k} is {list(weights[k].shape)} in the file but {list(v.shape)} in the model"
              for k, v in expected.items()
              if k in weights and isinstance(weights[k], torch.Tensor)
              and weights[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise CheckpointError(f"{file} holds the weights of another model ({'; '.join(problems)})")


def read_metrics_upto(path: Path, step: int) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl up to generator step ``step`` (torn lines dropped)."""
    out: list[dict[str, Any]] = []
    if not path.is_file():
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            g = rec.get("generator_step") if isinstance(rec, dict) else None
            if isinstance(rec, dict) and (not isinstance(g, (int, float)) or g <= step):
                out.append(rec)
    return out


def _write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    _write(tmp, "".join(json.dumps(r) + "\n" for r in records).encode())
    os.replace(tmp, path)


def restore(trainer: "Trainer", ckpt: Checkpoint, *, source_run: Optional[Path] = None) -> None:
    """Load ``ckpt`` into a freshly built trainer and make its run directory consistent with
    it: metrics.jsonl cut back to the checkpoint's step, later (invalid) checkpoints removed."""
    _check_weights(trainer.generator, ckpt.state.get("generator"),
                   ckpt.path / "generator.safetensors")
    _check_weights(trainer.critic, ckpt.state.get("critic"), ckpt.path / "critic.safetensors")
    # the config's optimizer settings (they differ only under --force-resume), not the stored ones
    settings = [[{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
                for opt in (trainer.opt_generator, trainer.opt_critic)]
    for name, opt in (("opt_generator", trainer.opt_generator), ("opt_critic", trainer.opt_critic)):
        stored = ckpt.state.get(name)
        groups = stored.get("param_groups") if isinstance(stored, dict) else None
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise CheckpointError(f"{ckpt.path / 'state.json'} has no optimizer state {name}")
        if [sorted(g) for g in groups] != [sorted(g) for g in opt.state_dict()["param_groups"]]:
            raise CheckpointError(f"{ckpt.path / 'state.json'}: the {name[4:]}'s optimizer is "
                                  f"not the one this config builds ({type(opt).__name__})")
    try:
        trainer.load_state_dict(ckpt.state)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this run "
                              f"({type(e).__name__}: {e})") from None
    if ckpt.config.get("optim") != json.loads(json.dumps(trainer.config.to_dict()["optim"])):
        for opt, groups in zip((trainer.opt_generator, trainer.opt_critic), settings):
            for group, saved in zip(opt.param_groups, groups):
                group.update(saved)
    run_dir = trainer.run_dir
    source_run = Path(source_run) if source_run is not None else run_dir
    same = source_run.resolve() == run_dir.resolve() if run_dir.exists() else False
    records = read_metrics_upto(source_run / "metrics.jsonl", ckpt.generator_step)
    if trainer.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_metrics(run_dir / "metrics.jsonl", records)
        if same:
            for step, path in list_checkpoints(run_dir):
                if step > ckpt.generator_step:
                    log.warning("removing checkpoint %s: it is newer than the one resumed "
                                "from (%s)", path, ckpt.path.name)
                    _remove_dir(path, run_dir)
    trainer.history = records
    trainer.checkpoints.resumed_from(ckpt, same)


# ----------------------------------------------------------------------------- the schedule

class Checkpointer:
    """Writes a trainer's checkpoints on schedule, keeps the newest (and the best), and turns
    SIGINT/SIGTERM into a checkpoint and a clean stop at the end of the generator step."""

    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer
        self.root = trainer.run_dir / "checkpoints"
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
        t = self.trainer
        self._boundary = (t.generator_step, t.critic_step)
        self._last_time = time.monotonic()
        self.signal = None
        if t.is_main and self.root.is_dir():
            for p in self.root.iterdir():  # leftovers of a writer that was killed
                if p.name.startswith((".tmp-", ".trash-")):
                    shutil.rmtree(inside(t.run_dir, p), ignore_errors=True)
            if not self._resumed and list_checkpoints(t.run_dir):
                log.warning("%s holds checkpoints of an earlier run; this fresh run replaces "
                            "them", self.root)
                for _, p in list_checkpoints(t.run_dir):
                    _remove_dir(p, t.run_dir)
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
            raise RunInterrupted(signum, self.trainer.generator_step, None)
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
        t = self.trainer
        tc = t.config.train
        g = t.generator_step
        self._boundary = (g, t.critic_step)
        due = bool(tc.checkpoint_every) and g % tc.checkpoint_every == 0
        if tc.checkpoint_seconds is not None:
            due = due or time.monotonic() - self._last_time >= tc.checkpoint_seconds
        best = self._improved(record)
        if due or best is not None or self.signal is not None:
            with t.clock:
                self.save("periodic" if due else "best" if best is not None else "signal", best)
        if self.signal is not None:
            raise RunInterrupted(self.signal, g, self.last_path)

    def final(self) -> None:
        """At the end of the run. A run that stopped inside a generator step (a critic-step or
        time budget) cannot be resumed from there; its newest checkpoint stays the last one."""
        t = self.trainer
        if (t.generator_step, t.critic_step) != self._boundary:
            if t.is_main:
                log.info("the run stopped inside generator step %d; its last checkpoint is %s",
                         t.generator_step + 1, self.last_path)
            return
        self.save("final", self._improved({}))

    # -- writing -----------------------------------------------------------------------------
    def save(self, reason: str = "periodic",
             best: Optional[dict[str, Any]] = None) -> Optional[Path]:
        """Check every value is finite, then write this step's checkpoint and prune old ones."""
        t = self.trainer
        g = t.generator_step
        check_finite(t, "checkpoint", self.last_path)
        if not t.is_main:
            return None
        if self.last_step == g and best is None:
            return self.last_path
        state = t.state_dict()
        bad = first_nonfinite({k: state.get(k) for k in ("opt_generator", "opt_critic",
                                                          "constraint")})
        if bad is not None:
            net = "generator" if bad.startswith("opt_generator") else "critic"
            raise TrainingError(f"non-finite optimizer/constraint state {bad} of the {net} at "
                                f"generator step {g}; the run diverged and stops (no checkpoint "
                                f"written). Last good checkpoint: {self.last_path or 'none'}")
        path = save_checkpoint(state, t.config, self.root / step_dir_name(g), reason=reason)
        self.last_step, self.last_path = g, path
        self._last_time = time.monotonic()
        if best is not None:
            self.best = best
            _write_best(self.root, best)
        self.prune()
        return path

    def _improved(self, record: dict[str, Any]) -> Optional[dict[str, Any]]:
        tc = self.trainer.config.train
        metric = tc.best_metric
        if not metric:
            return None
        g = self.trainer.generator_step
        value = record.get(metric)
        for rec in reversed(self.trainer.history[-4:]):  # e.g. an evaluation's own record
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
        keep_n = self.trainer.config.train.keep_checkpoints
        found = list_checkpoints(self.trainer.run_dir)
        keep = {s for s, _ in found[:keep_n]}
        if self.best is not None:
            keep.add(self.best["step"])
        if self.last_step is not None:
            keep.add(self.last_step)
        for step, path in found:
            if step not in keep:
                _remove_dir(path, self.trainer.run_dir)


def _read_best(root: Path) -> Optional[dict[str, Any]]:
    try:
        best = _read_json(root / BEST_JSON, _read_small(root / BEST_JSON, 1 << 16))
    except (OSError, CheckpointError):
        return None
    ok = isinstance(best, dict) and isinstance(best.get("step"), int) and isinstance(
        best.get("value"), (int, float))
    return best if ok else None


def _write_best(root: Path, best: dict[str, Any]) -> None:
    tmp = root / f".{BEST_JSON}.tmp"
    _write(tmp, json.dumps(best).encode())
    os.replace(tmp, root / BEST_JSON)


def resume(trainer: "Trainer", source: str | Path, *, force: bool = False) -> Checkpoint:
    """Python API of ``wganlab train --resume``: load the newest valid checkpoint of
    ``source`` (a run directory or one checkpoint) into ``trainer`` before ``trainer.run()``."""
    ckpt, run_dir = find_checkpoint(source)
    check_resume_config(ckpt, trainer.config, force=force)
    check_resume_data(ckpt, trainer.config, force=force)
    restore(trainer, ckpt, source_run=run_dir)
    return ckpt

