"""medvol.kernels — compute kernels: X-ray projectors (numba CPU, torch CPU/CUDA) and the ASTRA adapter.

``Projector(geometry, volume_shape, spacing, backend="auto"|"torch"|"astra")`` is the public
operator (``A(x)``, ``A.T(y)``, batched and differentiable). Importing this package is cheap: torch,
numba and astra load only when a projector is built or applied.
"""
from .projector import Projector

__all__ = ["Projector"]
