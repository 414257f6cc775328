"""PD-UNet inference for CT sinograms and radial MRI k-space."""
from __future__ import annotations

import functools
import logging

import numpy as np

from ..errors import GeometryError, InputError

__all__ = ["pdunet_reconstruct", "pdunet_reconstruct_kspace", "kspace_to_model_input"]

log = logging.getLogger("medvol.learned")


@functools.lru_cache(maxsize=8)
def _cached(name: str):
    from ._legacy_weights import load_pretrained

    return load_pretrained(name)


def _check_task(meta: dict, A, what: str) -> None:
    task = meta.get("task") or {}
    n = task.get("image_size")
    shape = tuple(A.domain_shape)
    if len(shape) != 2:
        raise GeometryError(f"{what}: PD-UNet reconstructs 2D slices; got an operator on {shape}")
    if n and shape != (n, n):
        log.warning("%s: weights were trained on %dx%d images, operator grid is %s — "
                    "expect degraded results", what, n, n, shape)
    name = task.get("name")
    if name:
        from .data import TASKS

        t = TASKS.get(name)
        if t is not None:
            g = t.geometry()
            if (type(g) is not type(A.geometry)
                    or tuple(g.sino_shape) != tuple(A.geometry.sino_shape)):
                log.warning("%s: weights were trained for %s %s sinograms (%s), the operator is "
                            "%s %s — expect degraded results", what, type(g).__name__,
                            g.sino_shape, name, type(A.geometry).__name__,
                            tuple(A.geometry.sino_shape))


def pdunet_reconstruct(A, y, *, weights: str = "pdunet_ct_x16", batch: int = 8):
    """Reconstruct 2D slices from (sparse) sinograms with a pretrained PD-UNet (or LPD).

    Parameters
    ----------
    A : :class:`medvol.kernels.Projector`
        Operator of the measured (sparse) geometry on a 2D grid, e.g.
        ``Projector(task.geometry(), (128, 128), (1.953, 1.953))`` for ``pdunet_ct_x16``.
    y : torch tensor or ndarray ``(views, n_det)`` or ``(B, views, n_det)``
        Line integrals (CT: μ·mm with μ in 1/mm).
    weights : shipped name (``pdunet_ct_x16``, ``pdunet_mri_x16``, ``lpd_ct_x16``,
        ``lpd_mri_x16``) or a ``.safetensors`` path.
    batch : slices per forward pass.

    Returns
    -------
    ``(ny, nx)`` / ``(B, ny, nx)`` images in the training units (CT: μ in 1/mm), same type
    (torch/numpy) as ``y``.

    Raises
    ------
    WeightsError
        Missing, corrupted or mismatched weights.
    GeometryError
        The sinogram does not fit the operator.
    """
    import torch

    from .operator import TomoOperator

    model, meta = _cached(str(weights))
    _check_task(meta, A, "pdunet_reconstruct")
    is_np = not isinstance(y, torch.Tensor)
    yt = torch.as_tensor(np.asarray(y, dtype=np.float32)) if is_np else y.detach().float().cpu()
    want = tuple(A.geometry.sino_shape)
    if yt.dim() < 2 or tuple(yt.shape[-2:]) != want:
        raise GeometryError(f"sinogram shape {tuple(yt.shape)} does not end with the operator's "
                            f"(views, n_det) = {want}")
    lead = yt.shape[:-2]
    flat = yt.reshape(-1, *want)
    op = TomoOperator(A)
    outs = []
    with torch.inference_mode():
        for i in range(0, flat.shape[0], int(batch)):
            outs.append(model(flat[i:i + int(batch)], op))
    out = torch.cat(outs).reshape(*lead, *A.domain_shape)
    return out.numpy() if is_np else out


def kspace_to_model_input(kspace, trajectory, *, image_size: int | None = None,
                          pixel: float = 1.0, backend: str = "torch", device: str | None = None):
    """Radial k-space → ``(sinogram, Projector)`` for the PD-UNet (Fourier slice theorem).

    ``backend``/``device`` choose the projector (:class:`medvol.kernels.Projector`); the shipped
    MRI weights were trained with ``backend="torch"``."""
    from medvol.kernels import Projector

    from ..mri.radial import default_n_det, kspace_to_sinogram, sinogram_geometry

    k = np.asarray(kspace)
    if k.ndim not in (2, 3) or k.shape[-2:] != (trajectory.n_spokes, trajectory.n_read):
        raise InputError(f"k-space shape {k.shape} does not match the trajectory "
                         f"({trajectory.n_spokes} spokes × {trajectory.n_read} samples)")
    n = int(image_size) if image_size is not None else trajectory.n_read // 2
    n_det = default_n_det(n, trajectory.n_read)
    sino = kspace_to_sinogram(k, n_det=n_det, pixel=pixel).astype(np.float32)
    g = sinogram_geometry(trajectory, n_det, pixel)
    return sino, Projector(g, (n, n), (pixel, pixel), backend=backend, device=device,
                           check_finite=False)


def pdunet_reconstruct_kspace(kspace, trajectory, *, weights: str = "pdunet_mri_x16",
                              image_size: int | None = None, pixel: float = 1.0) -> np.ndarray:
    """Reconstruct from undersampled radial k-space ``(spokes, n_read)`` (or ``(B, …)``).

    The k-space is turned into a magnitude sinogram (:func:`medvol.mri.kspace_to_sinogram`) on
    the ParallelBeam2D geometry of the spoke angles, then reconstructed by
    :func:`pdunet_reconstruct`. ``image_size`` defaults to ``n_read // 2`` (2× oversampled
    readout). The shipped ``pdunet_mri_x16`` expects 16 uniform spokes over π (every 16th of
    256) with 256 readout samples and images normalised to max 1.
    """
    sino, A = kspace_to_model_input(kspace, trajectory, image_size=image_size, pixel=pixel)
    return pdunet_reconstruct(A, sino, weights=weights)
