"""wganlab: Wasserstein GANs with pluggable Lipschitz constraints, built around
invariance-aware weight clipping (Massart 2022, "Improving weight clipping in Wasserstein GANs").

Drop-in use in a plain PyTorch loop::

    from wganlab import WeightClip
    proj = WeightClip(critic, clip=0.01)
    ...; opt.step(); proj.step(opt)
"""
from .config import Config, ConfigError, load_config
from .constraints import Constraint, WeightClip, build_constraint
from .constraints import InvariantClip  # noqa: F401

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "load_config", "Constraint", "WeightClip", "InvariantClip",
           "build_constraint", "__version__"]
