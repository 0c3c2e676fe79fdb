"""Plain weight clipping (WGAN, Arjovsky et al. 2017): clamp critic parameters to a box."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..rescale.impact import ImpactProbe
from ..rescale.layers import NORM_LAYERS, _weight, layer_bounds, weight_layers
from .base import Constraint
from .registry import register


def clip_targets(critic: nn.Module, bounds: Sequence[float],
                 params: Sequence[str]) -> list[tuple[int, torch.Tensor, float]]:
    """(weight-layer index, parameter, bound) for every parameter clipping touches.

    A layer's bias shares its layer's bound; normalisation layers' affine parameters (index
    -1) get the largest bound."""
    out: list[tuple[int, torch.Tensor, float]] = []
    for i, ((_, layer), bound) in enumerate(zip(weight_layers(critic), bounds)):
        if "weight" in params:
            out.append((i, _weight(layer), bound))
        if "bias" in params and getattr(layer, "bias", None) is not None:
            out.append((i, layer.bias, bound))
    if "norm" in params:
        top = max(bounds)
        for m in critic.modules():
            if isinstance(m, NORM_LAYERS):
                out += [(-1, p, top) for p in m.parameters(recurse=False)]
    return out


def box_stats(targets) -> dict[int, tuple[float, int, int]]:
    """Per weight layer (-1: norm layers) of ``clip_targets``: (squared distance of its
    parameters to the box, entries outside, entries)."""
    out: dict[int, list] = {}
    for k, p, b in targets:
        excess = (p.detach().abs() - b).clamp_min_(0)
        s = out.setdefault(k, [0.0, 0, 0])
        s[0] += float(excess.double().square().sum())
        s[1] += int(torch.count_nonzero(excess))
        s[2] += p.numel()
    return {k: tuple(v) for k, v in out.items()}


@torch.no_grad()
def clamp_targets_(targets) -> None:
    """Clip every target parameter to its bound, in place."""
    for _, p, b in targets:
        p.clamp_(-b, b)


def check_clip_options(when: str, params: Sequence[str]) -> None:
    """The clipping options WeightClip and InvariantClip share, checked with a clear error."""
    if when not in ("after", "before"):
        raise ValueError(f"when must be 'after' or 'before', got {when!r}")
    bad = set(params) - {"weight", "bias", "norm"}
    if bad:
        raise ValueError(f"params may hold weight, bias, norm; got {sorted(bad)}")


class WeightClip(Constraint):
    """Clamp every selected critic parameter to ``[-l, l]``, with ``l`` per layer.

    ``clip``: a float for every Linear/Conv layer or a list, one per layer in order.
    ``scale="fan_in"`` divides each by sqrt(fan_in) (Massart 2022's choice).
    ``when="after"`` clips after each optimizer step (default); ``"before"`` clips before each
    critic forward pass, as the original WGAN code does (the last step's update then reaches
    the generator step unclipped).
    ``params``: which parameters to touch: ``weight``, ``bias`` (a layer's bias shares its
    layer's bound) and ``norm`` (normalisation layers' affine parameters, bound = largest bound).

    With ``step(diagnose=True)`` after :meth:`observe`, it also reports the projection's impact
    on the critic's output (``clip/impact``, ``clip/impact_rms``, ``clip/loss_change``; see
    :mod:`wganlab.rescale.impact`).
    """

    name = "clip"
    default_optimizer = {"name": "rmsprop", "lr": 5e-5}

    def __init__(self, critic: nn.Module, clip: Union[float, Sequence[float]] = 0.01, *,
                 scale: str = "absolute", when: str = "after",
                 params: Sequence[str] = ("weight", "bias")):
        super().__init__(critic)
        check_clip_options(when, params)
        self.when = when
        self.bounds = layer_bounds(critic, clip, scale)
        self.targets = clip_targets(critic, self.bounds, params)

    def prepare(self) -> None:
        if self.when == "before":
            self.clip_(diagnose=False)

    @torch.no_grad()
    def step(self, optimizer: Optional[torch.optim.Optimizer] = None, *,
             diagnose: bool = False) -> None:
        if self.when != "after":
            return
        probe = ImpactProbe(self.critic, self.batch) if diagnose and self.batch is not None \
            else None
        self.clip_(diagnose=diagnose)
        if probe is not None:
            self._diagnostics.update(probe.measure("clip/"))

    @torch.no_grad()
    def clip_(self, diagnose: bool = False) -> None:
        if diagnose:
            stats = box_stats(self.targets).values()
            total = sum(s[2] for s in stats)
            clipped = sum(s[1] for s in stats)
            dist2 = sum(s[0] for s in stats)
            self._diagnostics = {"clip/fraction_clipped": clipped / max(total, 1),
                                 "clip/box_distance": dist2 ** 0.5}
        clamp_targets_(self.targets)

    def __repr__(self) -> str:
        return f"WeightClip(bounds={[round(b, 6) for b in self.bounds]}, when={self.when!r})"


@dataclass
class ClipParams:
    """``constraint.clip``: the clipping box (also invclip's)."""
    #: clip bound: one float for every layer, or a list with one per Linear/Conv layer in order
    bound: Union[float, list[float]] = 0.01
    #: absolute: ``bound`` is the bound; fan_in: the bound of a layer is bound / sqrt(fan_in)
    scale: str = "absolute"
    #: after: clip after each critic optimizer step; before: before each critic step (the
    #: original WGAN code)
    when: str = "after"
    #: which critic parameters clipping touches: any of weight, bias, norm
    params: list[str] = field(default_factory=lambda: ["weight", "bias"])

    def validate(self) -> None:
        bounds = self.bound if isinstance(self.bound, list) else [self.bound]
        if not bounds or any(b <= 0 for b in bounds):
            raise ValueError(f"bound must be > 0 (got {self.bound})")
        if self.scale not in ("absolute", "fan_in"):
            raise ValueError(f"scale={self.scale!r} is not one of: absolute, fan_in")
        check_clip_options(self.when, self.params)


@register("clip", params=ClipParams)
def _build(critic: nn.Module, section) -> WeightClip:
    box = section.params("clip")
    return WeightClip(critic, box.bound, scale=box.scale, when=box.when, params=box.params)
