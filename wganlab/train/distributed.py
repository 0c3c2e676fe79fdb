"""Several processes training one WGAN: data parallelism on ``torch.distributed``.

Launch with PyTorch's own launcher (``torchrun --nproc_per_node=N -m wganlab train ...``); it
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``), which
:func:`init_from_env` reads. The backend follows the device: ``gloo`` on CPU, ``nccl`` on CUDA
(one GPU per process, ``cuda:LOCAL_RANK``).

What a run of N processes does, so that it trains the same model as one process would:

- **data**: the configured ``data.batch_size`` B stays the *global* batch; rank r takes its
  slice of B/N samples of the same global batch (the streams in :mod:`wganlab.data` shard it).
  The latent noise is drawn the same way: every rank draws the global batch's z from the same
  seeded generator and keeps its slice. The generator step's batch is B/N per rank likewise.
- **gradients**: after each ``backward()`` the trainer calls :meth:`Replicas.sync_grads`, one
  flattened ``all_reduce`` (sum) divided by N. Each rank's loss is a mean over its B/N samples
  and ``mean over B = (1/N) * sum over ranks of the mean over B/N``, so the averaged gradient
  is exactly the gradient of the global-batch loss (up to float summation order).
  Why not ``DistributedDataParallel``: the gradient penalties differentiate the critic twice
  (``autograd.grad(create_graph=True)`` on the inputs, then ``backward()``), and the critic
  runs several forward passes per backward (the loss, the penalty, the generator step with
  the critic frozen). DDP's reducer expects one forward per backward with gradients reaching
  ``.grad`` once, and does not support ``autograd.grad``; an explicit all-reduce after
  ``backward()`` sees the final ``.grad`` whatever graph produced it. The cost is that the
  communication does not overlap the backward pass (DDP buckets do); for these models (well
  under 10 M parameters) that is one small message per step.
- **randomness**: all ranks seed identically. The gradient penalties draw one mixing factor per
  sample from the global torch generator; :meth:`Replicas.global_draws` makes rank r's factors
  its slice of the factors the global batch would have drawn (exact on CPU, see there), and
  leaves every rank's generator where one process would have left it.
- **projections** (clip, invclip, sn's power iteration) are deterministic functions of the
  weights, so every rank applies the same one to the same weights. Data-dependent rescaling
  solvers (``function``, ``output``) get the global batch (:meth:`Replicas.global_batch`).
  :meth:`Replicas.check_replicas` verifies at every log step that all ranks hold bitwise
  identical weights and stops the run if they do not.
- **outputs**: metrics, samples and checkpoints are written by rank 0 only; the logged losses
  and Wasserstein estimate are averaged over the ranks (= the global batch's values); the
  constraints' own diagnostics are rank 0's.
- **control flow** that depends on the clock (time budgets, the checkpoint signal) is agreed
  over the ranks, so no rank leaves the loop while another waits in a collective.

Known limits: batch norm in the generator (Table I/II generators) normalises with per-rank
statistics on CPU (PyTorch's ``SyncBatchNorm`` is CUDA-only), so an N-process CPU run of those
generators is not the one-process run; on CUDA the generator's batch norms are converted to
``SyncBatchNorm`` (global statistics, exact). ``gp-adaptive`` weighs each rank's penalty by that
rank's measured penalty (not the global one).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol

import torch
import torch.distributed as dist
from torch import nn

from ..errors import TrainingError

log = logging.getLogger("wganlab")

__all__ = ["Launch", "from_env", "backend_for", "init_from_env", "shutdown", "Replicas",
           "fingerprint", "uses_batch", "main_value", "barrier"]


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch."""
    rank: int
    world: int
    local_rank: int


