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
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .errors import WganlabError, unsafe_name, ConfigError  # noqa: F401

PRESET_DIR = Path(__file__).parent / "configs"

#: a config file is a few kilobytes; anything past these bounds is refused before it is walked
MAX_CONFIG_BYTES = 1 << 20
MAX_NODES = 10_000   # values after YAML aliases are expanded (an alias bomb expands to billions)
MAX_DEPTH = 32
#: every integer must fit the 64-bit counters of torch and numpy
MAX_INT = 2**63 - 1
#: sizes that allocate memory before the first step: refused while they are still numbers
LIMITS = {
    "seed": 2**32 - 1,
    "data.batch_size": 1 << 16,
    "data.image_size": 256,
    "model.z_dim": 1 << 16,
    "model.toy_hidden": 1 << 13,
    "model.toy_layers": 64,
    "train.sample_count": 4096,
    "train.eval_samples": 100_000,
    "constraint.subsample": 1 << 16,
}


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
        _check_choice("data.name", self.name, DATA_NAMES)
        _positive("data.batch_size", self.batch_size)
        if self.image_size < 28:
            raise ConfigError(f"data.image_size must be >= 28 (got {self.image_size})")
        if self.name in ("mnist", "fashion-mnist", "kmnist", "idx") and not self.dir:
            raise ConfigError(
                f"data.name={self.name} reads IDX files: set data.dir to their folder "
                "(or use data.name=mnist5k, the embedded default)")
        if self.limit is not None:
            _positive("data.limit", self.limit)
        _positive("data.toy_std", self.toy_std)


DATA_NAMES = ("mnist5k", "mnist", "fashion-mnist", "kmnist", "idx",
              "8gaussians", "25gaussians", "swissroll", "checkerboard")
