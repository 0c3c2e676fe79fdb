"""The data-weighted ``function`` solver (research): eq. (7) with each entry's squared violation
weighted by the mean square, on the current batch, of the activation that entry multiplies.

Clipping an entry by delta changes the next pre-activation by delta * x, so weighting by
E[x^2] makes the box distance a first-order proxy of the change of the layer's output rather
than of the weights. The outgoing entries multiply the rescaled unit h_i/d; their weight is
E[h_i^2] of the current (pre-rescaling) critic, held fixed while solving so the problem stays
convex (the exact solver with weights). Later layers of the sweep see the statistics updated for
the scales already applied (inputs of a rescaled layer: E[x^2] / d^2).
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from ..models.mode import evaluating
from . import solvers
from .layers import _weight
from .sweep import SolveContext, exact_without_batch, register_solver

log = logging.getLogger("wganlab.rescale")


@torch.no_grad()
def input_mean_squares(critic: nn.Module, layers: list[nn.Module],
                       batch: Tensor) -> dict[int, Tensor]:
    """Mean square of each layer's input per input feature (Linear) or channel (ConvNd),
    from one forward pass in eval mode (no batch-norm statistics are updated)."""
    out: dict[int, Tensor] = {}
    hooks = []

    def hook(m, args):
        x = args[0].detach()
        dims = [0] + list(range(2, x.dim())) if isinstance(m, nn.modules.conv._ConvNd) else \
            list(range(x.dim() - 1))
        out[id(m)] = x.square().mean(dims)
    for m in set(layers):
        hooks.append(m.register_forward_pre_hook(hook))
    try:
        with evaluating(critic):
            critic(batch)
    finally:
        for h in hooks:
            h.remove()
    return out


def _in_weights(ctx: SolveContext, ms: Tensor) -> Tensor:
    """Weights shaped like ``ctx.a``: E[x_j^2] for the weight entries, 1 for the bias."""
    w = _weight(ctx.pair.layer_in)
    has_bias = "bias" in ctx.params and ctx.pair.layer_in.bias is not None
    has_weight = "weight" in ctx.params
    per = ms.view(1, -1, *([1] * (w.dim() - 2))).expand(1, *w.shape[1:])
    if not has_bias:
        return per if has_weight else ms.new_zeros(1, 0)
    parts = ([per.reshape(1, -1)] if has_weight else []) + [ms.new_ones(1, 1)]
    return torch.cat(parts, 1)


def _out_weights(ctx: SolveContext, ms: Tensor) -> Tensor:
    """Weights shaped like ``ctx.b`` ([U, K, group] or [U, K, k...]): E[h^2] of the input."""
    pair = ctx.pair
    w = _weight(pair.layer_out)
    if w.dim() == 2:
        return ms.view(pair.units, 1, pair.group)
    return ms.view(pair.units, *([1] * (w.dim() - 1)))


@register_solver("function", capabilities=("uses_batch",))
def function_solver(ctx: SolveContext) -> Tensor:
    fallback = exact_without_batch(ctx, "function")
    if fallback is not None:
        return fallback
    if "ms" not in ctx.cache:
        ctx.cache["ms"] = input_mean_squares(ctx.critic, _pairs_layers(ctx), ctx.batch)
    ms = ctx.cache["ms"]
    pair = ctx.pair
    ms_in, ms_out = ms[id(pair.layer_in)].to(ctx.a.dtype), ms[id(pair.layer_out)].to(ctx.a.dtype)
    d = solvers.exact(ctx.a, ctx.b, ctx.l_in, ctx.l_out, wa=_in_weights(ctx, ms_in),
                      wb=_out_weights(ctx, ms_out), tol=ctx.options.get("tol"))
    # the next layer now sees h / d
    ms[id(pair.layer_out)] = ms[id(pair.layer_out)] / d.repeat_interleave(pair.group).square()
    return d


def _pairs_layers(ctx: SolveContext) -> list[nn.Module]:
    pairs = ctx.cache.get("pairs") or [ctx.pair]
    return [m for p in pairs for m in (p.layer_in, p.layer_out)]
