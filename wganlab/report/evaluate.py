"""``wganlab eval``: score a finished (or checkpointed) run offline and write ``eval.json``.

Loading a run lives here, above ``train``: the metrics package only ever sees samples.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file
from torch import nn

from ..atomic import atomic_write_json
from ..config import Config, ConfigError, load_stored, read_yaml
from ..errors import WganlabError, RunError  # noqa: F401
from ..metrics.suite import evaluate, format_table, generator_sampler

#: the latent seed of offline evaluation (the trainer uses seed + 424242; both are fixed)
EVAL_SEED = 0


def load_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run directory: it has no config.yaml")
    try:
        return load_stored(read_yaml(path))
    except ConfigError as e:
        raise RunError(f"{path}: {e}") from None


def resolve_checkpoint(run_dir: str | Path, checkpoint: str | Path | None) -> Optional[Path]:
    """``latest`` means the run's newest valid checkpoint; anything else is a path."""
    if checkpoint is None or str(checkpoint) != "latest":
        return None if checkpoint is None else Path(checkpoint)
    from ..train.checkpoint import CheckpointError, latest_checkpoint
    try:
        return latest_checkpoint(run_dir).path
    except CheckpointError as e:
        raise RunError(str(e)) from None


def _state_from_file(path: Path, net: str) -> dict[str, torch.Tensor]:
    """The ``net`` ('generator' or 'critic') weights stored at ``path``: a wganlab checkpoint
    folder (verified against its manifest), a bare safetensors state dict, a safetensors file
    with ``net.`` prefixed keys, or a torch checkpoint dict holding ``net``."""
    if path.is_dir() and (path / "MANIFEST.json").exists():
        from ..train.checkpoint import CheckpointError, load_checkpoint
        try:
            state = load_checkpoint(path).state
        except CheckpointError as e:
            raise RunError(str(e)) from None
        if not isinstance(state.get(net), dict):
            raise RunError(f"checkpoint {path} holds no {net} weights")
        return state[net]
    if path.is_dir():
        inner = path / f"{net}.safetensors"
        if inner.is_file():
            return _state_from_file(inner, net)
        raise RunError(f"checkpoint folder {path} has no {net}.safetensors")
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise RunError(f"{path} is not a readable safetensors file: {e}") from None
        prefixed = {k[len(net) + 1:]: v for k, v in state.items() if k.startswith(net + ".")}
        if prefixed:
            return prefixed
        if path.stem != net and any(k.startswith(("generator.", "critic.")) for k in state):
            raise RunError(f"{path} holds no {net} weights")
        return state
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise RunError(f"{path} is not a readable checkpoint: {e}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get(net), dict):
        raise RunError(f"checkpoint {path} has no {net!r} state dict")
    return ckpt[net]


def load_net(run_dir: str | Path, cfg: Config, net: str = "generator",
             checkpoint: str | Path | None = None) -> nn.Module:
    """The run's generator or critic with its final weights (or a checkpoint's), in eval mode."""
    from ..constraints import build_constraint, critic_activation, has_capability
    from ..models import build_models
    generator, critic = build_models(cfg.model, cfg.data,
                                     critic_activation(cfg.model.activation, cfg.constraint))
    module = generator if net == "generator" else critic
    checkpoint = resolve_checkpoint(run_dir, checkpoint)
    path = checkpoint if checkpoint is not None else Path(run_dir) / f"{net}.safetensors"
    if checkpoint is None and not path.is_file():
        raise RunError(f"{path} not found: the run has not finished; pass a checkpoint")
    state = _state_from_file(path, net)
    if net == "critic" and has_capability(cfg.constraint, "reparametrises"):
        build_constraint(module, cfg.constraint)  # its parameters' names are the constraint's
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise RunError(f"the {net} weights in {path} do not fit the model of "
                       f"{Path(run_dir) / 'config.yaml'}: {str(e).splitlines()[0]}") from None
    return module.eval()


def run_eval(run_dir: str | Path, checkpoint: str | Path | None = None,
             samples: Optional[int] = None, seed: int = EVAL_SEED,
             out: Callable[[str], None] = print, cache: str | Path | None = None) -> dict:
    """Evaluate a run's generator (final weights, or ``checkpoint``: a checkpoint folder or
    file, or ``latest``) on ``samples`` samples (default: the run's ``train.eval_samples``),
    print the table and write ``run_dir/eval.json``; returns the flat ``eval/...`` results."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    n = samples if samples is not None else cfg.train.eval_samples
    if n < 5:
        raise RunError(f"--samples must be at least 5 (got {n})")
    checkpoint = resolve_checkpoint(run_dir, checkpoint)
    generator = load_net(run_dir, cfg, "generator", checkpoint)
    t0 = time.perf_counter()
    results = evaluate(generator_sampler(generator, cfg.model.z_dim, seed=seed), cfg.data, n,
                       seed=seed, cache=cache)
    seconds = time.perf_counter() - t0
    out(f"{run_dir} ({cfg.data.name}, {cfg.model.name}, {cfg.constraint.name}"
        f"{', ' + str(checkpoint) if checkpoint else ''}):")
    out(format_table(results))
    record = {"run": str(run_dir), "checkpoint": str(checkpoint) if checkpoint else None,
              "samples": n, "seed": seed, "seconds": round(seconds, 2),
              "metrics": results}
    atomic_write_json(run_dir / "eval.json", record)
    return results
