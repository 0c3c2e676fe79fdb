"""Resuming a run: which checkpoint, whether it may be resumed, and loading it into a trainer.

The rules (one place for the command line and the Python API, :func:`check_resume`):

* the config may differ from the checkpoint's only in when and how the run stops and where its
  outputs go (:data:`RESUMABLE_KEYS`); anything else needs ``force`` (``--force-resume``);
* the data files must be the ones the run was trained on, unless forced;
* resuming in place from a checkpoint older than the run's newest valid one is refused (it
  would discard the newer ones): branch a new run folder from it instead.

:func:`restore` then loads the checkpoint and makes the run folder consistent with it
(metrics.jsonl cut back to its step, newer checkpoints removed). Nothing here imports the
trainer: it is reached through the small :class:`Restorable` protocol.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Protocol

import torch
from torch import nn

from ..metrics.records import read_metrics
from ..atomic import atomic_write
from ..config import Config, upgrade_stored
from ..errors import CheckpointError
from .checkpoint_format import (MANIFEST, STEP_DIR, Checkpoint, list_checkpoints,
                                load_checkpoint, remove_dir)
from .checkpoint_schedule import Checkpointer

log = logging.getLogger("wganlab")

#: config keys that may change when a run is resumed: when and how it stops, and where its
#: outputs go. Anything else changes the training itself and needs ``--force-resume``.
RESUMABLE_KEYS = frozenset({
    "train.generator_steps", "train.critic_steps", "train.budget_seconds",
    "train.budget_cpu_seconds", "train.progress", "train.tensorboard",
    "train.checkpoint_every", "train.checkpoint_seconds", "train.keep_checkpoints",
    "train.best_metric", "train.best_mode", "train.device", "train.threads",
})


class Restorable(Protocol):
    """What :func:`restore` needs of a trainer (wganlab.train.Trainer has it all)."""
    config: Config
    run_dir: Path
    is_main: bool
    generator: nn.Module
    critic: nn.Module
    opt_generator: torch.optim.Optimizer
    opt_critic: torch.optim.Optimizer
    history: list[dict[str, Any]]
    checkpoints: Checkpointer

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# ----------------------------------------------------------------------------- finding

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
    diffs = [d for d in config_diff(upgrade_stored(ckpt.config), config.to_dict())
             if d[0] not in RESUMABLE_KEYS]
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


def check_in_place(ckpt: Checkpoint, *, requested: str | Path, source_run: Path,
                   out: Path) -> None:
    """Refuse to resume in place from a checkpoint named explicitly (``requested``) when the
    run holds newer valid ones: :func:`restore` would discard them. Branching elsewhere is
    fine, and so is an in-place resume whose newer checkpoints are all invalid."""
    if Path(requested).resolve() != ckpt.path.resolve():
        return  # a run folder: its newest valid checkpoint was picked
    if Path(out).resolve() != Path(source_run).resolve():
        return
    try:
        newest = latest_checkpoint(source_run, warn=False)
    except CheckpointError:  # a checkpoint folder outside any run's checkpoints/
        return
    if newest.generator_step > ckpt.generator_step:
        raise CheckpointError(
            f"{ckpt.path} is not the newest valid checkpoint of {source_run}: resuming "
            "from it in place would discard the newer ones; pass --out NEW_DIR to "
            "branch a new run from it")


def check_resume(ckpt: Checkpoint, config: Config, *, requested: str | Path, source_run: Path,
                 out: Path, force: bool = False) -> None:
    """Every rule a resume must pass (the module's docstring), in one call: ``ckpt`` was
    found from ``requested`` (:func:`find_checkpoint`) in the run ``source_run`` and is to
    continue into ``out`` with ``config``. ``force`` waives the config and data checks."""
    check_resume_config(ckpt, config, force=force)
    check_resume_data(ckpt, config, force=force)
    check_in_place(ckpt, requested=requested, source_run=source_run, out=out)


def resume_config(ckpt: Checkpoint, overrides: list[str] | None = None) -> Config:
    """The checkpoint's own config with ``key=value`` overrides applied (e.g. more steps)."""
    from ..config import from_dict, parse_override, set_dotted
    raw = json.loads(json.dumps(ckpt.config))
    for item in overrides or []:
        set_dotted(raw, *parse_override(item))
    return from_dict(raw)


# ----------------------------------------------------------------------------- restoring

def _check_weights(module: nn.Module, weights: Any, file: Path) -> None:
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
    """The records of a metrics.jsonl up to generator step ``step`` (none if it is missing)."""
    return read_metrics(path, step, missing_ok=True)


def restore(trainer: Restorable, ckpt: Checkpoint, *, source_run: Optional[Path] = None) -> None:
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
        atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records),
                     durable=True)
        if same:
            for step, path in list_checkpoints(run_dir):
                if step > ckpt.generator_step:
                    log.warning("removing checkpoint %s: it is newer than the one resumed "
                                "from (%s)", path, ckpt.path.name)
                    remove_dir(path, run_dir)
    trainer.history = records
    trainer.checkpoints.resumed_from(ckpt, same)


def resume(trainer: Restorable, source: str | Path, *, force: bool = False) -> Checkpoint:
    """Python API of ``wganlab train --resume``: load the newest valid checkpoint of
    ``source`` (a run directory or one checkpoint) into ``trainer`` before ``trainer.run()``."""
    ckpt, run_dir = find_checkpoint(source)
    check_resume(ckpt, trainer.config, requested=source, source_run=run_dir,
                 out=trainer.run_dir, force=force)
    restore(trainer, ckpt, source_run=run_dir)
    return ckpt

