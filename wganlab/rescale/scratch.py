"""Scratch buffers reused across steps: on CPU, large temporaries allocated afresh on every step
cost page faults that can exceed the arithmetic done in them. The caller keeps one ``work``
dict per hidden layer (:func:`~wganlab.rescale.sweep.rescale_critic_`) and each use of a
buffer names it by a key of its own."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

#: optional scratch buffers, reused across calls (``{key: tensor}``); None: allocate each time
Work = Optional[dict[str, Tensor]]


def scratch(work: Work, key: str, like: Tensor, shape: Optional[tuple[int, ...]] = None, *,
            strided: bool = False) -> Tensor:
    """An uninitialised buffer with ``like``'s dtype and device, kept in ``work[key]`` and
    reused while it still fits (a fresh one each call without ``work``).

    It is contiguous and shaped ``shape`` (default ``like``'s shape), or with ``strided``
    shaped *and strided* like ``like``: writing a transposed view into a contiguous buffer
    would be several times slower."""
    if strided and shape is not None:
        raise ValueError("a strided scratch buffer takes its shape from `like`")
    shape = tuple(like.shape) if shape is None else tuple(shape)

    def fits(buf: Tensor) -> bool:
        return (tuple(buf.shape) == shape and buf.dtype == like.dtype
                and buf.device == like.device and (not strided or buf.stride() == like.stride()))

    buf = None if work is None else work.get(key)
    if buf is None or not fits(buf):
        buf = torch.empty_like(like) if strided else like.new_empty(shape)
        if work is not None:
            work[key] = buf
    return buf
