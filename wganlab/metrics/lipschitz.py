"""How Lipschitz the critic actually is: gradient norms where it matters, the Wasserstein
estimate, and a layer-wise upper bound.

Ground floor: imports nothing from ``wganlab.constraints`` or ``wganlab.train``. The small
gradient helpers here (:func:`interpolate`, :func:`input_grads`, :func:`grad_norms`) are also
what the gradient penalties use, so a penalty and its diagnostic measure the same thing.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..models.mode import evaluating

#: inside the sqrt of the gradient norm: d||g||/dg = g/||g|| is 0/0 = NaN at g = 0
NORM_EPS = 1e-12

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LAYERS = (nn.Linear,) + _CONVS


# ----------------------------------------------------------------------------- gradients

def interpolate(real: torch.Tensor, fake: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random points on the segments between paired real and fake samples.

    One mixing factor per sample, shaped ``[B, 1, 1, ...]`` so it broadcasts over any data
    shape. Both inputs are detached (nothing may flow back to the generator).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape to interpolate, got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}")
    real, fake = real.detach(), fake.detach()
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = torch.rand(shape, device=real.device, dtype=real.dtype, generator=generator)
    return torch.lerp(fake, real, alpha)  # alpha * real + (1 - alpha) * fake


def scores_and_grads(critic: nn.Module, x: torch.Tensor, *,
                     create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's scores ``[B]`` and ``d f(x_i) / d x_i`` flattened to ``[B, D]``.

    Summing the scores gives per-sample gradients because samples do not interact (true for
    critics without batch norm in training mode). ``create_graph=True`` keeps the graph so a
    penalty on the gradients can be trained (double backward); diagnostics pass False. Only the
    input's gradient is computed: the parameters' ``.grad`` fields are never touched.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = critic(x)
        if out.numel() != x.shape[0]:
            raise ValueError(f"the critic must return one score per sample; got output shape "
                             f"{tuple(out.shape)} for a batch of {x.shape[0]}")
        (g,) = torch.autograd.grad(out.sum(), x, create_graph=create_graph)
    return out.reshape(-1), g.flatten(1)


def input_grads(critic: nn.Module, x: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
    """``d f(x_i) / d x_i`` for every sample, flattened to ``[B, D]``."""
    return scores_and_grads(critic, x, create_graph=create_graph)[1]


def grad_norms(grads: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norms of ``[B, D]`` gradients, with ``NORM_EPS`` inside the sqrt,
    in float32 at least (under bf16 autocast the squares must not be summed in bf16)."""
    return torch.sqrt(_wide(grads).pow(2).sum(dim=1) + NORM_EPS)


# ----------------------------------------------------------------------------- layer norms

