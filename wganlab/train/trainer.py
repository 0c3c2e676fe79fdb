"""The WGAN training loop: alternating critic and generator steps, nothing constraint-specific.

Read top to bottom: ``Trainer.run`` -> ``_critic_step`` / ``_generator_step`` -> logging,
samples, checkpoints. The Lipschitz constraint enters only through its interface
(:mod:`wganlab.constraints.base`).
"""
from __future__ import annotations

import logging
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..atomic import atomic_write
from ..config import Config, dump_config
from ..plugins import data_spec
from ..constraints import build_constraint, critic_activation
from ..data import fingerprint, make_stream, sample_toy
from ..errors import WganlabError, TrainingError  # noqa: F401
from ..metrics.lipschitz import lipschitz_diagnostics
from ..models import build_models
from ..models.mode import evaluating
from .checkpoint_schedule import Checkpointer
from .distributed import Replicas, uses_batch
from .guard import check_finite
from .images import image_grid, save_image_grid, save_toy_scatter
from .logger import MetricsLogger
from .optim import make_optimizer, resolve_optimizer
from .precision import amp_dtype, autocast
from .rundir import locked
from .threads import resolve_threads

log = logging.getLogger("wganlab")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device=cuda but no CUDA device is available; use cpu or auto")
    return torch.device(name)


@dataclass
class Budget:
    """When to stop: the first limit reached wins. Times exclude evaluation and sampling."""
    generator_steps: Optional[int]
    critic_steps: Optional[int]
    seconds: Optional[float]
    cpu_seconds: Optional[float]

    def reached(self, g: int, c: int, seconds: float, cpu: float) -> bool:
        return ((self.generator_steps is not None and g >= self.generator_steps)
                or (self.critic_steps is not None and c >= self.critic_steps)
                or (self.seconds is not None and seconds >= self.seconds)
                or (self.cpu_seconds is not None and cpu >= self.cpu_seconds))


class Clock:
    """Training wall and CPU time with paused intervals (evaluation, sampling, checkpoints)
    taken out, so that budgets measure training alone."""

    def __init__(self, offset_wall: float = 0.0, offset_cpu: float = 0.0):
        self._wall0 = time.perf_counter() - offset_wall
        self._cpu0 = time.process_time() - offset_cpu
        self._paused_at: Optional[tuple[float, float]] = None

    def wall(self) -> float:
        return time.perf_counter() - self._wall0

    def cpu(self) -> float:
        return time.process_time() - self._cpu0

    def __enter__(self):  # pause
        self._paused_at = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc):
        w, c = self._paused_at
        self._wall0 += time.perf_counter() - w
        self._cpu0 += time.process_time() - c
        self._paused_at = None


