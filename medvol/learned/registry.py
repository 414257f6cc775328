"""Model registry: a name → builder + config dataclass, for every learned model of medvol.

::

    from medvol.learned import build_model, available_models
    model, cfg = build_model("pdunet", {"width": 16})   # (nn.Module, PDUNetConfig)

A config class is a dataclass with a ``validate()`` method that bounds every size (widths,
depths, iterations) so that a config read from an untrusted weights file is refused *before*
any tensor is allocated. :func:`make_config` also checks the type of every field against its
default (an ``int`` field refuses ``"16"``, ``1e9`` or ``True``) and refuses unknown keys.

The built-in models (``pdunet``, ``lpd``, ``micdir``, ``voxelmorph``) are registered by
:mod:`medvol.learned.zoo` on first lookup; other packages register theirs with
:func:`register_model` (a module listed in ``_BUILTIN_MODULES`` is imported on a lookup miss).
"""
from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import InputError

__all__ = ["ModelSpec", "register_model", "get_model_spec", "available_models", "build_model",
           "make_config", "config_to_dict"]

# modules whose import registers models (imported lazily on the first lookup miss)
_BUILTIN_MODULES = ("medvol.learned.zoo", "medvol.ssp.models", "medvol.pretrain.models")
_REGISTRY: dict[str, "ModelSpec"] = {}
_loaded = False
_MAX_TUPLE = 32


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: ``builder(config) -> nn.Module`` with ``config`` a ``config_cls``."""

    name: str
    builder: Callable[[Any], Any]
    config_cls: type
    task: str = ""
    description: str = ""


def register_model(name: str, *, config_cls: type, builder: Callable[[Any], Any], task: str = "",
                   description: str = "", replace: bool = False) -> ModelSpec:
    """Register ``name``. ``config_cls`` must be a dataclass with ``validate()``; registering a
    taken name raises ``ValueError`` unless ``replace`` (a programming error, not user input)."""
    if not (dataclasses.is_dataclass(config_cls) and callable(getattr(config_cls, "validate", None))):
        raise TypeError(f"config_cls of {name!r} must be a dataclass with a validate() method")
    if name in _REGISTRY and not replace and _REGISTRY[name].builder is not builder:
        raise ValueError(f"model {name!r} is already registered")
    spec = ModelSpec(name, builder, config_cls, task, description)
    _REGISTRY[name] = spec
    return spec


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for m in _BUILTIN_MODULES:
            importlib.import_module(m)


def available_models() -> list[str]:
    """Names of all registered models, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; :class:`InputError` naming the choices otherwise."""
    _load_builtins()
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; registered models: "
                         f"{', '.join(sorted(_REGISTRY)) or '(none)'}")
    return _REGISTRY[name]


def _check_value(cls_name: str, field: str, default, value):
    """``value`` coerced to the kind of ``default`` (lists → tuples) or InputError."""
    where = f"{cls_name}.{field}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(f"config {where} must be true/false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"config {where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(float(value)):
            raise InputError(f"config {where} must be a finite number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str) or len(value) > 64:
            raise InputError(f"config {where} must be a short string, got {str(value)[:40]!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) > _MAX_TUPLE:
            raise InputError(f"config {where} must be a list of at most {_MAX_TUPLE} values")
        proto = default[0] if default else 0
        return tuple(_check_value(cls_name, f"{field}[{i}]", proto, v) for i, v in enumerate(value))
    return value


def make_config(config_cls: type, config: Mapping | Any | None = None):
    """A validated ``config_cls`` instance from ``None`` (defaults), a dict or an instance.

    Raises :class:`InputError` for unknown keys, values of the wrong type and sizes outside the
    bounds of ``config_cls.validate()`` — nothing is allocated before this passes.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    if config is None:
        values: dict = {}
    elif isinstance(config, config_cls):
        values = {k: getattr(config, k) for k in fields}
    elif isinstance(config, Mapping):
        unknown = sorted(set(map(str, config)) - set(fields))
        if unknown:
            raise InputError(f"unknown {config_cls.__name__} keys {unknown[:5]}; known: "
                             f"{', '.join(fields)}")
        values = dict(config)
    else:
        raise InputError(f"config must be a dict or {config_cls.__name__}, got "
                         f"{type(config).__name__}")
    checked = {}
    for k, v in values.items():
        f = fields[k]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        checked[k] = _check_value(config_cls.__name__, k, default, v)
    try:
        cfg = config_cls(**checked)
    except (TypeError, ValueError) as e:
        raise InputError(f"invalid {config_cls.__name__}: {e}") from None
    try:
        cfg.validate()
    except ValueError as e:
        raise InputError(f"invalid {config_cls.__name__}: {e}") from None
    return cfg


def config_to_dict(config) -> dict:
    """A config dataclass (or dict) as a JSON-ready dict (tuples → lists)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        d = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    elif isinstance(config, Mapping):
        d = dict(config)
    else:
        raise TypeError(f"config must be a dataclass instance or a dict, got {type(config).__name__}")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def build_model(name: str, config: Mapping | Any | None = None):
    """Build a registered model: returns ``(model, config_instance)``.

    ``config``: ``None`` (the config class defaults), a dict (validated with
    :func:`make_config`) or a config instance (validated too).
    """
    spec = get_model_spec(name)
    cfg = make_config(spec.config_cls, config)
    return spec.builder(cfg), cfg