def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (half precision is too coarse for statistics), float64 kept."""
    return t if t.dtype == torch.float64 else t.float()


def _conv_bound_factor(layer: nn.Module) -> float:
    """sqrt of how many output positions one input position feeds at most: prod ceil(k/s)
    (dilation 1), else prod k. ||conv|| <= this * ||W reshaped to [out, -1]||, because every
    input entry appears in at most that many of the patches the matrix multiplies."""
    n = 1
    for k, s, d in zip(layer.kernel_size, layer.stride, layer.dilation):
        n *= math.ceil(k / s) if d == 1 else k
    return math.sqrt(n)


def conv_operator_norm(layer: nn.Module, input_shape: tuple[int, ...], *,
                       iterations: int = 50, tol: float = 1e-5,
                       generator: Optional[torch.Generator] = None) -> float:
    """Largest singular value of the (bias-free, linear) conv operator on inputs of
    ``input_shape`` (without batch), by power iteration on ``A^T A``; ``A^T`` is the conv's own
    vector-Jacobian product, so stride, padding (any mode), dilation and groups are exact.
    Power iteration approaches the norm from below; it stops when the estimate moves by less
    than ``tol`` (relative) or after ``iterations`` steps."""
    w = layer.weight.detach()
    x = torch.randn((1,) + tuple(input_shape), device=w.device, dtype=w.dtype,
                    generator=generator)
    x = x / x.norm()
    sigma = 0.0
    with torch.enable_grad():
        for _ in range(iterations):
            x.requires_grad_(True)
            y = layer._conv_forward(x, w, None)
            (g,) = torch.autograd.grad(y, x, grad_outputs=y)  # A^T A x
            new = float(y.detach().norm())  # ||A x|| with ||x|| = 1
            x = (g / g.norm().clamp_min(1e-30)).detach()
            if abs(new - sigma) <= tol * new:
                return new
            sigma = new
    return sigma


def spectral_product(critic: nn.Module, input_shapes: Optional[dict[nn.Module, tuple]] = None,
                     *, iterations: int = 50,
                     generator: Optional[torch.Generator] = None) -> float:
    """Product over the critic's Linear/Conv layers of each layer's spectral norm.

    For a plain chain of these layers and 1-Lipschitz activations (ReLU, LeakyReLU with slope
    <= 1, tanh, ELU; not batch norm, not residual sums) this bounds the critic's Lipschitz
    constant from above. Linear: the exact matrix 2-norm (SVD) of the weight the layer uses
    (for a spectrally normalised layer: the normalised one). Conv with a known input size
    (``input_shapes``, recorded by :func:`lipschitz_diagnostics`): the conv operator's own norm
    by power iteration (:func:`conv_operator_norm`); a conv whose input size is unknown:
    the reshaped matrix's norm times :func:`_conv_bound_factor`, a looser but valid bound.
    """
    input_shapes = input_shapes or {}
    prod = 1.0
    with torch.no_grad():
        for layer in critic.modules():
            if not isinstance(layer, _LAYERS):
                continue
            w = layer.weight.detach()
            if isinstance(layer, nn.Linear):
                s = float(torch.linalg.matrix_norm(_wide(w), ord=2))
            elif layer in input_shapes:
                s = conv_operator_norm(layer, input_shapes[layer], iterations=iterations,
                                       generator=generator)
            else:
                s = _conv_bound_factor(layer) * float(
                    torch.linalg.matrix_norm(_wide(w.flatten(1)), ord=2))
            prod *= s
    return prod


def _record_input_shapes(critic: nn.Module, x: torch.Tensor) -> dict[nn.Module, tuple]:
    """The per-sample input shape each Conv layer sees in a forward pass on ``x``."""
    shapes: dict[nn.Module, tuple] = {}

    def hook(mod: nn.Module, args: tuple) -> None:  # must return None: a value replaces args
        shapes.setdefault(mod, tuple(args[0].shape[1:]))

    hooks = [m.register_forward_pre_hook(hook) for m in critic.modules()
             if isinstance(m, _CONVS)]
    try:
        with torch.no_grad():
            critic(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return shapes


# ----------------------------------------------------------------------------- diagnostics

def lipschitz_diagnostics(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, *,
                          seed: int = 0, power_iterations: int = 50) -> dict[str, float]:
    """Scalars describing the Lipschitz constant the critic actually has.

    Keys (all floats):
      ``lipschitz/{interp,real,fake}_{mean,max,p95}``: the per-sample gradient norm
      ``||grad_x f(x)||`` at random interpolates, real and fake samples (a 1-Lipschitz critic
      has all of them <= 1; WGAN-GP drives the interpolates' towards 1);
      ``lipschitz/w_estimate``: ``E f(real) - E f(fake)``, the critic's Wasserstein estimate
      (a true lower bound on W1 only if the critic is 1-Lipschitz);
      ``lipschitz/spectral_product``: see :func:`spectral_product`.

    Runs the critic in eval mode (the deterministic function; spectral norm's power iteration
    does not advance) and restores each submodule's mode. Uses its own random generator seeded
    with ``seed``, so calling it does not change the training run's random stream. Leaves the
    parameters' ``.grad`` untouched. If ``real`` and ``fake`` differ in size, interpolates
    pair the first ``min`` of each.
    """
    with evaluating(critic):
        real, fake = real.detach(), fake.detach()
        n = min(real.shape[0], fake.shape[0])
        if n == 0:
            raise ValueError("lipschitz_diagnostics needs at least one real and one fake sample")
        gen = torch.Generator(device=real.device).manual_seed(seed)
        interp = interpolate(real[:n], fake[:n], generator=gen)
        stats, scores = [], {}
        for name, x in (("interp", interp), ("real", real), ("fake", fake)):
            s, g = scores_and_grads(critic, x, create_graph=False)
            norms = _wide(grad_norms(g))
            stats.append(torch.stack([norms.mean(), norms.max(), torch.quantile(norms, 0.95)]))
            scores[name] = s.detach()
        w_est = _wide(scores["real"]).mean() - _wide(scores["fake"]).mean()
        values = torch.cat(stats + [w_est.reshape(1)]).tolist()  # one device sync
        out: dict[str, float] = {}
        for i, name in enumerate(("interp", "real", "fake")):
            for j, stat in enumerate(("mean", "max", "p95")):
                out[f"lipschitz/{name}_{stat}"] = values[3 * i + j]
        out["lipschitz/w_estimate"] = values[-1]
        shapes = _record_input_shapes(critic, real)
        out["lipschitz/spectral_product"] = spectral_product(
            critic, shapes, iterations=power_iterations, generator=gen)
        return out
