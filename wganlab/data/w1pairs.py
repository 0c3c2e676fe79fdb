"""Pairs of distributions whose Wasserstein-1 distance is known, the yardstick of a critic's
W1 estimate (``wganlab w1bench``).

- ``lines-θ``: the parallel lines of Angermann n.d. (WGAN lecture slides) P0 = (0, Z),
  Pθ = (θ, Z), Z ~ U[0, 1]: W1 = |θ| (move every point sideways; nothing cheaper exists since
  the first coordinates differ by θ).
- ``gauss-shift``, ``gauss-scale``: N(0, 1) vs N(μ, σ²) in 1-D, where W1 = ∫₀¹ |F⁻¹(u) − G⁻¹(u)| du
  (the monotone coupling is optimal on the line), by numerical quadrature.
- ``sphere-128``: a point mass at the origin vs the uniform distribution on the unit sphere of
  R^128: every coupling moves each unit of mass by exactly 1, so W1 = 1.
- ``8v25-gaussians``: the 8- and 25-Gaussian mixtures (std 0.02); W1 by POT's exact solver on
  large samples (no closed form; the mean of a few sample pairs, with its spread).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .toy import sample_toy

Sampler = Callable[[int, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class W1Pair:
    """Two samplers (``n`` points of shape (n, dim) each, float32) and the W1 between them."""
    name: str
    dim: int
    sample_p: Sampler = field(repr=False)
    sample_q: Sampler = field(repr=False)
    #: the exact W1; None: computed by :func:`wganlab.report.w1bench.pot_w1` on large samples
    w1: Optional[float] = None


def gaussian_w1(mu: float, sigma: float) -> float:
    """W1(N(0, 1), N(mu, sigma²)) = ∫₀¹ |Φ⁻¹(u) − (mu + sigma Φ⁻¹(u))| du, by adaptive
    quadrature over u (the integrand has a kink where the quantile functions cross)."""
    from scipy import integrate
    from scipy.stats import norm

    f = lambda u: abs((1.0 - sigma) * norm.ppf(u) - mu)  # noqa: E731
    kinks = [] if sigma == 1 else [float(norm.cdf(mu / (1.0 - sigma)))]
    value, _ = integrate.quad(f, 0.0, 1.0, points=kinks or None, limit=200, epsabs=1e-10)
    return float(value)


def _lines(theta: float) -> W1Pair:
    def at(x0: float) -> Sampler:
        def sample(n: int, g: torch.Generator) -> torch.Tensor:
            z = torch.rand(n, 1, generator=g)
            return torch.cat([torch.full_like(z, x0), z], 1)
        return sample
    return W1Pair(f"lines-{theta:g}", 2, at(0.0), at(theta), abs(theta))


def _gauss(name: str, mu: float, sigma: float) -> W1Pair:
    def normal(m: float, s: float) -> Sampler:
        return lambda n, g: m + s * torch.randn(n, 1, generator=g)
    return W1Pair(name, 1, normal(0.0, 1.0), normal(mu, sigma), gaussian_w1(mu, sigma))


def _sphere(dim: int) -> W1Pair:
    def sphere(n: int, g: torch.Generator) -> torch.Tensor:
        x = torch.randn(n, dim, generator=g)
        return x / x.norm(dim=1, keepdim=True)
    return W1Pair(f"sphere-{dim}", dim, sphere, lambda n, g: torch.zeros(n, dim), 1.0)


def _mixtures() -> W1Pair:
    return W1Pair("8v25-gaussians", 2, lambda n, g: sample_toy("8gaussians", n, g),
                  lambda n, g: sample_toy("25gaussians", n, g))


def w1_pairs() -> dict[str, W1Pair]:
    """Every benchmark pair by name, in table order."""
    pairs = [_lines(t) for t in (0.1, 0.5, 1.0, 2.0)]
    pairs += [_gauss("gauss-shift", 1.0, 1.0), _gauss("gauss-scale", 0.5, 2.0), _sphere(128),
              _mixtures()]
    return {p.name: p for p in pairs}
