"""Former home of the reconstruction jobs, kept so ``from medvol.recon.run import …`` still works.

The code lives in :mod:`medvol.recon.registry` (method dispatch), :mod:`medvol.recon.grid`
(slice selection, resampling), :mod:`medvol.recon.simulation` (simulated acquisitions),
:mod:`medvol.recon.jobs` (the jobs) and :mod:`medvol.recon.kspace` (radial k-space).
"""
from __future__ import annotations

from .kspace import reconstruct_kspace
from .grid import downsample_inplane, resample_inplane
from .grid import is_ct as _is_ct  # noqa: F401  (old private names, used by tests)
from .grid import select_slices as _slice_range  # noqa: F401
from .jobs import (ReconResult, reconstruct_from_volume, reconstruct_projections,
                   reconstruct_sinogram_folder)
from .registry import available_methods, get_method, reconstruct
from .simulation import simulate_to_folder

__all__ = ["METHODS", "ReconResult", "reconstruct", "reconstruct_from_volume",
           "reconstruct_projections", "reconstruct_sinogram_folder", "reconstruct_kspace",
           "simulate_to_folder", "downsample_inplane", "resample_inplane"]

METHODS = available_methods()
"""The built-in method names (use :func:`medvol.recon.available_methods` for the live list)."""
LEARNED = tuple(m for m in METHODS if get_method(m).learned)
