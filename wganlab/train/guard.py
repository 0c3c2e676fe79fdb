"""The finite-value guard: stop a diverged run with the step and the network, early and cheaply.

Checking every step would cost a host sync per step on a GPU, so the guard runs where the loop
syncs anyway: at every log step (``train.log_every``) and before every checkpoint is written.
Each check is one fused reduction over all weights, gradients, buffers and the step's losses of
both networks, read back with a single sync; the slow search for the culprits runs only when
something is wrong. A run that diverges is therefore caught within ``log_every`` generator
steps, and never checkpointed: the last good checkpoint stays the newest one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Protocol

import torch
from torch import nn

from ..errors import TrainingError


class Guarded(Protocol):
    """What the guard reads of a run (a Trainer): both networks, the step counters, and the
    last step's losses as tensors (not yet read back to the host)."""
    generator: nn.Module
    critic: nn.Module
    generator_step: int
    critic_step: int
    last_losses: Mapping[str, torch.Tensor]


def _tensors(net: str, module: nn.Module) -> Iterator[tuple[str, str, torch.Tensor]]:
    for name, p in module.named_parameters():
        yield net, f"weight {name}", p
        if p.grad is not None:
            yield net, f"gradient of {name}", p.grad
    for name, b in module.named_buffers():
        yield net, f"buffer {name}", b


def _losses(last: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, str, torch.Tensor]]:
    for key, v in last.items():
        if isinstance(v, torch.Tensor):
            yield ("generator" if key.endswith("generator") else "critic"), key, v


def find_nonfinite(items: Iterable[tuple[str, str, torch.Tensor]]) -> list[tuple[str, str]]:
    """(network, what) of every tensor holding a nan or inf; one host sync when all is well."""
    items = [(n, w, t.detach()) for n, w, t in items
             if t.is_floating_point() or t.is_complex()]
    if not items:
        return []
    devices = {t.device for _, _, t in items}
    if len(devices) == 1:
        flags = torch.stack([torch.isfinite(t).all() for _, _, t in items])
    else:  # pragma: no cover - networks on several devices
        flags = torch.tensor([bool(torch.isfinite(t).all()) for _, _, t in items])
    if bool(flags.all()):
        return []
    bad = (~flags).nonzero().flatten().tolist()
    return [(items[i][0], items[i][1]) for i in bad]


def check_finite(run: Guarded, when: str = "log",
                 last_checkpoint: Optional[Path] = None) -> None:
    """Raise TrainingError naming the step, the network(s) and the tensors if any weight,
    gradient, buffer or last loss of the run is not finite. ``when`` says what the check
    guards ("log", "checkpoint" or "final"); ``last_checkpoint``, the run's newest good
    checkpoint, is named in the error."""
    items = [*_tensors("generator", run.generator), *_tensors("critic", run.critic),
             *_losses(run.last_losses)]
    bad = find_nonfinite(items)
    if not bad:
        return
    parts = []
    for net in ("critic", "generator"):
        what = [w for n, w in bad if n == net]
        if what:
            more = f" and {len(what) - 4} more" if len(what) > 4 else ""
            parts.append(f"the {net} ({', '.join(what[:4])}{more})")
    action = {"checkpoint": " (no checkpoint written)",
              "final": " (no final weights written)"}.get(when, "")
    raise TrainingError(
        f"non-finite values at generator step {run.generator_step} "
        f"(critic step {run.critic_step}) in {' and in '.join(parts)}; the run "
        f"diverged and stops{action}. Last good checkpoint: {last_checkpoint or 'none'}. "
        "Try a lower learning rate or a stronger constraint.")


def first_nonfinite(state: dict, prefix: str = "") -> Optional[str]:
    """The path of the first non-finite floating tensor in a nested state (optimizer moments
    before a checkpoint is written), or None."""
    for k, v in state.items() if isinstance(state, dict) else enumerate(state):
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, torch.Tensor):
            if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
                return path
        elif isinstance(v, (dict, list, tuple)):
            found = first_nonfinite(v, path)
            if found:
                return found
    return None
