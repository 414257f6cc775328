"""medvol.recon — reconstruction from projections.

Classical reconstructors (torch tensors or numpy arrays in, the same type out; batched over
leading dimensions)::

    from medvol.kernels import Projector
    A = Projector(g, volume_shape=(256, 256), spacing=(1.0, 1.0))
    x0 = medvol.recon.fbp(A, y, filter="hann")        # FBP / fan-beam FBP / FDK by geometry
    x1 = medvol.recon.sirt(A, y, n_iter=100, nonneg=True)
    x2 = medvol.recon.cgls(A, y, n_iter=30)
    x3 = medvol.recon.tv_pdhg(A, y, lam=0.01, n_iter=200)

Importing this package is cheap: torch loads on the first call.
"""
from __future__ import annotations

from .fbp import FILTERS, fbp, fdk, filter_response, filter_sinogram
from .iterative import cgls, divergence, gradient, sirt, tv, tv_objective, tv_pdhg

__all__ = ["fbp", "fdk", "filter_response", "filter_sinogram", "FILTERS",
           "sirt", "cgls", "tv_pdhg", "gradient", "divergence", "tv", "tv_objective"]
