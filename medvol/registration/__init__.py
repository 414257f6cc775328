"""Deformable registration: MICDIR, VoxelMorph and classical (SimpleITK) baselines.

Submodules are imported lazily (torch / SimpleITK load only when used)::

    from medvol.registration import register_volumes
    result = register_volumes(fixed, moving, method="micdir")   # RegistrationResult

Modules: :mod:`.data` (training/benchmark pairs from real MRI), :mod:`.classical` (affine,
B-spline), :mod:`.learned` (MICDIR/VoxelMorph inference), :mod:`.train` (resumable training:
:func:`train_registration`, the job of ``medvol train micdir``),
:mod:`.metrics` (Dice, folding, inverse consistency, TRE), :mod:`.run` (the ``medvol register`` job).
"""
from __future__ import annotations

import importlib

_LAZY = {"data", "classical", "learned", "train", "metrics", "run"}
_FUNCS = {"register_volumes": "run", "RegistrationResult": "run", "run_register": "run",
          "train_registration": "train",
          "dice_per_structure": "metrics", "folding_percent": "metrics",
          "jacobian_determinant": "metrics", "inverse_consistency_error": "metrics",
          "target_registration_error": "metrics"}

__all__ = sorted(_LAZY | set(_FUNCS))


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in _FUNCS:
        return getattr(importlib.import_module(f".{_FUNCS[name]}", __name__), name)
    raise AttributeError(f"module 'medvol.registration' has no attribute {name!r}")
