"""Per-sample sensitivities of a critic's weight layers, for data-weighted solvers (the
``output`` solver): each layer's input and the gradient that a backward pass delivers at its
output, taken from the critic step's own forward/backward when it was seen, else from a
forward/backward of the solver's own.

:class:`ActivationCapture` owns its forward hooks: they stay while it is open (a solver needs
the *next* critic step recorded, so its owner keeps it across steps) and are removed by
:meth:`~ActivationCapture.close`, at the end of a ``with`` block, or when the capture is
garbage collected (its owner dropped). A deep copy of the critic copies the hooks, but they only
record the modules they were installed on (the copy's calls are ignored).

The loss being ``-(mean f(real) - mean f(fake))`` over ``batch = cat([real, fake])`` (B each),
the captured gradient of sample n is ``-delta_n / B`` (real) or ``+delta_n / B`` (fake), delta
being df/d(pre-activation); :func:`from_capture` recovers delta by multiplying by ``-B`` /
``+B``. A forward is used only if its input equals the observed batch (or one of its halves):
the forward on a penalty's interpolates (GP/LP) or the generator's step is never mistaken for
it, and the gradients are taken at that forward's own outputs, so a penalty added to the loss
does not contaminate them (R1's forward on real images that require grad is a separate call).
"""
from __future__ import annotations

import weakref
from collections import deque
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from ..models.mode import evaluating


class _Record:
    """One forward call of the critic: each layer's input and the gradient at its output."""
    __slots__ = ("x", "g", "bad")

    def __init__(self, n: int):
        self.x: list[Optional[Tensor]] = [None] * n
        self.g: list[Optional[Tensor]] = [None] * n
        self.bad = False

    def complete(self) -> bool:
        return not self.bad and all(t is not None for t in self.x) and \
            all(t is not None for t in self.g)


def _remove(handles: list) -> None:
    for h in handles:
        h.remove()


class ActivationCapture:
    """Forward hooks on ``layers`` (in forward order) that keep, for every forward call with
    grad enabled, each layer's input (detached: autograd keeps it anyway) and the gradient
    that the following backward pass delivers at its output (a tensor hook). The last ``keep``
    calls are kept. No copies are made; the overhead is a few Python calls per layer.

    The hooks are removed by :meth:`close` (or leaving ``with ActivationCapture(...)``), or
    when the capture is garbage collected."""

    def __init__(self, layers: list[nn.Module], keep: int = 8):
        self.layers = list(layers)
        self._ids = {id(m): k for k, m in enumerate(self.layers)}
        self.records: deque[_Record] = deque(maxlen=keep)
        self.enabled = True
        ref = weakref.ref(self)  # the hooks must not keep the capture (and its owner) alive

        def hook(m, args, out):
            cap = ref()
            if cap is not None:
                cap._forward(m, args, out)
        handles = [m.register_forward_hook(hook) for m in self.layers]
        self._finalizer = weakref.finalize(self, _remove, handles)

    def covers(self, layers: list[nn.Module]) -> bool:
        """Whether this capture hooks exactly ``layers``, in this order."""
        return len(layers) == len(self.layers) and all(a is b for a, b in zip(layers, self.layers))

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Remove the hooks and forget the records (idempotent)."""
        self._finalizer()
        self.records.clear()

    def __enter__(self) -> "ActivationCapture":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Record nothing inside the block (e.g. a solver's own pass)."""
        was, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = was

    def _forward(self, m: nn.Module, args, out) -> None:
        if not (self.enabled and torch.is_grad_enabled() and isinstance(out, Tensor)
                and out.requires_grad and args and isinstance(args[0], Tensor)):
            return
        k = self._ids.get(id(m))
        if k is None or self.layers[k] is not m:
            return
        if k == 0:
            self.records.append(_Record(len(self.layers)))
        if not self.records:
            return
        rec = self.records[-1]
        if rec.x[k] is not None:        # a layer called twice in one forward: unusable
            rec.bad = True
            return
        rec.x[k] = args[0].detach()

        def grad_hook(g: Tensor, rec=rec, k=k) -> None:
            rec.g[k] = g.detach() if rec.g[k] is None else rec.g[k] + g.detach()
        out.register_hook(grad_hook)


