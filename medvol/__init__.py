"""medvol: medical volumetric imaging — DICOM ingest, sparse-view reconstruction, registration.

Submodules are imported lazily so ``import medvol`` stays fast::

    import medvol as mv
    vols = mv.io.read_dicom_series("study/")
"""
from __future__ import annotations

import importlib

from .errors import MedvolError  # noqa: F401  (light)
from .volume import Volume  # noqa: F401  (numpy only)

__version__ = "0.1.0"
_LAZY = {"io", "geometry", "recon", "metrics", "kernels", "models", "flows", "report",
         "projections", "simulate", "phantoms", "manifest", "registration"}


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'medvol' has no attribute {name!r}")