def from_env(environ: Optional[dict] = None) -> Optional[Launch]:
    """The launch torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``), or None when the process was not started by a launcher."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError as e:
        raise ValueError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({e})") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent launch: RANK={rank}, WORLD_SIZE={world}, "
                         f"LOCAL_RANK={local}")
    return Launch(rank, world, local)


def backend_for(device: torch.device | str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for everything else (CPU)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(device: str, batch_size: Optional[int] = None) -> tuple[int, int, str]:
    """Join the process group torchrun describes; returns ``(rank, world, device)``.

    ``device`` is the configured ``cpu|cuda|auto``; under a multi-process launch on CUDA the
    returned device is this process's GPU, ``cuda:LOCAL_RANK``. Without a launcher (or with
    ``WORLD_SIZE=1``) nothing is initialised and ``(0, 1, device)`` comes back. The global
    ``batch_size``, when given, must divide by the number of processes.
    """
    launch = from_env()
    if launch is None or launch.world == 1:
        return 0, 1, device
    if batch_size is not None and batch_size % launch.world:
        raise ValueError(f"data.batch_size={batch_size} is the global batch and must divide by "
                         f"the {launch.world} processes")
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if want_cuda:
        if not torch.cuda.is_available():
            raise ValueError("train.device=cuda but no CUDA device is available; use cpu or auto")
        if launch.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={launch.local_rank} but this node has only "
                             f"{torch.cuda.device_count()} GPU(s): start at most that many "
                             "processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(launch.local_rank)
        device = f"cuda:{launch.local_rank}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
        atexit.register(shutdown)
    return launch.rank, launch.world, device


def shutdown() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class SignalHolder(Protocol):
    """Something with a pending stop signal (a checkpointer: checkpoint_schedule.py)."""
    signal: Optional[int]


class Replicas:
    """The trainer's view of its sibling processes. Every method is a no-op (or the identity)
    with one process, so the single-process loop pays nothing.

    Collectives on model tensors (gradients, losses, weights) use the default group; small
    control flags use a CPU ``gloo`` group so that, under ``nccl``, agreeing on a flag never
    waits for the GPU.
    """

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world
        self.active = world > 1
        self._bn_buffers: list[nn.Module] = []
        self.control = None
        if not self.active:
            return
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(f"world={world} needs torch.distributed initialised first: launch "
                               "with torchrun (the CLI calls wganlab.train.distributed."
                               "init_from_env) or call torch.distributed.init_process_group")
        if dist.get_world_size() != world or dist.get_rank() != rank:
            raise RuntimeError(f"Trainer(rank={rank}, world={world}) but the process group has "
                               f"rank {dist.get_rank()} of {dist.get_world_size()}")
        if dist.get_backend() != "gloo":
            self.control = dist.new_group(backend="gloo")  # every rank calls this, in order

    # -- models -----------------------------------------------------------------------------
    def prepare_generator(self, generator: nn.Module, device: torch.device) -> nn.Module:
        """Batch norm across ranks: ``SyncBatchNorm`` on CUDA; on CPU (where PyTorch has no
        SyncBatchNorm) per-rank statistics, with the running averages averaged over the ranks
        after each generator step (:meth:`after_generator_step`)."""
        if not self.active:
            return generator
        norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and not isinstance(m, nn.SyncBatchNorm)]
        if not norms:
            return generator
        if device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(generator)
        if self.rank == 0:
            log.warning("the generator has batch norm: on CPU each of the %d processes "
                        "normalises with its own slice's statistics (PyTorch's SyncBatchNorm "
                        "needs CUDA), so this run is not the one-process run; running "
                        "statistics are averaged over the processes", self.world)
        self._bn_buffers = norms
        return generator

    def after_generator_step(self) -> None:
        """Average batch-norm running statistics over the ranks (CPU multi-process only).
        EMA updates are linear, so this is the EMA of the rank-averaged batch statistics."""
        if not self._bn_buffers:
            return
        bufs = [b for m in self._bn_buffers for b in (m.running_mean, m.running_var)
                if b is not None]
        if bufs:
            flat = torch.cat([b.reshape(-1) for b in bufs])
            dist.all_reduce(flat)
            flat.div_(self.world)
            _unflatten_into(flat, bufs)

    # -- the hot loop -----------------------------------------------------------------------
    def sync_grads(self, module: nn.Module) -> None:
        """Average ``module``'s gradients over the ranks: one all-reduce of all of them
        flattened (per dtype). Call after ``backward()``, before ``optimizer.step()``."""
        if not self.active:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in module.parameters():
            if p.grad is not None:
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat.div_(self.world)
            _unflatten_into(flat, grads)

    @contextlib.contextmanager
    def global_draws(self, n: int, like: torch.Tensor, active: bool = True) -> Iterator[None]:
        """Around a call that draws ``n`` uniform numbers (one per local sample, as the
        gradient penalties' interpolation factors do) from the global torch generator: rank r
        draws the slice ``[r*n, (r+1)*n)`` of the ``N*n`` numbers the global batch would have
        drawn, and afterwards every rank's generator stands where one process drawing ``N*n``
        would have left it.

        Exact on CPU, whose Mersenne-Twister draws one 32-bit word per float32 (two per
        float64), in order, so skipping ``r*n`` draws lands on the slice. On CUDA (counter-based
        Philox) the skipped draw still gives each rank different factors and keeps the ranks'
        generators equal, but the factors are not the one-process run's.
        """
        if not (self.active and active):
            yield
            return
        device, dtype = like.device, like.dtype if like.is_floating_point() else torch.float32
        gen = (torch.cuda.default_generators[device.index if device.index is not None
                                             else torch.cuda.current_device()]
               if device.type == "cuda" else torch.default_generator)
        state = gen.get_state()
        if self.rank:
            torch.rand(self.rank * n, dtype=dtype, device=device)
        try:
            yield
        finally:
            gen.set_state(state)
            torch.rand(self.world * n, dtype=dtype, device=device)

    def global_batch(self, x: torch.Tensor) -> torch.Tensor:
        """The global batch from every rank's slice (all-gather, rank order). Each rank's
        ``x`` is ``[real_r; fake_r]``; the result is ``[real; fake]`` of the global batch."""
        if not self.active:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        half = x.shape[0] // 2
        return torch.cat([p[:half] for p in parts] + [p[half:] for p in parts])

    # -- agreement --------------------------------------------------------------------------
    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank (a control-group all-reduce)."""
        if not self.active:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def from_main(self, flag: bool) -> bool:
        """Rank 0's value of ``flag`` on every rank."""
        if not self.active:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.broadcast(t, 0, group=self.control)
        return bool(t.item())

    def agree_signal(self, holder: SignalHolder) -> None:
        """Give ``holder.signal`` (a checkpointer's pending stop signal, set asynchronously by
        its handler) to every rank if any rank has one, so that all ranks stop at the same
        generator step. Never clears a signal (the handler may set it at any moment)."""
        if not self.active:
            return
        t = torch.tensor([holder.signal or 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        agreed = int(t.item())
        if agreed and holder.signal is None:
            holder.signal = agreed

    # -- log steps --------------------------------------------------------------------------
    def mean_(self, values: dict[str, torch.Tensor]) -> None:
        """Replace each scalar tensor in ``values`` by its mean over the ranks (one
        all-reduce). The keys must be the same on every rank."""
        if not self.active or not values:
            return
        keys = sorted(k for k, v in values.items() if isinstance(v, torch.Tensor))
        flat = torch.stack([values[k].detach().reshape(()).float() for k in keys])
        dist.all_reduce(flat)
        flat.div_(self.world)
        for k, v in zip(keys, flat):
            values[k] = v

    def check_replicas(self, *modules: nn.Module) -> None:
        """Raise if the ranks do not hold bitwise identical parameters and buffers."""
        if not self.active:
            return
        # CPU batch norm's running statistics are per rank between two generator steps
        skip = {id(b) for m in self._bn_buffers for b in (m.running_mean, m.running_var)}
        fp = fingerprint(*modules, skip=skip)
        both = torch.cat([fp, -fp])
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        hi, lo = both[:len(fp)], -both[len(fp):]
        if not torch.equal(hi, lo):
            raise TrainingError("the processes' model weights differ (they must stay identical "
                                "replicas): a projection or solver is not deterministic across "
                                "ranks, or a rank was restored from a different checkpoint")


def fingerprint(*modules: nn.Module, skip: frozenset | set = frozenset()) -> torch.Tensor:
    """A float64 summary of modules' floating parameters and buffers (but those whose ``id`` is
    in ``skip``), equal for equal weights: per tensor, the sum and the sum weighted by a fixed
    ramp (order-sensitive)."""
    out = []
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if not t.is_floating_point() or id(t) in skip:
                continue
            v = t.detach().reshape(-1).double()
            ramp = torch.linspace(1.0, 2.0, v.numel(), dtype=torch.float64, device=v.device)
            out += [v.sum(), (v * ramp).sum()]
    return torch.stack(out) if out else torch.zeros(1, dtype=torch.float64)


def _unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def uses_batch(constraint) -> bool:
    """Whether a constraint's projection depends on the observed batch (the data-weighted
    rescaling solvers), so that every rank must observe the global batch to stay identical."""
    parts = getattr(constraint, "parts", None)
    if parts is not None:
        return any(uses_batch(p) for p in parts)
    return bool(getattr(constraint, "uses_batch", False))


def main_value(value):
    """Rank 0's ``value`` (any picklable object) on every rank; the value itself with one
    process. For decisions a process makes alone, e.g. a default run directory named after
    the clock."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (nothing to wait for with one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
