"""Typed dataclasses from plain data (YAML, ``--set``), refusing what does not fit.

The generic half of the config loader: it knows nothing of WGANs. :func:`_build` makes a
dataclass from a mapping, checking every key against the fields (with a "did you mean"),
every value against the field's type (bools are not ints, YAML's ``1e-4`` string is a float,
integers must fit 64 bits and the sizes in :data:`LIMITS`); a class with a ``from_raw(raw,
key)`` classmethod builds itself (the constraint section, whose keys come from the plugin
registries). :func:`_check_tree` refuses self-referencing, absurdly deep or huge inputs first.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Union

from .errors import ConfigError

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
    "constraint.solvers.output.subsample": 1 << 16,
}



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
    if hasattr(tp, "from_raw"):  # a section that builds itself (e.g. the constraint's)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of keys, not {type(value).__name__}")
        return tp.from_raw(value, key)
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
