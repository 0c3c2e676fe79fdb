"""Find the rescalable unit pairs of a critic.

A hidden unit i can be rescaled when the layer producing it (Linear or ConvNd: row / output
channel i of its weight, and its bias entry) is followed only by operations that commute with a
positive per-unit scale, then by the next Linear/ConvNd that consumes it (column / input
channel i; after a Flatten, the H*W consecutive columns a channel flattens to). Scaling the
incoming side by 1/d and the outgoing side by d then leaves the critic's function unchanged.

This module only reads the module tree (or the torch.fx graph); it knows nothing of solvers.
"""
from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvarianceError  # noqa: F401  (re-exported: its old home)
from ..models.activations import GroupSort
from .layers import weight_layers

log = logging.getLogger("wganlab.rescale")

LINEAR = (nn.Linear,)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: modules that commute with a positive per-unit (per-channel) scale: phi(a*v) = a*phi(v), a > 0
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.Dropout, nn.Dropout1d,
               nn.Dropout2d, nn.Dropout3d)
#: spatial pooling: commutes with a per-channel scale, but only on a conv's output (after a
#: Linear it would pool across units)
POOLING = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
           nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
           nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)

_HOMOGENEOUS_FNS = {F.relu, F.relu_, torch.relu, torch.relu_, F.leaky_relu, F.leaky_relu_,
                    F.prelu, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}
_POOL_FNS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
             F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
             F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d}
_HOMOGENEOUS_METHODS = {"relu", "relu_", "contiguous", "clone"}


@dataclass(frozen=True, eq=False)
class UnitPair:
    """Hidden units produced by ``layer_in`` and consumed by ``layer_out``.

    ``index_in``/``index_out`` index :func:`weight_layers` (= the clip bounds' order).
    ``group`` is how many consecutive input columns of ``layer_out`` belong to one unit
    (H*W across a Flatten, else 1).
    """
    index_in: int
    index_out: int
    name_in: str
    name_out: str
    layer_in: nn.Module
    layer_out: nn.Module
    units: int
    group: int = 1
    via: tuple[str, ...] = ()

    def __repr__(self) -> str:
        mid = " -> ".join(self.via)
        mid = f" -> {mid}" if mid else ""
        return (f"UnitPair({self.name_in}{mid} -> {self.name_out}, units={self.units}, "
                f"group={self.group})")


def find_pairs(critic: nn.Module, strict: bool = False) -> list[UnitPair]:
    """Every rescalable hidden layer of ``critic``, in forward order.

    ``nn.Sequential`` critics (nested ones flattened) are walked directly; anything else is
    traced with torch.fx. A layer that breaks the invariance skips its pair with a logged
    warning, or raises :class:`InvarianceError` naming the layer when ``strict``. A GroupSort
    critic is always refused: sorting mixes the units of a group, so a per-unit rescaling is no
    invariance anywhere in it, and clipping it silently would be a different method.
    """
    sorting = [n for n, m in critic.named_modules() if isinstance(m, GroupSort)]
    if sorting:
        raise InvarianceError(
            f"invariance-aware clipping cannot rescale a GroupSort critic (layer "
            f"{sorting[0]!r}): sorting mixes the units of each group, so rescaling one unit "
            "changes the function; set model.activation=leaky_relu (or relu) for invclip, or "
            "use a constraint built for GroupSort (bjorck, aol)")
    index = {id(m): (i, n) for i, (n, m) in enumerate(weight_layers(critic))}
    if isinstance(critic, nn.Sequential):
        seq = list(_flatten_sequential(critic))
        if all(not _is_opaque(m) for _, m in seq):
            return _pairs_from_sequence(seq, index, strict)
    return _pairs_from_fx(critic, index, strict)


# ----------------------------------------------------------------------------- helpers

def _flatten_sequential(seq: nn.Sequential, prefix: str = ""):
    for name, child in seq._modules.items():  # named_children() would hide repeated modules
        if child is None:
            continue
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _flatten_sequential(child, full + ".")
        else:
            yield full, child


