"""One entry point for the trainer and the CLI: ``evaluate`` dispatches toy vs image data and
returns flat ``eval/...`` floats; ``format_table`` prints them beside their references."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from ..plugins import data_spec
from ..config import DataConfig
from ..data import load_images
from ..models.mode import evaluating
from .evaluator import Evaluator, evaluator_for
from .images import RealReference, as_images, content_hash, real_reference, score_images
from .meta import BOOKKEEPING, METRICS, REFERENCES, reference_key
from .toy import toy_metrics

Samples = Union[torch.Tensor, Callable[[int], torch.Tensor]]

#: default number of generated samples (TrainConfig.eval_samples has the same default)
DEFAULT_SAMPLES = 2000

# data key -> sample size -> (evaluator, real reference, image shape); the real side is kept
# instead of the images themselves so periodic evaluation does not hold a second copy of the data
_PREPARED: dict[tuple, tuple[Evaluator, RealReference, torch.Size]] = {}


def _data_key(cfg: DataConfig) -> tuple:
    folder = str(Path(cfg.dir).resolve()) if cfg.dir else None
    return cfg.name, folder, cfg.image_size


def _prepare(cfg: DataConfig, n: int, directory: str | Path | None
             ) -> tuple[Evaluator, RealReference, torch.Size]:
    key = (_data_key(cfg), n, str(directory))
    if key not in _PREPARED:
        full = dataclasses.replace(cfg, limit=None)  # judge against the whole split
        train, test = load_images(full, "train"), load_images(full, "test")
        ev = evaluator_for(train, test, directory, data_hash=content_hash(train))
        _PREPARED[key] = (ev, real_reference(train, test, ev, n, directory),
                          train.images.shape[1:])
    return _PREPARED[key]


def draw(samples: Samples, n: Optional[int]) -> torch.Tensor:
    """The samples: a tensor as given (its first ``n`` rows), or ``n`` from a sampler."""
    if callable(samples):
        n = DEFAULT_SAMPLES if n is None else n
        x = samples(n)
    else:
        x = samples if n is None else samples[:n]
    x = torch.as_tensor(x).detach().cpu()
    if n is not None and len(x) < n:
        raise ValueError(f"asked for {n} samples, got {len(x)}")
    return x


def evaluate(samples: Samples, data_cfg: DataConfig, n_samples: Optional[int] = None,
             seed: int = 0, cache: str | Path | None = None) -> dict[str, float]:
    """All metrics of generated samples for the data a config names, as ``eval/...`` floats.

    ``samples`` is a tensor or a function ``n -> tensor`` (see :func:`generator_sampler`).
    Toy data: exact W1 (+ its finite-sample baseline) and, for the Gaussian mixtures, mode
    coverage. Images: classifier-feature metrics, each with its ``_ref`` from held-out real
    data. ``seed`` fixes the real toy sample and KID's subsets; ``cache`` overrides the cache
    folder. The first image evaluation of a data set trains and caches the classifier."""
    x = draw(samples, n_samples)
    if data_spec(data_cfg.name).toy:
        return toy_metrics(x.reshape(len(x), -1), data_cfg.name, seed, data_cfg.toy_std)
    ev, real, shape = _prepare(data_cfg, len(x), cache)
    return score_images(as_images(x, torch.empty(0, *shape)), ev, real, seed)


def generator_sampler(generator: torch.nn.Module, z_dim: int, seed: int = 0,
                      batch_size: int = 1000) -> Callable[[int], torch.Tensor]:
    """``n -> samples`` from a generator with z ~ N(0, I) drawn from a private seeded generator
    (the same latents at every evaluation, the global RNG untouched), in eval mode (batch norm
    uses its running statistics), restoring each submodule's mode afterwards."""
    def sample(n: int) -> torch.Tensor:
        device = next(generator.parameters()).device
        g = torch.Generator().manual_seed(seed)
        out = []
        with evaluating(generator), torch.no_grad():
            for s in range(0, n, batch_size):
                z = torch.randn(min(batch_size, n - s), z_dim, generator=g)
                out.append(generator(z.to(device)).float().cpu())
        return torch.cat(out)
    return sample


# ----------------------------------------------------------------------------- printing

#: bookkeeping keys and their references: shown beside a metric's value, never as a row
_HIDDEN = BOOKKEEPING | {"kid_std_ref"}


def _fmt(v: float) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.3e}"


def format_table(results: dict[str, float]) -> str:
    """A plain-text table: metric, value, the real-data reference, which way is better."""
    vals = {k.removeprefix("eval/"): v for k, v in results.items()}
    rows = [("metric", "value", "real ref", "better", "")]
    for key, v in vals.items():
        if key in REFERENCES or key in _HIDDEN or (key.endswith("_ref") and key[:-4] in vals):
            continue
        info = METRICS.get(key)
        desc, better = (info.description, info.better) if info else ("", "")
        ref_key = reference_key(key)
        value, ref = _fmt(v), _fmt(vals.get(ref_key)) if ref_key in vals else "-"
        if key == "kid" and "kid_std" in vals:
            value += f" ± {_fmt(vals['kid_std'])}"
            if "kid_std_ref" in vals:
                ref += f" ± {_fmt(vals['kid_std_ref'])}"
        if key == "modes_hit" and "modes_total" in vals:
            value += f" / {_fmt(vals['modes_total'])}"
        rows.append((key, value, ref, better, desc))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = {"n": "generated", "real_n": "real training sample", "ref_n": "held-out test images"}
    sizes = [f"{_fmt(vals[k])} {note}" for k, note in notes.items() if k in vals]
    if sizes:
        lines.append("samples: " + ", ".join(sizes))
    return "\n".join(line.rstrip() for line in lines)
