"""Train/eval mode as a context: evaluate a module and give it back in the mode it was in."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block, in its own mode (per submodule) after it:
    BatchNorm statistics of a training generator must not move while it is sampled."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
