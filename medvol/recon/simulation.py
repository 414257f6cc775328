"""Sparse-view acquisitions simulated from a reference volume (``medvol simulate``, and the
evaluation mode of ``medvol recon``).

:func:`simulation_setup` selects/downsamples the reference, converts HU → μ and builds the
sparse-view geometry; :func:`simulate_to_folder` projects it and writes ``sinogram.npy`` +
``sinogram.json`` that :func:`medvol.recon.jobs.reconstruct_sinogram_folder` reads back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .grid import downsample_inplane, is_ct, resample_inplane, select_slices

__all__ = ["SimSetup", "simulation_setup", "simulate_to_folder"]


@dataclass
class SimSetup:
    """A reference prepared for projection."""

    ref: Volume              # selected, downsampled reference
    ct: bool                 # HU data converted to attenuation
    x_true: np.ndarray       # (nz, ny, nx) in projection units
    geometry: Any            # sparse-view geometry
    vol_shape: tuple
    spacing: tuple
    data: Any                # torch tensor shaped for the operator's batch convention
    score_ref: Volume | None = None   # the reference on the scoring grid (None: ``ref``)


def simulation_setup(vol: Volume, geometry: str, views: int, full_views: int,
                     slices: str | slice | int | None, downsample: int,
                     task_grid: tuple[int, float] | None = None) -> SimSetup:
    """Select/downsample the reference, convert HU → μ, and build the sparse-view geometry:
    2D fan/parallel per axial slice (slices form the batch) or one 3D cone beam over the slab.

    ``task_grid = (n, pixel)`` resamples every slice onto a learned model's training grid
    for the projection; ``score_ref`` then keeps the reference on the grid every other method
    would use (selected slices, ``downsample``), where all methods are scored."""
    import torch

    from ..simulate import GEOMETRIES, default_geometry, hu_to_mu

    if geometry not in GEOMETRIES:
        raise InputError(f"unknown geometry {geometry!r} for a volume input",
                         hint=f"use one of {', '.join(GEOMETRIES)}")
    if views < 1 or full_views < views:
        raise InputError(f"views {views} must be between 1 and full_views {full_views}")
    sel = select_slices(vol, slices)
    score_ref = downsample_inplane(sel, downsample)
    if task_grid is not None:
        ref = resample_inplane(sel, task_grid[0], task_grid[1],
                               fill=-1024.0 if is_ct(sel) else None)
    else:
        ref = score_ref
    ct = is_ct(ref)
    img = ref.numpy().astype(np.float32)
    x_true = hu_to_mu(img) if ct else img
    nz, ny, nx = img.shape
    sx, sy, sz = ref.spacing
    if geometry == "cone":
        vol_shape, spacing = (nz, ny, nx), (sz, sy, sx)
        data = torch.from_numpy(x_true)[None]
    else:
        vol_shape, spacing, data = (ny, nx), (sy, sx), torch.from_numpy(x_true)
    # declared sizes before anything is allocated: the full angle list and the sparse sinogram
    # (detector width bounded by twice the larger in-plane size; the default covers the diagonal)
    from ..io.budget import check_volume

    check_volume((full_views,), 8, what="the full-view angle list")
    check_volume((nz, -(-full_views // views), 2 * max(ny, nx, nz)), 4,
                 what="the simulated sparse-view sinogram")
    g_full = default_geometry(geometry, vol_shape, spacing, full_views)
    return SimSetup(ref, ct, x_true, g_full.subsample(views), vol_shape, spacing, data,
                    score_ref)


def simulate_to_folder(vol: Volume, folder, *, geometry: str = "fan", views: int = 16,
                       full_views: int = 360, I0: float | None = None, seed: int = 0,
                       slices: str | slice | int | None = None, downsample: int = 1,
                       backend: str = "auto") -> dict[str, Any]:
    """Project ``vol`` (HU → μ for CT), keep every ``views``-th view, optionally add Poisson noise,
    and write ``sinogram.npy`` + ``sinogram.json`` (geometry, grid, units) into ``folder``.

    2D geometries give ``(slices, views, n_det)``; cone beam ``(views, n_rows, n_det)``.
    Returns the ``sinogram.json`` content.
    """
    import json
    from pathlib import Path

    from ..kernels import Projector
    from ..simulate import add_poisson_noise

    st = simulation_setup(vol, geometry, views, full_views, slices, downsample)
    ref, ct, g, vol_shape, spacing = st.ref, st.ct, st.geometry, st.vol_shape, st.spacing
    nz, ny, nx = st.x_true.shape
    y = Projector(g, vol_shape, spacing, backend=backend)(st.data).numpy().astype(np.float32)
    if I0:
        y = add_poisson_noise(y, I0, seed=seed)
    folder = Path(folder)
    np.save(folder / "sinogram.npy", y)
    info = {"geometry": g.to_dict(), "volume_shape": list(vol_shape), "spacing": list(spacing),
            "ct_hu": ct, "units": "line integrals of mu (1/mm) x mm" if ct else "line integrals",
            "I0": I0, "seed": seed, "views_factor": views, "full_views": full_views,
            "grid": {"shape_zyx": [nz, ny, nx], "spacing": list(ref.spacing),
                     "origin": list(ref.origin), "direction": ref.direction.tolist()}}
    (folder / "sinogram.json").write_text(json.dumps(info, indent=2))
    return info