class Trainer:
    """One WGAN run from a validated :class:`Config` into ``run_dir``."""

    def __init__(self, config: Config, run_dir: str | Path, *, rank: int = 0, world: int = 1,
                 device: Optional[str] = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.rank, self.world = rank, world
        self.is_main = rank == 0
        tc = config.train
        threads = resolve_threads(tc.threads, config.model.name)  # threads.py
        if threads:
            torch.set_num_threads(threads)
        self.device = pick_device(device or tc.device)
        seed_everything(config.seed)

        self.toy = data_spec(config.data.name).toy
        #: the data files' identity, stored with checkpoints: a resume on others is refused
        self.data_fingerprint = fingerprint(config.data)
        self.stream = make_stream(config.data, config.seed, rank, world)
        self.generator, self.critic = build_models(
            config.model, config.data, critic_activation(config.model.activation, config.constraint))
        self.generator.to(self.device)
        self.critic.to(self.device)
        #: the sibling processes of a multi-process run; no-ops with one (distributed.py)
        self._dist = Replicas(rank, world)
        self.generator = self._dist.prepare_generator(self.generator, self.device)
        #: bf16 autocast of the forward passes (train.amp; precision.py), or None
        self._amp = amp_dtype(tc.amp, self.device)
        # the constraint binds to the critic before its optimizer exists (sn reparametrises it)
        self.constraint = build_constraint(self.critic, config.constraint)
        self._observe_global = world > 1 and uses_batch(self.constraint)
        default = self.constraint.default_optimizer
        self.optim_specs = {"critic": resolve_optimizer(config.optim.critic, default),
                            "generator": resolve_optimizer(config.optim.generator, default)}
        self.opt_critic = make_optimizer(self.critic, self.optim_specs["critic"])
        self.opt_generator = make_optimizer(self.generator, self.optim_specs["generator"])
        self.noise = torch.Generator(device="cpu").manual_seed(config.seed * 7919 + 1)
        fixed = torch.Generator().manual_seed(12345)
        self.fixed_z = torch.randn(tc.sample_count, config.model.z_dim, generator=fixed)

        self.generator_step = 0
        self.critic_step = 0
        self.clock = Clock()
        self.history: list[dict[str, Any]] = []
        self.budget = Budget(tc.generator_steps, tc.critic_steps, tc.budget_seconds,
                             tc.budget_cpu_seconds)
        #: extra callbacks run at each log step: fn(trainer, record) -> None (eval, checkpoints)
        self.callbacks: list[Callable[["Trainer", dict[str, Any]], None]] = []
        #: the last steps' losses as tensors, read back to the host only at log steps
        self.last_losses: dict[str, torch.Tensor] = {}
        self._last_eval_time, self._last_eval_step = 0.0, -1
        #: checkpoint schedule, resume bookkeeping, SIGINT/SIGTERM (checkpoint_schedule.py)
        self.checkpoints = Checkpointer(self)

    # ------------------------------------------------------------------ schedule
    def n_critic(self, g: int) -> int:
        """Critic steps before generator step ``g``: the warm-up value at first and every
        ``warmup_every``-th step (the original WGAN recipe), else ``n_critic``."""
        tc = self.config.train
        if g < tc.warmup_generator_steps or (tc.warmup_every and g % tc.warmup_every == 0
                                             and tc.warmup_generator_steps > 0):
            return tc.warmup_n_critic
        return tc.n_critic

    def _z(self, n: int) -> torch.Tensor:
        """This rank's ``n`` latent vectors: its slice of the global batch's (every rank draws
        all ``n * world`` from the same generator, so N processes see one process's z)."""
        z = torch.randn(n * self.world, self.config.model.z_dim, generator=self.noise)
        if self.world > 1:
            z = z[self.rank * n:(self.rank + 1) * n]
        return z.to(self.device, non_blocking=True)

    def _autocast(self):
        return autocast(self.device, self._amp)

    # ------------------------------------------------------------------ steps
    def _critic_step(self, diagnose: bool) -> None:
        real = self.stream.next().to(self.device, non_blocking=True)
        with torch.no_grad(), self._autocast():
            fake = self.generator(self._z(len(real))).float()
        self.constraint.prepare()
        batch = torch.cat([real, fake])
        with self._autocast():
            out = self.critic(batch).reshape(-1).float()
        n = len(real)
        w_estimate = out[:n].mean() - out[n:].mean()
        loss = -w_estimate
        with self._autocast(), self._dist.global_draws(n, real, self.constraint.needs_penalty):
            penalty = self.constraint.penalty(real, fake)
        if penalty is not None:
            loss = loss + penalty
        self.opt_critic.zero_grad(set_to_none=True)
        loss.backward()
        self._dist.sync_grads(self.critic)
        self.opt_critic.step()
        self.constraint.observe(self._dist.global_batch(batch) if self._observe_global else batch)
        self.constraint.step(self.opt_critic, diagnose=diagnose)
        self.critic_step += 1
        self.last_losses["w_estimate"] = w_estimate.detach()
        self.last_losses["loss_critic"] = loss.detach()
        if penalty is not None:
            self.last_losses["penalty"] = penalty.detach()
        if diagnose:
            self._last_batch = (real, fake)

    def _generator_step(self) -> None:
        self.critic.requires_grad_(False)
        with self._autocast():
            fake = self.generator(self._z(self.config.data.batch_size // self.world))
            loss = -self.critic(fake).float().mean()
        self.opt_generator.zero_grad(set_to_none=True)
        loss.backward()
        self._dist.sync_grads(self.generator)
        self.opt_generator.step()
        self._dist.after_generator_step()
        self.critic.requires_grad_(True)
        self.generator_step += 1
        self.last_losses["loss_generator"] = loss.detach()

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Train until the budget is spent; returns the last logged record. The run folder
        is locked meanwhile (rank 0 holds it for all ranks): see rundir.py."""
        with locked(self.run_dir) if self.is_main else nullcontext():
            return self._run()

    def _run(self) -> dict[str, Any]:
        tc = self.config.train
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(self.config, self.run_dir / "config.yaml")
            (self.run_dir / "samples").mkdir(exist_ok=True)
            self.logger = MetricsLogger(self.run_dir, tc.tensorboard,
                                        resume_step=self.generator_step)
        bar = self._progress_bar()
        self.clock = Clock(*getattr(self, "_resume_clock", (0.0, 0.0)))
        record: dict[str, Any] = {}
        try:
            self.checkpoints.start()
            self._dist.check_replicas(self.generator, self.critic)
            while not self._done():
                g = self.generator_step
                log_now = (g + 1) % tc.log_every == 0
                for k in range(self.n_critic(g)):
                    self._critic_step(diagnose=log_now and k == 0)
                    if self._done():
                        break
                else:
                    self._generator_step()
                    if bar is not None:
                        bar.update(1)
                    if log_now:
                        record = self._log(bar)
                    if self.generator_step % tc.sample_every == 0:
                        with self.clock:
                            self._write_samples()
                    if self._eval_due():
                        self.evaluate()
                    for cb in self.callbacks:
                        cb(self, record if log_now else {})
                    self._dist.agree_signal(self.checkpoints)  # a stop signal stops all ranks
                    self.checkpoints.after_step(record if log_now else {})
            if self._dist.from_main(not self.history
                                    or self.history[-1]["generator_step"] != self.generator_step):
                record = self._log(bar)
            if (tc.eval_every or tc.eval_seconds) and self._last_eval_step != self.generator_step:
                self.evaluate()
            with self.clock:
                self.checkpoints.final()
                self._write_samples()
                self.save_final()
        finally:
            self.checkpoints.stop()
            if bar is not None:
                bar.close()
            if self.is_main:
                self.logger.close()
        return record

    def _eval_due(self) -> bool:
        tc = self.config.train
        if tc.eval_every and self.generator_step % tc.eval_every == 0:
            return True
        return bool(tc.eval_seconds) and self.clock.wall() - self._last_eval_time >= tc.eval_seconds

    def evaluate(self) -> dict[str, Any]:
        """Score ``train.eval_samples`` generated samples (exact W1 on toy data, classifier
        features on images) and log them as ``eval/...``; its time is kept out of the budget."""
        from ..metrics import evaluate, generator_sampler
        with self.clock:
            sampler = generator_sampler(self.generator, self.config.model.z_dim,
                                        seed=self.config.seed + 424242)
            results = evaluate(sampler, self.config.data, self.config.train.eval_samples,
                               seed=self.config.seed)
        self._last_eval_time = self.clock.wall()
        self._last_eval_step = self.generator_step
        record = {"generator_step": self.generator_step, "critic_step": self.critic_step,
                  "wall_time": round(self.clock.wall(), 4), "cpu_time": round(self.clock.cpu(), 4),
                  **results}
        if self.is_main:
            self.logger.log(record)
            self.history.append(record)
        return record

    def _done(self) -> bool:
        done = self.budget.reached(self.generator_step, self.critic_step, self.clock.wall(),
                                   self.clock.cpu())
        if self.world > 1 and (self.budget.seconds, self.budget.cpu_seconds) != (None, None):
            done = self._dist.any(done)  # clocks differ between processes: stop together
        return done

    def _progress_bar(self):
        tc = self.config.train
        show = tc.progress is True or (tc.progress == "auto" and sys.stderr.isatty())
        if not (show and self.is_main):
            return None
        from tqdm import tqdm
        total = tc.generator_steps
        return tqdm(total=total, initial=self.generator_step, unit="G-step", dynamic_ncols=True)

    # ------------------------------------------------------------------ outputs
    def _log(self, bar=None) -> dict[str, Any]:
        """Read the step's values (the only host sync) and write one record."""
        record: dict[str, Any] = {
            "generator_step": self.generator_step,
            "critic_step": self.critic_step,
            "wall_time": round(self.clock.wall(), 4),
            "cpu_time": round(self.clock.cpu(), 4),
        }
        self._dist.mean_(self.last_losses)  # the global batch's values (a no-op with one process)
        for k, v in self.last_losses.items():
            record[k] = float(v)
        record.update(self.constraint.diagnostics())
        every = self.config.train.diagnostics_every
        batch = getattr(self, "_last_batch", None)
        if every and batch is not None and self.generator_step % every == 0:
            with self.clock:
                record.update(lipschitz_diagnostics(self.critic, *batch))
        # weights, gradients, losses: one sync (guard.py)
        check_finite(self, last_checkpoint=self.checkpoints.last_path)
        self._dist.check_replicas(self.generator, self.critic)
        self._check_finite(record)
        if self.is_main:
            self.logger.log(record)
            self.history.append(record)
        if bar is not None and "w_estimate" in record:
            bar.set_postfix(W=f"{record['w_estimate']:.4g}", refresh=False)
        return record

    def _check_finite(self, record: dict[str, Any]) -> None:
        for key in ("loss_critic", "loss_generator", "w_estimate", "penalty"):
            v = record.get(key)
            if v is not None and not math.isfinite(v):
                net = "generator" if key == "loss_generator" else "critic"
                raise TrainingError(f"non-finite {key}={v} at generator step "
                                    f"{self.generator_step} (critic step {self.critic_step}) "
                                    f"in the {net}")

    @torch.no_grad()
    def sample(self, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Generator samples at ``z`` (default: the fixed latent vectors), in eval mode."""
        with evaluating(self.generator):
            return self.generator((self.fixed_z if z is None else z).to(self.device)).cpu()

    def _write_samples(self) -> None:
        if not self.is_main:
            return
        x = self.sample()
        path = self.run_dir / "samples" / f"step_{self.generator_step:07d}.png"
        if self.toy:
            g = torch.Generator().manual_seed(0)
            real = sample_toy(self.config.data.name, 1000, g, self.config.data.toy_std)
            z = torch.randn(1000, self.config.model.z_dim, generator=g)
            save_toy_scatter(real, self.sample(z), path,
                             f"{self.constraint.name}, generator step {self.generator_step}")
        else:
            save_image_grid(x, path)
            self.logger.add_image("samples", image_grid(x), self.generator_step)

    def save_final(self) -> None:
        """The final weights as safetensors under the run directory, never non-finite ones
        (a run that stops inside a generator step has had no checkpoint check since)."""
        check_finite(self, "final", self.checkpoints.last_path)
        if not self.is_main:
            return
        from safetensors.torch import save_file
        for name, net in (("generator", self.generator), ("critic", self.critic)):
            state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            atomic_write(self.run_dir / f"{name}.safetensors",
                         lambda tmp, state=state: save_file(state, tmp))

    # ------------------------------------------------------------------ state for resume
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs, as tensors and plain data."""
        return {
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_generator": self.opt_generator.state_dict(),
            "opt_critic": self.opt_critic.state_dict(),
            "constraint": self.constraint.state_dict(),
            "stream": self.stream.state_dict(),
            "counters": {"generator_step": self.generator_step,
                         "critic_step": self.critic_step,
                         "wall_time": self.clock.wall(), "cpu_time": self.clock.cpu(),
                         # the evaluation schedule: a resume neither repeats nor skips one
                         "last_eval_step": self._last_eval_step,
                         "last_eval_time": self._last_eval_time},
            "rng": {"noise": self.noise.get_state(), "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state()[1].astype(np.int64).tolist(),
                    "numpy_pos": int(np.random.get_state()[2]),
                    "python": _python_rng_state()},
            "config_digest": self.config.digest(),
            "data": self.data_fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        self.constraint.load_state_dict(state["constraint"])
        self.stream.load_state_dict(state["stream"])
        c = state["counters"]
        self.generator_step, self.critic_step = int(c["generator_step"]), int(c["critic_step"])
        self._resume_clock = (float(c["wall_time"]), float(c["cpu_time"]))
        self._last_eval_step = int(c.get("last_eval_step", -1))      # older checkpoints: none
        self._last_eval_time = float(c.get("last_eval_time", 0.0))
        r = state["rng"]
        self.noise.set_state(r["noise"])
        torch.set_rng_state(r["torch"])
        np.random.set_state(("MT19937", np.asarray(r["numpy"], dtype=np.uint32),
                             int(r["numpy_pos"]), 0, 0.0))
        _set_python_rng_state(r["python"])


def _python_rng_state() -> list[int]:
    version, internal, gauss = random.getstate()
    return list(internal)


def _set_python_rng_state(internal: list[int]) -> None:
    random.setstate((3, tuple(int(v) for v in internal), None))


def train(config: Config, run_dir: str | Path, **kwargs) -> Trainer:
    """Train one run; returns the finished Trainer (weights, history)."""
    trainer = Trainer(config, run_dir, **kwargs)
    trainer.run()
    return trainer
