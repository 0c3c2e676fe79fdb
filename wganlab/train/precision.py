"""Mixed precision (``train.amp``): bf16 autocast of the forward passes, on CPU or CUDA.

Only matmuls and convolutions run in bfloat16 (``torch.autocast`` picks them); master weights,
optimizer state, the constraint's projection (clipping, rescaling) and the penalties' gradient
norms stay float32, so bf16 changes the arithmetic of the forward and backward passes and
nothing else. bf16 has float32's exponent range, so no loss scaling is needed.
"""
from __future__ import annotations

import functools
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import torch

from ..config import AMP_BF16, AMP_OFF

log = logging.getLogger("wganlab")

#: CPU flags of native bf16 arithmetic (AVX512-BF16, Intel AMX)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def amp_dtype(setting, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype ``train.amp`` asks for (None: float32 throughout)."""
    if setting in AMP_OFF:
        return None
    if setting not in AMP_BF16:  # config validation refuses these first
        raise ValueError(f"train.amp must be bf16 or false (true means bf16), got {setting!r}")
    if device.type == "cpu" and not cpu_has_native_bf16():
        _warn_emulated()
    return torch.bfloat16


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``dtype``, or a no-op context when it is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively; without it oneDNN emulates bf16 and a run
    may be slower than in float32. Unknown (no /proc/cpuinfo) counts as no."""
    try:
        return native_bf16(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return False


def native_bf16(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text lists a native bf16 flag."""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(f in flags for f in NATIVE_BF16_FLAGS)


@functools.lru_cache(maxsize=None)
def _warn_emulated() -> None:
    log.warning("train.amp=bf16 on a CPU without native bf16 (no avx512_bf16 or amx_bf16 "
                "flag): bf16 is emulated and may be slower than float32; set train.amp=false")