TOY_DATA = ("8gaussians", "25gaussians", "swissroll", "checkerboard")
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
class ConstraintConfig:
    #: none | clip | invclip | gp | lp | r1 | gp-adaptive | sn | bjorck | aol, combined with '+'
    #: (e.g. clip+r1),
    #: or the name of an entry of ``variants``
    name: str = "clip"
    #: clip bound: one float for every layer, or a list with one per Linear/Conv layer in order
    clip: Union[float, list[float]] = 0.01
    #: absolute: ``clip`` is the bound; fan_in: the bound of a layer is clip / sqrt(fan_in)
    clip_scale: str = "absolute"
    #: after: clip after each critic optimizer step; before: before each critic step (original WGAN code)
    clip_when: str = "after"
    #: which critic parameters clipping touches: any of weight, bias, norm
    clip_params: list[str] = field(default_factory=lambda: ["weight", "bias"])
    # --- invariance-aware clipping (invclip) ---
    #: paper | paper-guarded | exact | function | output | balance (minimum-norm member of each
    #: unit's class, not in the paper)
    solver: str = "exact"
    alpha: float = 1.1
    k_max: int = 5
    sweeps: int = 1
    #: transform the optimizer's state consistently with the rescaling
    transform_state: bool = False
    #: rescale every k critic steps (clipping still happens every step)
    every: int = 1
    #: refuse critics with layers that break the invariance instead of skipping them
    strict: bool = False
    #: bound on each unit's accumulated |log d| (None: unbounded, as the paper)
    max_drift: Optional[float] = None
    #: rescale on the first N critic steps only, then clip alone (None: always); with
    #: max_drift, plain clipping of a once-rebalanced critic (a control, not in the paper)
    rescale_steps: Optional[int] = None
    #: output solver: weight of a cost on |log d| that keeps units' in/out balance from drifting
    balance_weight: float = 0.0
    #: output solver: use at most this many samples of the batch for its statistics
    subsample: Optional[int] = None
    # --- penalties ---
    #: weight of gp / lp (WGAN-GP: 10; toy preset 0.1)
    gp_lambda: float = 10.0
    #: weight of r1 (gamma/2 * E||grad f(real)||^2)
    r1_gamma: float = 10.0
    #: gp-adaptive: the largest weight the adaptive rule may reach
    adaptive_max: float = 10.0
    #: spectral norm: power iterations per forward pass
    sn_power_iterations: int = 1
    # --- by construction (bjorck, aol) ---
    #: bjorck: orthonormalisation iterations per forward pass (two matrix products each; 20
    #: lift a singular value of 1e-3 of the pre-scaled weight to 1 within 1e-4, 15 one of 1e-2)
    bjorck_iters: int = 20
    #: named variants: {name: {key: value, ...}} overriding this section, e.g.
    #: invclip-paper: {name: invclip, solver: paper}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("constraint.name is empty; use e.g. clip, invclip, gp or none")
        if self.name not in self.variants:
            for part in self.name.split("+"):
                _check_choice("constraint.name", part, CONSTRAINT_NAMES)
        clips = self.clip if isinstance(self.clip, list) else [self.clip]
        if not clips or any(c <= 0 for c in clips):
            raise ConfigError(f"constraint.clip must be > 0 (got {self.clip})")
        _check_choice("constraint.clip_scale", self.clip_scale, ("absolute", "fan_in"))
        _check_choice("constraint.clip_when", self.clip_when, ("after", "before"))
        for p in self.clip_params:
            _check_choice("constraint.clip_params", p, ("weight", "bias", "norm"))
        _check_choice("constraint.solver", self.solver,
                      ("paper", "paper-guarded", "exact", "function", "output", "balance",
                       "balance-box"))
        if self.alpha <= 1:
            raise ConfigError(f"constraint.alpha must be > 1 (got {self.alpha})")
        _positive("constraint.k_max", self.k_max)
        _positive("constraint.sweeps", self.sweeps)
        _positive("constraint.every", self.every)
        for key in ("gp_lambda", "r1_gamma", "adaptive_max", "balance_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"constraint.{key} must be >= 0 (got {getattr(self, key)})")
        if self.max_drift is not None and not self.max_drift >= 0:
            raise ConfigError(f"constraint.max_drift must be >= 0 or null (got {self.max_drift})")
        if self.rescale_steps is not None and self.rescale_steps < 0:
            raise ConfigError(f"constraint.rescale_steps must be >= 0 or null "
                              f"(got {self.rescale_steps})")
        _positive("constraint.sn_power_iterations", self.sn_power_iterations)
        _positive("constraint.bjorck_iters", self.bjorck_iters)
        for vname, over in self.variants.items():
            if unsafe_name(vname):  # it becomes the folder name of a compared run
                raise ConfigError(f"constraint.variants key {vname!r} is not a safe name: use "
                                  "letters, digits and . _ + - (starting with a letter or "
                                  "digit, no '..')")
            if not isinstance(over, dict):
                raise ConfigError(f"constraint.variants.{vname} must be a mapping of keys")
            try:
                resolved = self.resolve(vname)
                resolved.variants = {}
                resolved.validate()
            except ConfigError as e:
                raise ConfigError(str(e).replace("constraint.", f"constraint.variants.{vname}.",
                                                 1)) from None

    def resolve(self, name: str | None = None) -> "ConstraintConfig":
        """This section with the named variant's overrides applied (no variant: a copy)."""
        name = self.name if name is None else name
        base = copy.deepcopy(self)
        base.name = name
        if name not in self.variants:
            return base
        over = dict(self.variants[name])
        over.setdefault("name", name)
        data = dataclasses.asdict(base)
        for k, v in over.items():
            if k not in data or k == "variants":
                raise ConfigError(f"constraint.variants.{name}.{k} is not a constraint key")
            data[k] = v
        data["variants"] = {}
        out = _build(ConstraintConfig, data, f"constraint.variants.{name}")
        if out.name in self.variants:
            raise ConfigError(f"constraint.variants.{name}.name must be a base constraint name")
        return out


CONSTRAINT_NAMES = ("none", "clip", "invclip", "gp", "lp", "r1", "gp-adaptive", "sn", "bjorck",
                    "aol")


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
        toy_data = self.data.name in TOY_DATA
        if toy_data != (self.model.name == "toy"):
            raise ConfigError(
                f"model.name={self.model.name} does not fit data.name={self.data.name}: "
                "2-D toy data needs model.name=toy, images need mlp or dcgan")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

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
        set_dotted(raw, key, value)
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


def _check_tree(root: Any) -> None:
    """Refuse self-referencing, absurdly deep or huge configs before anything walks them.
    YAML aliases share one object, so a tiny file can expand to billions of values (an alias
    bomb): the walk stops at MAX_NODES values, whatever the file's size."""
    count = 0

    def walk(node: Any, path: tuple) -> None:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise ConfigError(f"the config expands to more than {MAX_NODES} values (YAML "
                              "aliases of aliases?); write it out plainly")
        if not isinstance(node, (dict, list)):
            return
        if len(path) > MAX_DEPTH or any(node is p for p in path):
            raise ConfigError("the config refers to itself (a YAML alias inside its own "
                              f"anchor) or is nested deeper than {MAX_DEPTH} levels")
        for v in (node.values() if isinstance(node, dict) else node):
            walk(v, path + (node,))

    walk(root, ())


def _build(cls, raw: Any, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping of keys, "
                          f"not {type(raw).__name__} ({raw!r})")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = [n for n in names if n.startswith(str(key)[:3])]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            raise ConfigError(f"unknown config key {full!r}{hint}; valid keys here: "
                              f"{', '.join(sorted(names))}")
        kwargs[key] = _coerce(hints[key], value, full)
    return cls(**kwargs)


def _coerce(tp, value: Any, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:  # Optional[X]: X's own message (e.g. the limit) says more
            raise ConfigError(errors[0])
        raise ConfigError(f"{key} has the wrong type: got {value!r}, "
                          f"expected {_type_name(tp)}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        limit = LIMITS.get(re.sub(r"^constraint\.variants\.[^.]+\.", "constraint.", key),
                           MAX_INT)
        if abs(value) > limit:
            shown = value if len(str(value)) < 25 else f"a {len(str(abs(value)))}-digit number"
            raise ConfigError(f"{key}={shown} is too large (at most {limit})")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                v = float(value)
            except OverflowError:  # a 400-digit integer
                raise ConfigError(f"{key} must be a finite number, got a "
                                  f"{len(str(abs(value)))}-digit integer") from None
            if v != v or v in (float("inf"), float("-inf")):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return v
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _type_name(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return " or ".join(getattr(a, "__name__", str(a)) for a in args)


def _check_choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of: {', '.join(map(str, choices))}")


def _positive(key: str, value) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"{key} must be > 0 (got {value})")


def dump_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
