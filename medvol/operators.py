"""The linear-operator contract every reconstructor in :mod:`medvol.recon` relies on.

A forward model ``A`` maps an image (the *domain*, real, ``domain_shape`` trailing axes) to
measurements (the *range*, ``range_shape`` trailing axes; real line integrals for
:class:`medvol.kernels.Projector`, complex k-space samples for :class:`medvol.mri.RadialNUFFT`).
Leading axes are a batch. The solvers (:func:`~medvol.recon.sirt`, :func:`~medvol.recon.cgls`,
:func:`~medvol.recon.tv_pdhg`) use nothing else, so any object with these members works::

    A(x)                  # forward, (..., *domain_shape) -> (..., *range_shape)
    A.T(y)                # adjoint w.r.t. the real inner products Re<u, v>, back to the domain
    A.domain_shape        # tuple of ints
    A.range_shape         # tuple of ints
    A.norm()              # largest singular value (power iteration; cache it)
    A.adjointness_test()  # |<Ax, y> - <x, A^T y>| / (|Ax| |y|) for random x, y (≈ 1e-6 or less)

Optional: ``A.sirt_weights() -> (R, C)``, the range and domain weights of SIRT
(``x ← x + C·Aᵀ R (y − A x)``). Without it SIRT uses inverse row and column sums
``R = 1/A(1)``, ``C = 1/Aᵀ(1)``, which only make sense for a non-negative ``A`` such as the
X-ray transform; a Fourier operator provides a density compensation instead.

:func:`power_norm` and :func:`adjointness_error` implement the two checks for any operator
(real or complex range), so an operator class can simply delegate to them.
"""
from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

__all__ = ["LinearOperator", "Transposed", "power_norm", "adjointness_error", "real_dtype"]


@runtime_checkable
class LinearOperator(Protocol):
    """Structural type of a linear forward model (see the module docstring)."""

    @property
    def domain_shape(self) -> tuple[int, ...]: ...

    @property
    def range_shape(self) -> tuple[int, ...]: ...

    def __call__(self, x: Any) -> Any: ...

    @property
    def T(self) -> Any: ...

    def norm(self, n_iter: int = 50, seed: int = 0) -> float: ...

    def adjointness_test(self, dtype: Any = None, seed: int = 0) -> float: ...


class Transposed:
    """``Aᵀ`` of an operator with ``forward``/``adjoint`` methods, as an operator object:
    ``A.T(y)`` is ``A.adjoint(y)``, ``A.T.T`` is ``A``, shapes swap, ``‖Aᵀ‖ = ‖A‖``."""

    def __init__(self, parent):
        self._p = parent

    def __call__(self, y):
        return self._p.adjoint(y)

    @property
    def T(self):
        return self._p

    @property
    def domain_shape(self) -> tuple[int, ...]:
        return self._p.range_shape

    @property
    def range_shape(self) -> tuple[int, ...]:
        return self._p.domain_shape

    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        """‖Aᵀ‖ = ‖A‖."""
        return self._p.norm(n_iter=n_iter, seed=seed)

    def __repr__(self) -> str:
        return f"{self._p!r}.T"


def real_dtype(dtype):
    """The real torch dtype of the same precision (``complex64`` → ``float32``)."""
    import torch

    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _inner(a, b) -> float:
    """Real inner product ``Re Σ conj(a)·b`` in float64/complex128."""
    import torch

    if a.is_complex() or b.is_complex():
        return float(torch.real(torch.vdot(a.reshape(-1).to(torch.complex128),
                                           b.reshape(-1).to(torch.complex128))))
    return float((a.double() * b.double()).sum())


def power_norm(A, n_iter: int = 50, seed: int = 0, *, dtype=None, device=None) -> float:
    """``‖A‖ = sqrt(λ_max(AᵀA))`` by ``n_iter`` power iterations from a seeded random start."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(tuple(A.domain_shape), generator=gen, dtype=torch.float64)
    x = (x / x.norm()).to(dtype)
    if device is not None:
        x = x.to(device)
    lam = 0.0
    with torch.no_grad():
        for _ in range(int(n_iter)):
            z = A.T(A(x))
            lam = float(z.double().norm())
            if lam == 0.0:
                break
            x = z / lam
    return math.sqrt(lam)


def adjointness_error(A, *, dtype=None, seed: int = 0, device=None) -> float:
    """Relative adjoint mismatch ``|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / (‖Ax‖·‖y‖)`` for random x, y.

    ``x`` is uniform in ``[0, 1)`` on the domain; ``y`` is standard normal on the range
    (complex normal when ``A`` produces complex values). Inner products are real parts of
    ``Σ conj(u)·v``, the inner product for which ``A.T`` is the adjoint.
    """
    import torch

    dtype = torch.float64 if dtype is None else dtype
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.rand(tuple(A.domain_shape), generator=gen, dtype=torch.float64).to(dtype)
    if device is not None:
        x = x.to(device)
    with torch.no_grad():
        ax = A(x)
        y = torch.randn(tuple(A.range_shape), generator=gen, dtype=torch.float64)
        if ax.is_complex():
            y = torch.complex(y, torch.randn(tuple(A.range_shape), generator=gen,
                                             dtype=torch.float64))
        y = y.to(ax.dtype if not ax.is_complex() else ax.dtype).to(ax.device)
        aty = A.T(y)
    lhs, rhs = _inner(ax, y), _inner(x, aty)
    den = float(ax.abs().double().norm() * y.abs().double().norm())
    return abs(lhs - rhs) / den if den > 0 else abs(lhs - rhs)
