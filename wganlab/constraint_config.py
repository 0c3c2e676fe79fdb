"""The constraint section of a config: which constraint, named variants, and one section of
parameters per registered plugin, each built from the plugin's own dataclass
(:mod:`wganlab.plugins`); and the deprecation path of the flat keys of older configs.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, unsafe_name
from .schema import _build, _coerce

#: flat keys of the constraint section before each plugin had its own section -> their new
#: homes (a key may feed several plugins: gp_lambda was shared by gp and lp)
FLAT_CONSTRAINT_KEYS: dict[str, tuple[str, ...]] = {
    "clip": ("clip.bound",), "clip_scale": ("clip.scale",), "clip_when": ("clip.when",),
    "clip_params": ("clip.params",),
    "solver": ("invclip.solver",), "sweeps": ("invclip.sweeps",),
    "transform_state": ("invclip.transform_state",), "every": ("invclip.every",),
    "strict": ("invclip.strict",), "max_drift": ("invclip.max_drift",),
    "rescale_steps": ("invclip.rescale_steps",),
    "alpha": ("solvers.paper.alpha", "solvers.paper-guarded.alpha"),
    "k_max": ("solvers.paper.k_max", "solvers.paper-guarded.k_max"),
    "balance_weight": ("solvers.output.balance_weight",),
    "subsample": ("solvers.output.subsample",),
    "gp_lambda": ("gp.weight", "lp.weight"), "r1_gamma": ("r1.gamma",),
    "adaptive_max": ("gp-adaptive.max_weight",),
    "sn_power_iterations": ("sn.power_iterations",), "bjorck_iters": ("bjorck.iters",),
}


def upgrade_constraint_section(raw: dict, where: str = "constraint",
                               warn: bool = True) -> dict:
    """``raw`` with the flat keys of older configs moved into their plugins' sections (a
    DeprecationWarning names each, unless ``warn`` is false: stored run folders). A key that is
    a mapping is already a section and stays."""
    out: dict = {}
    moved = []
    for key, value in raw.items():
        homes = FLAT_CONSTRAINT_KEYS.get(key)
        if homes is None or (key == "clip" and isinstance(value, dict)):
            out[key] = value if key != "variants" or not isinstance(value, dict) else {
                k: (upgrade_constraint_section(v, f"{where}.variants.{k}", warn)
                    if isinstance(v, dict) else v) for k, v in value.items()}
            continue
        moved.append((key, homes))
        for home in homes:
            node = out
            parts = home.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{where}.{part} must be a section (a mapping), as "
                                      f"{where}.{key} moves into it")
            node.setdefault(parts[-1], value)
    # explicit sections win over a flat key that fed them
    for key, value in raw.items():
        if isinstance(value, dict) and key not in ("variants",):
            out[key] = _deep_merge(out.get(key, {}) if isinstance(out.get(key), dict) else {},
                                   value)
    if moved and warn:
        import warnings
        listing = ", ".join(f"{where}.{k} -> {where}.{' and '.join(h)}" for k, h in moved)
        warnings.warn(f"flat constraint keys are deprecated; write {listing}",
                      DeprecationWarning, stacklevel=4)
    return out


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(
            out.get(k), dict) else v
    return out


@dataclass
class ConstraintConfig:
    """The constraint section: which constraint, named variants, and one section of
    parameters per registered constraint (``constraint.<name>.<key>``) and solver
    (``constraint.solvers.<name>.<key>``), each built from the plugin's own dataclass."""
    #: a registered constraint (``wganlab plugins`` lists them), several joined by '+'
    #: (e.g. clip+r1), or the name of an entry of ``variants``
    name: str = "clip"
    #: named variants: {name: {key: value, ...}} overriding this section, e.g.
    #: invclip-paper: {name: invclip, invclip: {solver: paper}}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the plugins' parameters: constraint name -> its dataclass; "solvers" -> {solver: ...}
    sections: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_raw(cls, raw: dict, prefix: str = "constraint", warn: bool = True
                 ) -> "ConstraintConfig":
        from .plugins import CONSTRAINTS, SOLVERS
        raw = upgrade_constraint_section(raw, prefix, warn)
        out = cls()
        for key, value in raw.items():
            full = f"{prefix}.{key}"
            if key == "name":
                out.name = _coerce(str, value, full)
            elif key == "variants":
                out.variants = _coerce(dict[str, dict[str, Any]], value, full)
            elif key == "solvers":
                if not isinstance(value, dict):
                    raise ConfigError(f"{full} must be a mapping of solver sections")
                for sname, sval in value.items():
                    plug = SOLVERS.get(sname, f"{full} key") if sname in SOLVERS else None
                    if plug is None or plug.params is None:
                        with_params = [p.name for p in SOLVERS if p.params is not None]
                        raise ConfigError(f"{full}.{sname} is not a solver with parameters; "
                                          f"valid keys here: {', '.join(with_params)}")
                    out.sections.setdefault("solvers", {})[sname] = _build(
                        plug.params, sval, f"{full}.{sname}")
            elif key in CONSTRAINTS and CONSTRAINTS.get(key).params is not None:
                out.sections[key] = _build(CONSTRAINTS.get(key).params, value, full)
            else:
                valid = sorted(["name", "variants", "solvers"]
                               + [p.name for p in CONSTRAINTS if p.params is not None])
                raise ConfigError(f"unknown config key {full!r}; valid keys here: "
                                  f"{', '.join(valid)}")
        out._fill_defaults()
        return out

    def _fill_defaults(self) -> None:
        from .plugins import CONSTRAINTS, SOLVERS
        for plug in CONSTRAINTS:
            if plug.params is not None and plug.name not in self.sections:
                self.sections[plug.name] = plug.params()
        solvers = self.sections.setdefault("solvers", {})
        for plug in SOLVERS:
            if plug.params is not None and plug.name not in solvers:
                solvers[plug.name] = plug.params()

    def __post_init__(self) -> None:
        if not self.sections:
            self._fill_defaults()

    def __getattr__(self, key: str) -> Any:
        """Flat keys of older code (``cfg.clip``) read from their new homes, with a warning."""
        homes = FLAT_CONSTRAINT_KEYS.get(key)
        if homes is None or key.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")
        import warnings
        warnings.warn(f"ConstraintConfig.{key} is deprecated; read "
                      f"constraint.{homes[0]} (e.g. cfg.params('clip').bound)",
                      DeprecationWarning, stacklevel=2)
        node: Any = self.sections
        for part in homes[0].split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        return node

    def params(self, name: str) -> Any:
        """The parameters of constraint ``name`` (its dataclass)."""
        if name not in self.sections:
            self._fill_defaults()
        return self.sections[name]

    def solver_params(self, name: str) -> Any:
        """The parameters of rescaling solver ``name`` (None if it has none)."""
        return self.sections.get("solvers", {}).get(name)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        for key, sec in self.sections.items():
            out[key] = ({k: dataclasses.asdict(v) for k, v in sec.items()} if key == "solvers"
                        else dataclasses.asdict(sec))
        out["variants"] = copy.deepcopy(self.variants)
        return out

    def validate(self) -> None:
        from .plugins import CONSTRAINTS
        if not self.name:
            raise ConfigError("constraint.name is empty; use e.g. clip, invclip, gp or none")
        if self.name not in self.variants:
            for part in self.name.split("+"):
                CONSTRAINTS.get(part, "constraint.name")
        for key, sec in self.sections.items():
            for sub, params in (sec.items() if key == "solvers" else [(None, sec)]):
                where = f"constraint.{key}" + (f".{sub}" if sub else "")
                if hasattr(params, "validate"):
                    try:
                        params.validate()
                    except ValueError as e:
                        if isinstance(e, ConfigError):
                            raise
                        raise ConfigError(f"{where}: {e}") from None
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
                msg = str(e)
                if f"constraint.variants.{vname}" not in msg:
                    msg = msg.replace("constraint.", f"constraint.variants.{vname}.", 1)
                raise ConfigError(msg) from None

    def resolve(self, name: str | None = None) -> "ConstraintConfig":
        """This section with the named variant's overrides applied (no variant: a copy)."""
        name = self.name if name is None else name
        if name not in self.variants:
            base = copy.deepcopy(self)
            base.name = name
            return base
        over = upgrade_constraint_section(dict(self.variants[name]),
                                          f"constraint.variants.{name}", warn=False)
        over.setdefault("name", name)
        if "variants" in over:
            raise ConfigError(f"constraint.variants.{name}.variants is not a constraint key")
        data = self.to_dict()
        data["variants"] = {}
        data = _deep_merge(data, over)
        out = ConstraintConfig.from_raw(data, f"constraint.variants.{name}", warn=False)
        if out.name in self.variants:
            raise ConfigError(f"constraint.variants.{name}.name must be a base constraint name")
        return out


def upgrade_override_key(key: str, value: Any) -> list[str]:
    """The keys a ``--set`` of a flat constraint key of older configs now means (with a
    DeprecationWarning), e.g. ``constraint.max_drift`` -> ``constraint.invclip.max_drift``."""
    parts = key.split(".")
    head = 3 if parts[:2] == ["constraint", "variants"] else 1
    if (parts[0] != "constraint" or len(parts) != head + 1 or isinstance(value, dict)
            or parts[head] not in FLAT_CONSTRAINT_KEYS):
        return [key]
    prefix = ".".join(parts[:head])
    homes = [f"{prefix}.{h}" for h in FLAT_CONSTRAINT_KEYS[parts[head]]]
    import warnings
    warnings.warn(f"--set {key} is deprecated; write {' and '.join(homes)}",
                  DeprecationWarning, stacklevel=3)
    return homes
