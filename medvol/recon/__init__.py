"""medvol.recon — reconstruction from projections (and any other linear measurements).

Classical reconstructors (torch tensors or numpy arrays in, the same type out; batched over
leading dimensions) that need only a :class:`medvol.operators.LinearOperator`::

    from medvol.kernels import Projector
    A = Projector(g, volume_shape=(256, 256), spacing=(1.0, 1.0))
    x0 = medvol.recon.fbp(A, y, filter="hann")        # FBP / fan-beam FBP / FDK by geometry
    x1 = medvol.recon.sirt(A, y, n_iter=100, nonneg=True)
    x2 = medvol.recon.cgls(A, y, n_iter=30)
    x3 = medvol.recon.tv_pdhg(A, y, lam=0.01, n_iter=200)

Methods by name (the registry; ``medvol recon --method``)::

    medvol.recon.available_methods()        # ('fbp', 'sirt', 'cgls', 'tv', 'pdunet')
    x = medvol.recon.reconstruct(A, y, "cgls", n_iter=30)

Jobs (files in, files out; what the CLI and the flows call): :func:`recon_job`,
:func:`simulate_job`, :func:`reconstruct_from_volume`, :func:`reconstruct_projections`,
:func:`reconstruct_sinogram_folder`, :func:`write_recon_outputs`.

Importing this package is cheap: torch loads on the first call.
"""
from __future__ import annotations

from .fbp import FILTERS, fbp, fdk, filter_response, filter_sinogram
from .iterative import cgls, divergence, gradient, sirt, tv, tv_objective, tv_pdhg
from .jobs import (ReconResult, recon_job, reconstruct_from_volume, reconstruct_projections,
                   reconstruct_sinogram_folder, simulate_job)
from .outputs import write_recon_outputs
from .registry import (available_methods, get_method, reconstruct, register_method,
                       tv_lambda)

__all__ = ["fbp", "fdk", "filter_response", "filter_sinogram", "FILTERS",
           "sirt", "cgls", "tv_pdhg", "gradient", "divergence", "tv", "tv_objective",
           "available_methods", "get_method", "reconstruct", "register_method", "tv_lambda",
           "ReconResult", "recon_job", "simulate_job", "reconstruct_from_volume",
           "reconstruct_projections", "reconstruct_sinogram_folder", "write_recon_outputs"]
