"""The radial-MRI reconstruction job behind ``medvol recon spokes.h5`` (k-space → sinogram by
the Fourier slice theorem, then a registered reconstruction method)."""
from __future__ import annotations

import os
import time

import numpy as np

from ..errors import InputError
from ..volume import Volume

__all__ = ["KSPACE_METHODS", "reconstruct_kspace"]

KSPACE_METHODS = ("pdunet", "fbp")
"""Methods ``medvol recon`` offers for radial k-space files (sinogram domain). The iterative
solvers run on k-space directly through :class:`medvol.mri.RadialNUFFT` in Python."""


def reconstruct_kspace(path: str | os.PathLike, *, method: str = "pdunet",
                       weights: str | None = None, image_size: int | None = None,
                       pixel: float = 1.0, filter: str = "hann", backend: str = "auto",
                       device: str | None = None):
    """Reconstruct undersampled radial MRI k-space (``.h5``/``.npz``/``.npy`` + angles).

    ``backend``/``device`` select the projector as for sinograms (``auto``: ASTRA CUDA on a GPU,
    else medvol's kernels, on ``device``).

    The k-space becomes a sinogram by the Fourier slice theorem (one centred 1D inverse FFT per
    spoke, magnitude); ``method="pdunet"`` reconstructs it with the MRI PD-UNet
    (default weights ``pdunet_mri_x16``), ``"fbp"`` with filtered back-projection. The
    density-compensated gridding (NUFFT adjoint) image is the baseline.

    Returns
    -------
    :class:`medvol.recon.ReconResult`
    """
    from ..mri.radial import gridding_recon, kspace_sinogram_operator, read_radial_kspace
    from .jobs import ReconResult
    from .registry import reconstruct, resolved_params

    if method not in KSPACE_METHODS:
        raise InputError(f"method {method!r} is not available for radial k-space",
                         hint=f"use {' or '.join(KSPACE_METHODS)}")
    k, traj = read_radial_kspace(path)
    if not np.all(np.isfinite(k)):
        raise InputError("k-space contains NaN or infinite values", path=path)
    sino, A = kspace_sinogram_operator(k, traj, image_size=image_size, pixel=pixel,
                                       backend=backend, device=device)
    n = A.domain_shape[-1]
    # the MRI weights unless the caller names others; recorded as used (the registry's default
    # for pdunet is the CT file, which a k-space input never runs)
    if method == "pdunet":
        from .pdunet import weights_for_modality

        weights = weights or weights_for_modality("MR")
    else:
        weights = None
    t0 = time.perf_counter()
    x = reconstruct(A, sino, method, filter=filter, weights=weights)
    seconds = time.perf_counter() - t0
    x = np.asarray(x, dtype=np.float32).reshape(-1, n, n)
    base = np.stack([gridding_recon(kk, traj, (n, n), pixel=pixel)
                     for kk in np.asarray(k).reshape(-1, *k.shape[-2:])]).astype(np.float32)
    sp = (pixel, pixel, pixel)
    org = (-(n - 1) / 2 * pixel, -(n - 1) / 2 * pixel, 0.0)
    vol = Volume(x, spacing=sp, origin=org, meta={"recon_method": method, "modality": "MR"})
    baseline = Volume(base, spacing=sp, origin=org, meta={"recon_method": "gridding"})
    return ReconResult(volume=vol, baseline=baseline, record={
        "mode": "radial-kspace", "method": method, "spokes": int(traj.n_spokes),
        "readout": int(traj.n_read), "image_size": n, "backend": A.backend,
        "device": device, "weights": weights, "seconds_reconstruct": round(seconds, 3),
        "resolved": resolved_params(method, filter=filter, weights=weights)})