def subsample(n_batch: int, limit: Optional[int], device) -> Tensor:
    """Evenly spaced sample indices, half from each half of the batch (no RNG is consumed)."""
    if limit is None or limit >= n_batch:
        return torch.arange(n_batch, device=device)
    half = n_batch // 2
    k = max(1, limit // 2)
    pick = torch.div(torch.arange(k, device=device) * half, k, rounding_mode="floor")
    return torch.cat([pick, pick + half])


def match(cap: ActivationCapture, batch: Tensor) -> Optional[list[tuple[_Record, int]]]:
    """Records covering ``batch``: [(record, row offset in batch)], or None."""
    N = batch.shape[0]
    flat = batch.reshape(N, -1)
    half = N // 2
    found: dict[int, _Record] = {}
    # in call order: the loss's own forward comes before a penalty's (R1 re-runs the real
    # half with grad enabled: the first matching call is the loss's)
    for rec in cap.records:
        if not rec.complete():
            continue
        x0 = rec.x[0]
        n = x0.shape[0]
        if x0.numel() != n * flat.shape[1] or x0.dtype != batch.dtype:
            continue
        x0 = x0.reshape(n, -1)
        if n == N and not found and torch.equal(x0, flat):
            return [(rec, 0)]
        if n == half and N == 2 * half:
            for off in (0, half):
                if off not in found and torch.equal(x0, flat[off:off + half]):
                    found[off] = rec
        if len(found) == 2:
            return [(found[0], 0), (found[half], half)]
    return None


def from_capture(cap: ActivationCapture, batch: Tensor, idx: Tensor
                 ) -> Optional[tuple[list[Tensor], list[Tensor]]]:
    """(inputs, delta) per layer on the samples ``idx`` of ``batch``, from the captured
    forward/backward of that batch; None when none was seen."""
    recs = match(cap, batch)
    if recs is None:
        return None
    N = batch.shape[0]
    half = N // 2
    # df_n = -B * dloss/dout_n (real half), +B * dloss/dout_n (fake half)
    sign = torch.where(idx < half, -float(half), float(half))
    xs, gs = [], []
    for k in range(len(cap.layers)):
        if len(recs) == 1:
            x, g = recs[0][0].x[k].index_select(0, idx), recs[0][0].g[k].index_select(0, idx)
        else:
            parts = [(r, off, idx[(idx >= off) & (idx < off + half)] - off) for r, off in recs]
            x = torch.cat([r.x[k].index_select(0, i) for r, _, i in parts])
            g = torch.cat([r.g[k].index_select(0, i) for r, _, i in parts])
        xs.append(x)
        gs.append(g * sign.to(g.dtype).view(-1, *([1] * (g.dim() - 1))))
    return xs, gs


def own_pass(critic: nn.Module, layers: list[nn.Module], batch: Tensor, idx: Tensor
             ) -> tuple[list[Tensor], list[Tensor]]:
    """delta = df_n/d(out) by a forward + backward of sum_n f(x_n) on the chosen samples
    (eval mode; parameters' .grad untouched; its hooks removed before it returns)."""
    xs: list[Optional[Tensor]] = [None] * len(layers)
    outs: list[Optional[Tensor]] = [None] * len(layers)
    pos = {id(m): k for k, m in enumerate(layers)}

    def hook(m, args, out):
        k = pos.get(id(m))
        if k is not None and xs[k] is None:
            xs[k], outs[k] = args[0].detach(), out
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with evaluating(critic), torch.enable_grad():
            x = batch.index_select(0, idx).detach().requires_grad_(True)
            f = critic(x)
            gs = torch.autograd.grad(f.sum(), outs)
    finally:
        _remove(handles)
    return xs, [g.detach() for g in gs]
