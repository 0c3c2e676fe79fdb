"""Typed, validated run configuration.

A config is a YAML file with the sections ``data``, ``model``, ``constraint``, ``train`` and
``optim`` plus a top-level ``seed``. Every key has a documented default here, so an experiment
is a small diff over these defaults. Unknown keys, wrong types and impossible values raise a
``ConfigError`` that names the key, never a traceback from deep inside the trainer.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .constraint_config import (FLAT_CONSTRAINT_KEYS, ConstraintConfig,  # noqa: F401
                                upgrade_constraint_section, upgrade_override_key)
from .errors import ConfigError, WganlabError, unsafe_name  # noqa: F401
from .plugins import data_spec
from .schema import (LIMITS, MAX_CONFIG_BYTES, MAX_DEPTH, MAX_INT, MAX_NODES,  # noqa: F401
                     _build, _check_choice, _check_tree, _positive)

PRESET_DIR = Path(__file__).parent / "configs"

@dataclass
class DataConfig:
    #: mnist5k (embedded, no download) | mnist | fashion-mnist | kmnist | idx (all need ``dir``)
    #: | 8gaussians | 25gaussians | swissroll | checkerboard
    name: str = "mnist5k"
    #: folder of standard IDX files (``*-idx3-ubyte[.gz]``) for mnist / fashion-mnist / kmnist / idx
    dir: Optional[str] = None
    batch_size: int = 64
    #: images are padded to this side length (MNIST 28 -> 32)
    image_size: int = 32
    #: use at most this many training images (None: all)
    limit: Optional[int] = None
    #: standard deviation of each Gaussian of the toy mixtures
    toy_std: float = 0.02

    def validate(self) -> None:
        spec = data_spec(self.name)
        _positive("data.batch_size", self.batch_size)
        if self.image_size < spec.side:
            raise ConfigError(f"data.image_size must be >= {spec.side} (got {self.image_size})")
        if spec.needs_dir and not self.dir:
            raise ConfigError(
                f"data.name={self.name} reads IDX files: set data.dir to their folder "
                "(or use data.name=mnist5k, the embedded default)")
        if self.limit is not None:
            _positive("data.limit", self.limit)
        _positive("data.toy_std", self.toy_std)


#: values of train.amp meaning bf16 autocast (true: older configs) and float32 throughout
AMP_BF16 = (True, "bf16")
AMP_OFF = (False, "false", "off")


ACTIVATIONS = ("auto", "leaky_relu", "relu", "groupsort")


@dataclass
class ModelConfig:
    #: mlp (Table I) | dcgan (Table II) | toy (small MLPs for 2-D data)
    name: str = "mlp"
    z_dim: int = 100
    #: Table I's "Batchnorm (param. 0.8)" is BatchNorm1d's eps in the code it comes from
    bn_eps: float = 0.8
    #: width and depth of the toy MLPs
    toy_hidden: int = 256
    toy_layers: int = 3
    #: slope of the critic's LeakyReLU (Tables I and II: 0.2)
    leaky_slope: float = 0.2
    #: the critic's activation: auto (the architecture's own -- LeakyReLU for mlp/dcgan, ReLU
    #: for toy -- or GroupSort when the constraint is bjorck or aol) | leaky_relu | relu |
    #: groupsort (pairs of units sorted; needs even layer widths)
    activation: str = "auto"

    def validate(self) -> None:
        _check_choice("model.name", self.name, ("mlp", "dcgan", "toy"))
        _check_choice("model.activation", self.activation, ACTIVATIONS)
        _positive("model.z_dim", self.z_dim)
        _positive("model.toy_hidden", self.toy_hidden)
        _positive("model.toy_layers", self.toy_layers)
        if self.bn_eps <= 0:
            raise ConfigError(f"model.bn_eps must be > 0 (got {self.bn_eps})")
        if self.leaky_slope < 0:
            raise ConfigError(f"model.leaky_slope must be >= 0 (got {self.leaky_slope})")


@dataclass
class OptimizerConfig:
    #: auto: the constraint's literature default (clipping: RMSProp; gp/lp: Adam (0.5, 0.9) 1e-4)
    name: str = "auto"
    lr: Optional[float] = None
    betas: Optional[list[float]] = None
    momentum: float = 0.0
    #: RMSProp's smoothing constant (PyTorch's ``alpha``)
    rms_alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    #: one learning-rate multiplier per Linear/Conv layer in order (its bias follows it; other
    #: parameters keep lr); null: lr everywhere
    layer_lr: Optional[list[float]] = None

    def validate(self, key: str) -> None:
        _check_choice(f"{key}.name", self.name, ("auto", "rmsprop", "adam", "sgd"))
        if self.lr is not None:
            _positive(f"{key}.lr", self.lr)
        if self.layer_lr is not None and (not self.layer_lr
                                          or not all(m > 0 for m in self.layer_lr)):
            raise ConfigError(f"{key}.layer_lr must be a list of positive multipliers, one per "
                              f"Linear/Conv layer (got {self.layer_lr})")
        if self.betas is not None:
            if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
                raise ConfigError(f"{key}.betas must be two numbers in [0, 1) (got {self.betas})")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{key}.momentum must be in [0, 1) (got {self.momentum})")
        if not 0 < self.rms_alpha < 1:
            raise ConfigError(f"{key}.rms_alpha must be in (0, 1) (got {self.rms_alpha})")
        _positive(f"{key}.eps", self.eps)


@dataclass
class OptimConfig:
    critic: OptimizerConfig = field(default_factory=OptimizerConfig)
    generator: OptimizerConfig = field(default_factory=OptimizerConfig)

    def validate(self) -> None:
        self.critic.validate("optim.critic")
        self.generator.validate("optim.generator")


@dataclass
class TrainConfig:
    #: stop after this many generator steps / critic steps / seconds (first reached wins)
    generator_steps: Optional[int] = 2000
    critic_steps: Optional[int] = None
    budget_seconds: Optional[float] = None
    #: CPU seconds of this process (evaluation excluded): not distorted by other load
    budget_cpu_seconds: Optional[float] = None
    n_critic: int = 5
    #: critic steps per generator step during warm-up, for the first warmup_generator_steps
    #: generator steps and every warmup_every-th one after (0: never)
    warmup_n_critic: int = 100
    warmup_generator_steps: int = 25
    warmup_every: int = 500
    #: log scalars every this many generator steps
    log_every: int = 10
    #: Lipschitz diagnostics (gradient norms at interpolates/real/fake, spectral product)
    #: every this many generator steps (0: off)
    diagnostics_every: int = 100
    #: write a sample grid every this many generator steps (and at the end)
    sample_every: int = 250
    #: number of fixed latent vectors in the sample grid (a square works best)
    sample_count: int = 64
    #: cpu | cuda | auto
    device: str = "cpu"
    #: mixed precision: bf16 (or true) autocasts matmuls and convolutions to bfloat16 on CPU or
    #: CUDA (weights, optimizer state, projections and penalty norms stay float32; no loss
    #: scaling needed); false: float32 throughout. See README, "When to use bf16"
    amp: Union[bool, str] = False
    #: torch intra-op threads: auto (one for toy models, else the cores idle at the start;
    #: OMP_NUM_THREADS wins when set), a number, or 0 for PyTorch's one per core
    threads: Union[int, str] = "auto"
    #: show a progress bar: true, false, or auto (only on a terminal)
    progress: Union[bool, str] = "auto"
    #: write TensorBoard event files
    tensorboard: bool = True
    #: checkpoint every this many generator steps (0: only at the end) / seconds (a run
    #: killed near its end loses at most this much; null: off)
    checkpoint_every: int = 0
    checkpoint_seconds: Optional[float] = 600.0
    #: keep this many periodic checkpoints
    keep_checkpoints: int = 2
    #: also keep the checkpoint with the best value of this logged metric (e.g. eval/fd;
    #: null: off), lower is better unless best_mode is max
    best_metric: Optional[str] = None
    best_mode: str = "min"
    #: evaluate (metrics) every this many generator steps / seconds of training time (0/None: off)
    eval_every: int = 0
    eval_seconds: Optional[float] = None
    eval_samples: int = 2000

    def validate(self) -> None:
        if all(v is None for v in (self.generator_steps, self.critic_steps,
                                   self.budget_seconds, self.budget_cpu_seconds)):
            raise ConfigError("train needs a stopping rule: set train.generator_steps, "
                              "train.critic_steps, train.budget_seconds or train.budget_cpu_seconds")
        for key in ("generator_steps", "critic_steps", "budget_seconds", "budget_cpu_seconds",
                    "checkpoint_seconds", "eval_seconds"):
            v = getattr(self, key)
            if v is not None and v <= 0:
                raise ConfigError(f"train.{key} must be > 0 or null (got {v})")
        for key in ("n_critic", "warmup_n_critic", "log_every", "sample_every", "sample_count",
                    "keep_checkpoints", "eval_samples"):
            _positive(f"train.{key}", getattr(self, key))
        if self.threads != "auto" and (not isinstance(self.threads, int) or self.threads < 0):
            raise ConfigError(f"train.threads must be auto or a number >= 0 "
                              f"(got {self.threads!r})")
        for key in ("warmup_generator_steps", "warmup_every", "checkpoint_every",
                    "diagnostics_every",
                    "eval_every"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0 (got {getattr(self, key)})")
        _check_choice("train.device", self.device, ("cpu", "cuda", "auto"))
        _check_choice("train.best_mode", self.best_mode, ("min", "max"))
        if self.amp not in AMP_BF16 + AMP_OFF:
            raise ConfigError(f"train.amp must be bf16 or false (true means bf16), "
                              f"got {self.amp!r}")
        if self.progress not in (True, False, "auto"):
            raise ConfigError(f"train.progress must be true, false or auto (got {self.progress!r})")


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    constraint: ConstraintConfig = field(default_factory=ConstraintConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def validate(self) -> "Config":
        self.data.validate()
        self.model.validate()
        self.constraint.validate()
        self.train.validate()
        self.optim.validate()
        toy_data = data_spec(self.data.name).toy
        if toy_data != (self.model.name == "toy"):
            raise ConfigError(
                f"model.name={self.model.name} does not fit data.name={self.data.name}: "
                "2-D toy data needs model.name=toy, images need mlp or dcgan")
        return self

    def to_dict(self) -> dict:
        out = {f.name: dataclasses.asdict(getattr(self, f.name))
               if dataclasses.is_dataclass(getattr(self, f.name)) else getattr(self, f.name)
               for f in dataclasses.fields(self)}
        out["constraint"] = self.constraint.to_dict()
        return out

    def digest(self) -> str:
        """A short hash of the resolved config, stored with checkpoints."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (or a preset name such as ``toy``), apply ``key=value`` overrides."""
    raw: dict = {}
    if path is not None:
        raw = read_yaml(resolve_config_path(path))
    for item in overrides or []:
        key, value = parse_override(item)
        for new_key in upgrade_override_key(key, value):
            set_dotted(raw, new_key, value)
    return from_dict(raw)


