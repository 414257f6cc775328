"""medvol.learned — the infrastructure every learned model shares.

* :mod:`.registry` — model name → builder + config dataclass (:func:`build_model`).
* :mod:`.weights` — one checked safetensors reader/writer with metadata (:func:`save_weights`,
  :func:`load_weights`, :func:`read_weights_info`, :func:`shipped_weights`).
* :mod:`.trainer` — one resumable training loop (:func:`train_loop`) and :func:`save_loss_curve`.
* :mod:`.data` — :func:`resolve_data_root` (``--data DIR`` / ``MEDVOL_DATA``) and the PD-UNet
  training tasks.
* :mod:`.zoo` — the registry entries of the built-in models (``pdunet``, ``lpd``, ``micdir``,
  ``voxelmorph``).

Model-specific jobs live with their method: PD-UNet/LPD inference and training in
:mod:`medvol.recon.pdunet`, MICDIR/VoxelMorph in :mod:`medvol.registration`. This package
imports neither (no cycles).

Importing this package is cheap (torch loads on first use).
"""
from __future__ import annotations

import importlib

_API = {
    "ModelSpec": "registry", "register_model": "registry", "get_model_spec": "registry",
    "available_models": "registry", "build_model": "registry", "make_config": "registry",
    "WeightsInfo": "weights", "save_weights": "weights", "load_weights": "weights",
    "read_weights_info": "weights", "shipped_weights": "weights",
    "TrainResult": "trainer", "train_loop": "trainer", "save_loss_curve": "trainer",
    "resolve_data_root": "data",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'medvol.learned' has no attribute {name!r}")