def _is_opaque(m: nn.Module) -> bool:
    """A custom container whose forward we cannot read without tracing."""
    return any(True for _ in m.children())


def _is_weight(m: Any) -> bool:
    return isinstance(m, LINEAR + CONVS)


def _units(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _skip(strict: bool, msg: str) -> None:
    if strict:
        raise InvarianceError(msg)
    log.warning("%s; these units are clipped but not rescaled", msg)


def _close_pair(index: dict, name_in: str, m_in: nn.Module, name_out: str, m_out: nn.Module,
                flattened: bool, via: list[str], strict: bool) -> Optional[UnitPair]:
    """Check that ``m_out`` can consume ``m_in``'s units one slice each; build the pair."""
    units = _units(m_in)
    conv_in = isinstance(m_in, CONVS)
    why = None
    group = 1
    if isinstance(m_out, nn.Linear):
        if conv_in and not flattened:
            why = "a Linear applied to a convolution's output without a Flatten"
        elif m_out.in_features % units:
            why = (f"{name_out} has {m_out.in_features} inputs, not a multiple of the "
                   f"{units} units of {name_in}")
        else:
            group = m_out.in_features // units
            if not conv_in and group != 1:
                why = f"{name_out} has {m_out.in_features} inputs but {name_in} {units} outputs"
    else:
        if not conv_in or type(m_out) is not type(m_in):
            why = f"{type(m_in).__name__} {name_in} feeds {type(m_out).__name__} {name_out}"
        elif flattened:
            why = f"a flatten between convolutions {name_in} and {name_out}"
        elif m_out.groups != 1:
            why = f"grouped convolution {name_out} (groups={m_out.groups})"
        elif m_out.in_channels != units:
            why = f"{name_out} has {m_out.in_channels} input channels, {name_in} {units} outputs"
    if why:
        _skip(strict, f"cannot rescale the units of {name_in!r}: {why}")
        return None
    return UnitPair(index[id(m_in)][0], index[id(m_out)][0], name_in, name_out, m_in, m_out,
                    units, group, tuple(via))


def _breaks(strict: bool, name_in: str, what: str) -> None:
    _skip(strict, f"{what} after {name_in!r} does not commute with a positive per-unit scale "
                  f"(the rescaling invariance needs ReLU/LeakyReLU/identity-like layers only)")


# ----------------------------------------------------------------------------- Sequential

def _pairs_from_sequence(seq: list[tuple[str, nn.Module]], index: dict,
                         strict: bool) -> list[UnitPair]:
    counts: dict[int, int] = {}
    for _, m in seq:
        counts[id(m)] = counts.get(id(m), 0) + 1
    pairs = []
    for pos, (name_in, m_in) in enumerate(seq):
        if not _is_weight(m_in):
            continue
        via: list[str] = []
        flattened = False
        for name, m in seq[pos + 1:]:
            if _is_weight(m):
                if counts[id(m_in)] > 1 or counts[id(m)] > 1:
                    _skip(strict, f"cannot rescale the units of {name_in!r}: a layer is used "
                                  f"more than once")
                else:
                    pair = _close_pair(index, name_in, m_in, name, m, flattened, via, strict)
                    if pair is not None:
                        pairs.append(pair)
                break
            ok, flattened = _module_commutes(m, m_in, flattened)
            if not ok:
                _breaks(strict, name_in, f"layer {name!r} ({type(m).__name__})")
                break
            via.append(name)
    return pairs


def _module_commutes(m: nn.Module, m_in: nn.Module, flattened: bool) -> tuple[bool, bool]:
    """(commutes, flattened after it)."""
    conv_in = isinstance(m_in, CONVS)
    if isinstance(m, HOMOGENEOUS):
        return True, flattened
    if isinstance(m, POOLING):
        return conv_in and not flattened, flattened
    if isinstance(m, nn.Flatten):
        return m.start_dim == 1 and m.end_dim == -1, True
    return False, flattened


# ----------------------------------------------------------------------------- torch.fx

def _pairs_from_fx(critic: nn.Module, index: dict, strict: bool) -> list[UnitPair]:
    try:
        graph = torch.fx.symbolic_trace(critic).graph
    except Exception as e:  # tracing fails on data-dependent control flow
        msg = (f"cannot trace {type(critic).__name__} with torch.fx ({type(e).__name__}: {e}); "
               "no unit is rescaled (use an nn.Sequential or a traceable forward)")
        if strict:
            raise InvarianceError(msg) from e
        log.warning(msg)
        return []
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        m_in = critic.get_submodule(node.target)
        if not _is_weight(m_in):
            continue
        name_in = node.target
        cur, via, flattened = node, [], False
        while True:
            users = [u for u in cur.users if not _is_shape_query(u)]
            if not users:
                break  # the critic's output: nothing to pair with
            if len(users) != 1:
                _breaks(strict, name_in, f"{cur.name!r} feeding {len(users)} operations "
                                         f"({', '.join(u.name for u in users)}; e.g. a residual)")
                break
            nxt = users[0]
            if nxt.op == "output":
                break
            if nxt.op == "call_module" and _is_weight(critic.get_submodule(nxt.target)):
                m_out = critic.get_submodule(nxt.target)
                if calls[name_in] > 1 or calls[nxt.target] > 1:
                    _skip(strict, f"cannot rescale the units of {name_in!r}: a layer is called "
                                  f"more than once")
                elif nxt.args[:1] != (cur,) or len(nxt.args) + len(nxt.kwargs) != 1:
                    _breaks(strict, name_in, f"the call of {nxt.target!r}")
                else:
                    pair = _close_pair(index, name_in, m_in, nxt.target, m_out, flattened,
                                       via, strict)
                    if pair is not None:
                        pairs.append(pair)
                break
            ok, flattened = _node_commutes(critic, nxt, cur, m_in, flattened)
            if not ok:
                _breaks(strict, name_in, _describe(critic, nxt))
                break
            via.append(nxt.target if nxt.op == "call_module" else nxt.name)
            cur = nxt
    return pairs


def _is_shape_query(node) -> bool:
    """x.size(0), x.shape, x.dim(): read the shape only, not the values."""
    if node.op == "call_method":
        return node.target in ("size", "dim", "numel")
    return node.op == "call_function" and node.target is getattr and \
        node.args[1:] in (("shape",), ("ndim",))


def _node_commutes(critic: nn.Module, node, cur, m_in: nn.Module,
                   flattened: bool) -> tuple[bool, bool]:
    """Whether ``node`` (whose input chain is ``cur``) commutes with a per-unit scale."""
    if node.args[:1] != (cur,):
        return False, flattened
    others = list(node.args[1:]) + list(node.kwargs.values())
    if node.op == "call_module":
        if others:
            return False, flattened
        return _module_commutes(critic.get_submodule(node.target), m_in, flattened)
    if any(isinstance(a, torch.fx.Node) for a in others) and node.target not in (
            "view", "reshape"):
        return False, flattened
    conv_in = isinstance(m_in, CONVS)
    if node.op == "call_function":
        t = node.target
        if t in _HOMOGENEOUS_FNS:
            return True, flattened
        if t in _POOL_FNS:
            return conv_in and not flattened and not node.kwargs.get("return_indices"), flattened
        if t is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return start == 1 and end == -1, True
        if t in (operator.mul, operator.truediv, torch.mul, torch.div) and len(others) == 1:
            c = others[0]
            return isinstance(c, (int, float)) and c > 0, flattened
        return False, flattened
    if node.op == "call_method":
        if node.target in _HOMOGENEOUS_METHODS:
            return not others, flattened
        if node.target == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return start == 1 and end == -1, True
        if node.target in ("view", "reshape"):
            # taken to flatten [N, C, ...] to [N, -1]; _close_pair checks the sizes agree
            return True, True
    return False, flattened


def _describe(critic: nn.Module, node) -> str:
    if node.op == "call_module":
        return f"layer {node.target!r} ({type(critic.get_submodule(node.target)).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    return f"operation {node.name!r} ({target})"
