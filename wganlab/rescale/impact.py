"""How much a projection changes what the critic computes, measured on the step's batch.

Shared by every projection (clip, invclip): the critic's output f on the observed batch is
recorded before the projection and compared with the output after it. Reported:

- ``impact``: ||f_proj - f_orig|| / ||f_orig|| over the batch (relative L2; scale-free, so
  comparable across critics and runs);
- ``impact_rms``: ||f_proj - f_orig|| / sqrt(N) (absolute, in the critic's output units);
- ``loss_change``: change of the critic loss -(mean f(real) - mean f(fake)), the batch being
  cat([real, fake]) in equal halves.

Both forwards run in eval mode under no_grad (dropout off, no batch-norm statistics updated),
so the difference is the projection's alone.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..models.mode import evaluating


@torch.no_grad()
def critic_output(critic: nn.Module, batch: Tensor) -> Tensor:
    """f(batch) as a float64 [N] (or [N*outputs]) vector, in eval mode, training flags restored."""
    with evaluating(critic):
        out = critic(batch)
    return out.detach().reshape(batch.shape[0], -1).double()


def critic_loss(f: Tensor) -> float:
    """-(mean f(real) - mean f(fake)) for f on cat([real, fake]) (equal halves)."""
    half = f.shape[0] // 2
    return float(-(f[:half].mean() - f[half:2 * half].mean()))


class ImpactProbe:
    """Record f on ``batch`` now; :meth:`measure` after the projection reports the change."""

    def __init__(self, critic: nn.Module, batch: Tensor):
        self.critic, self.batch = critic, batch
        self.before = critic_output(critic, batch)

    def measure(self, prefix: str = "") -> dict[str, float]:
        after = critic_output(self.critic, self.batch)
        diff = float(torch.linalg.vector_norm(after - self.before))
        base = float(torch.linalg.vector_norm(self.before))
        out = {"impact": diff / base if base > 0 else (0.0 if diff == 0 else math.inf),
               "impact_rms": diff / math.sqrt(self.before.numel())}
        if self.before.shape[0] >= 2:
            out["loss_change"] = critic_loss(after) - critic_loss(self.before)
        return {prefix + k: v for k, v in out.items()}
