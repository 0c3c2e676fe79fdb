"""Registries: every plugin (constraint, rescaling solver, data set) says here who it is.

A plugin registers once, where it is defined, with its name, its parameters (a small dataclass
whose fields are its config keys, with defaults and a ``validate()``) and its capabilities (what
the rest of wganlab must know about it without naming it). The config loader builds each
plugin's section from its dataclass; the trainer, the distributed wrapper and the evaluator ask
for capabilities. Adding a plugin is adding one file: modules of ``wganlab.constraints`` and
``wganlab.rescale`` are discovered, and ``WGANLAB_PLUGINS`` (comma-separated module names)
imports plugins that live elsewhere.

Capabilities in use:

- constraints: ``uses_batch`` (the projection depends on the observed batch: every process of a
  distributed run must observe the global batch), ``reparametrises`` (it changes the critic's
  parameters' names: a saved critic can only be loaded into a constrained one),
  ``draws_per_sample`` (it draws random numbers per sample: distributed runs slice the global
  draws), ``penalty`` (it adds a loss term), ``rank_local`` (it keeps statistics of each
  process's own batch: the processes of a distributed run stay identical replicas but do not
  equal a one-process run);
- solvers: ``uses_batch`` (data-weighted), ``discrete`` (it picks d among candidates: a
  float-level difference, e.g. another summation order across processes, can flip a pick, so
  a distributed run equals a one-process run only up to such flips);
- data sets: see :class:`DataSpec`.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from .errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Plugin(Generic[T]):
    """One registered plugin."""
    name: str
    #: what the registry hands out: a builder, a solver function, a data-set spec
    obj: T
    #: the dataclass of its parameters (its config section), or None when it has none
    params: Optional[type] = None
    capabilities: frozenset[str] = frozenset()
    #: other plugins of the same registry whose sections it also reads (invclip: clip's box)
    uses: tuple[str, ...] = ()
    #: free-form facts (e.g. the critic activation a constraint needs)
    meta: dict[str, Any] = field(default_factory=dict)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


class Registry(Generic[T]):
    """Name -> :class:`Plugin`, for one kind of plugin."""

    def __init__(self, kind: str, packages: tuple[str, ...] = ()):
        self.kind = kind
        #: packages whose every module is imported before a lookup (single-file plugins)
        self.packages = packages
        self._plugins: dict[str, Plugin[T]] = {}
        self._discovered = False

    def register(self, name: str, *, params: Optional[type] = None,
                 capabilities: tuple[str, ...] | frozenset[str] = (),
                 uses: tuple[str, ...] = (), **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""
        if params is not None and not dataclasses.is_dataclass(params):
            raise TypeError(f"{self.kind} {name!r}: params must be a dataclass, got {params!r}")

        def deco(obj: T) -> T:
            self.add(Plugin(name, obj, params, frozenset(capabilities), tuple(uses), meta))
            return obj
        return deco

    def add(self, plugin: Plugin[T]) -> None:
        old = self._plugins.get(plugin.name)
        if old is not None and getattr(old.obj, "__qualname__", None) != getattr(
                plugin.obj, "__qualname__", None):
            raise ValueError(f"{self.kind} {plugin.name!r} is registered twice "
                             f"({_where(old.obj)} and {_where(plugin.obj)})")
        self._plugins[plugin.name] = plugin  # a re-import of the same module: replace

    def discover(self) -> None:
        """Import every module of the registry's packages and of ``WGANLAB_PLUGINS`` once."""
        if self._discovered:
            return
        self._discovered = True
        for package in self.packages:
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package}.{info.name}")
        load_external_plugins()

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._plugins

    def __iter__(self) -> Iterator[Plugin[T]]:
        self.discover()
        return iter(sorted(self._plugins.values(), key=lambda p: p.name))

    def names(self) -> list[str]:
        return [p.name for p in self]

    def get(self, name: str, key: str | None = None) -> Plugin[T]:
        """The plugin ``name``; a ConfigError naming ``key`` and the choices if there is none."""
        self.discover()
        if name not in self._plugins:
            where = f"{key}={name!r}" if key else f"{self.kind} {name!r}"
            raise ConfigError(f"{where} is not a registered {self.kind}; choose from "
                              f"{', '.join(self.names())}")
        return self._plugins[name]


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


_external_loaded: set[str] = set()


def load_external_plugins() -> None:
    """Import the modules named in ``WGANLAB_PLUGINS`` (comma-separated), each once."""
    for name in filter(None, (s.strip() for s in os.environ.get("WGANLAB_PLUGINS", "").split(","))):
        if name in _external_loaded:
            continue
        _external_loaded.add(name)
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"WGANLAB_PLUGINS names {name!r}, which cannot be imported: {e}; "
                              "put its folder on PYTHONPATH or remove it") from None


@dataclass(frozen=True)
class DataSpec:
    """What a data set is, for everything that must not ask for its name."""
    #: image (N, C, S, S) in [-1, 1], or toy (N, 2) points
    kind: str
    #: image channels
    channels: int = 1
    #: whether it reads files from ``data.dir``
    needs_dir: bool = False
    #: pixel side of the stored images (padded to data.image_size)
    side: int = 28
    #: classes of the labels (the evaluator classifier's outputs)
    classes: int = 10

    @property
    def toy(self) -> bool:
        return self.kind == "toy"


#: constraint name -> builder ``(critic, section) -> Constraint``
CONSTRAINTS: Registry = Registry("constraint", ("wganlab.constraints",))
#: rescaling solver name -> ``(ctx: SolveContext) -> d``
SOLVERS: Registry = Registry("rescaling solver", ("wganlab.rescale",))
#: data set name -> :class:`DataSpec`
DATASETS: Registry[DataSpec] = Registry("data set")

for _name in ("8gaussians", "25gaussians", "swissroll", "checkerboard"):
    DATASETS.register(_name)(DataSpec("toy"))
DATASETS.register("mnist5k")(DataSpec("image"))
for _name in ("mnist", "fashion-mnist", "kmnist", "idx"):
    DATASETS.register(_name)(DataSpec("image", needs_dir=True))


def data_spec(name: str) -> DataSpec:
    """The spec of data set ``name`` (a ConfigError listing the choices if unknown)."""
    return DATASETS.get(name, "data.name").obj