def resolve_config_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    preset = PRESET_DIR / f"{p.name if p.suffix else p.name + '.yaml'}"
    if not p.exists() and preset.is_file() and len(p.parts) <= 2:
        return preset
    presets = ", ".join(sorted(q.stem for q in PRESET_DIR.glob("*.yaml")))
    raise ConfigError(f"config file {str(p)!r} not found (presets: {presets})")


class _Loader(yaml.SafeLoader):
    """Safe YAML (no tags, no code) that refuses a key given twice in one mapping: YAML lets
    the last one win silently, hiding a typo."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' then overrides: fine
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise ConfigError(f"duplicate key {key!r} (lines {seen[key]} and {line}); "
                                      "the last would silently win: keep one")
                seen[key] = line
            except TypeError:  # an unhashable key: the base class reports it
                pass
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; "
                              "a config is a small YAML file")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: bad dates
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, "
                          f"not {type(raw).__name__}")
    return raw


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. train.generator_steps=100), got {item!r}")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except (yaml.YAMLError, ValueError, RecursionError):
        value = text
    return key, value


def set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = nxt
    node[parts[-1]] = value


def from_dict(raw: dict) -> Config:
    """Build and validate a Config from nested plain data."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping, not {type(raw).__name__}")
    _check_tree(raw)
    config = _build(Config, raw, "").validate()
    if config.data.dir:  # absolute: a resumed or evaluated run reads the same files from anywhere
        config.data.dir = os.path.abspath(os.path.expanduser(config.data.dir))
    return config


def load_stored(raw: dict) -> Config:
    """A config a run folder or checkpoint stored, in any older layout, without deprecation
    warnings (the user did not write it)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return from_dict(copy.deepcopy(raw))


def upgrade_stored(raw: dict) -> dict:
    """A stored config dict in today's layout (as ``Config.to_dict``); ``raw`` itself when it
    no longer loads (a diff then shows what changed)."""
    try:
        return load_stored(raw).to_dict()
    except ConfigError:
        return raw


def dump_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
