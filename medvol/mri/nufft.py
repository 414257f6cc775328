"""Radial MRI forward model as a linear operator (finufft, torch in/out, autograd-aware).

:class:`RadialNUFFT` satisfies :class:`medvol.operators.LinearOperator`, so the iterative
solvers of :mod:`medvol.recon` run on radial k-space directly::

    from medvol.mri import RadialNUFFT, uniform_trajectory
    A = RadialNUFFT(uniform_trajectory(256, 256).subsample(8), (128, 128))
    x = medvol.recon.cgls(A, kspace, n_iter=15)        # kspace: complex (32, 256)

Domain: real images ``(..., ny, nx)``; range: complex k-space ``(..., n_spokes, n_read)`` sampled
as :class:`~medvol.mri.RadialTrajectory` says, with the convention of
:func:`~medvol.mri.nufft_forward` (k-space values carry ``pixel²``). The adjoint ``A.T`` maps
k-space back to *real* images, ``Re(Fᴴ y)`` — the adjoint for the real inner products
``Re⟨u, v⟩`` of a real-image model (magnitude images; a complex-image model would be the same
class with a complex domain). Both directions are a ``torch.autograd.Function`` whose backward is
the other direction, so a network can be trained through the operator.

Why not torchkbnufft / an FFT-gridding operator: finufft (already the package's NUFFT) is
exact to ``eps`` and fast on CPU; the autograd wrapper is the 20 lines below.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..operators import Transposed
from .radial import RadialTrajectory, _type1, _type2, density_compensation

__all__ = ["RadialNUFFT"]


def _bridge():
    import torch

    class _Nufft(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t, op, adjoint):  # noqa: D401 - torch API
            ctx.op, ctx.adjoint = op, adjoint
            return op._np_apply(t, adjoint)

        @staticmethod
        def backward(ctx, grad):
            # y = F x (x real): dL/dx = Re(Fᴴ g);  x = Re(Fᴴ y): dL/dy = F g
            return ctx.op._np_apply(grad, not ctx.adjoint), None, None

    return _Nufft


class RadialNUFFT:
    """Radial-MRI NUFFT ``A``: real image ``(ny, nx)`` → complex k-space ``(n_spokes, n_read)``.

    Parameters
    ----------
    trajectory : :class:`~medvol.mri.RadialTrajectory`
    image_shape : ``(ny, nx)``
    pixel : pixel size in mm (k-space values carry ``pixel²``, as in
        :func:`~medvol.mri.nufft_forward`).
    eps : finufft tolerance.

    Inputs may be numpy arrays or torch tensors (any leading batch axes); the output has the
    input's type, device and precision (float32 ↔ complex64, float64 ↔ complex128).
    """

    def __init__(self, trajectory: RadialTrajectory, image_shape: tuple[int, int], *,
                 pixel: float = 1.0, eps: float = 1e-7):
        if not isinstance(trajectory, RadialTrajectory):
            raise InputError("RadialNUFFT needs a medvol.mri.RadialTrajectory")
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise InputError(f"image_shape must be (ny, nx), got {tuple(image_shape)}")
        if not pixel > 0:
            raise InputError(f"pixel must be a positive number of mm, got {pixel}")
        self.trajectory = trajectory
        self.pixel = float(pixel)
        self.eps = float(eps)
        self._shape = shape
        self._norm_cache: dict = {}

    # -------------------------------------------------------------------- protocol
    @property
    def domain_shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def range_shape(self) -> tuple[int, int]:
        return (self.trajectory.n_spokes, self.trajectory.n_read)

    @property
    def T(self) -> Transposed:
        """``Aᵀ`` as an operator (``A.T(y)`` is :meth:`adjoint`)."""
        return Transposed(self)

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        """``A x``: real ``(..., ny, nx)`` → complex ``(..., n_spokes, n_read)``."""
        return self._apply(x, adjoint=False)

    def adjoint(self, y):
        """``Aᵀ y = Re(Fᴴ y)``: complex ``(..., n_spokes, n_read)`` → real ``(..., ny, nx)``."""
        return self._apply(y, adjoint=True)

    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        """‖A‖ by power iteration (cached per ``(n_iter, seed)``)."""
        from ..operators import power_norm

        key = (int(n_iter), int(seed))
        if key not in self._norm_cache:
            self._norm_cache[key] = power_norm(self, n_iter, seed)
        return self._norm_cache[key]

    def adjointness_test(self, dtype=None, seed: int = 0) -> float:
        """Relative mismatch of ``Re⟨Ax, y⟩`` and ``⟨x, Aᵀy⟩`` (see
        :func:`medvol.operators.adjointness_error`); about ``eps`` or less."""
        from ..operators import adjointness_error

        return adjointness_error(self, dtype=dtype, seed=seed)

    # -------------------------------------------------------------------- extras
    def density_compensation(self) -> np.ndarray:
        """Ramp weights per sample (:func:`~medvol.mri.density_compensation`)."""
        return density_compensation(self.trajectory)

    def sirt_weights(self):
        """SIRT weights ``(R, C)``: ``R`` the density compensation, ``C = 1/(pixel⁴·max(1, λ))``.

        With ``C = 1/pixel⁴`` one SIRT step from zero is the gridding reconstruction
        (``C·Aᵀ R y``) and SIRT is iterative density-compensated gridding (preconditioned
        Landweber). On undersampled trajectories the outer samples are sparser than Nyquist and
        the largest eigenvalue ``λ`` of ``C·Aᵀ R A`` exceeds 2 (about the undersampling factor),
        which would diverge; ``λ`` is estimated by 30 power iterations (cached) and divided out.
        """
        import torch

        R = torch.from_numpy(self.density_compensation())
        C = torch.full(self._shape, 1.0 / self.pixel ** 4, dtype=torch.float64)
        if "sirt_lambda" not in self._norm_cache:
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(self._shape, generator=gen, dtype=torch.float64)
            lam = 1.0
            for _ in range(30):
                z = C * self.adjoint(R * self.forward(x / x.norm()))
                lam = float(z.norm())
                x = z
            self._norm_cache["sirt_lambda"] = lam
        return R, C / max(1.0, self._norm_cache["sirt_lambda"])

    def __repr__(self) -> str:
        return (f"RadialNUFFT({self.trajectory.n_spokes} spokes x {self.trajectory.n_read}, "
                f"image {self._shape}, pixel {self.pixel:g} mm)")

    # -------------------------------------------------------------------- plumbing
    def _check(self, shape, adjoint: bool):
        want = self.range_shape if adjoint else self.domain_shape
        if tuple(shape[len(shape) - 2:]) != tuple(want) or len(shape) < 2:
            what = "k-space" if adjoint else "image"
            raise InputError(f"{what} shape {tuple(shape)} does not end with {tuple(want)}")

    def _np_apply(self, t, adjoint: bool):
        """torch in → torch out through numpy/finufft (no autograd here)."""
        import torch

        self._check(t.shape, adjoint)
        lead = tuple(t.shape[:-2])
        a = t.detach().cpu().numpy().reshape(-1, *t.shape[-2:])
        if adjoint:
            out = _type1(a.reshape(a.shape[0], -1), self.trajectory, self._shape, self.pixel,
                         self.eps).real
            dt = torch.float64 if t.dtype in (torch.complex128, torch.float64) else torch.float32
            out = out.reshape(*lead, *self._shape)
        else:
            out = _type2(a, self.trajectory, self.pixel, self.eps)
            dt = torch.complex128 if t.dtype in (torch.float64, torch.complex128) \
                else torch.complex64
            out = out.reshape(*lead, *self.range_shape)
        return torch.from_numpy(np.ascontiguousarray(out)).to(dtype=dt, device=t.device)

    def _apply(self, data, adjoint: bool):
        import torch

        if isinstance(data, torch.Tensor):
            if not adjoint and data.is_complex():
                raise InputError("RadialNUFFT takes real images (the domain is real)")
            if data.requires_grad and torch.is_grad_enabled():
                return _bridge().apply(data, self, adjoint)
            return self._np_apply(data, adjoint)
        arr = np.asarray(data)
        if not adjoint and np.iscomplexobj(arr):
            raise InputError("RadialNUFFT takes real images (the domain is real)")
        if not np.all(np.isfinite(arr)):
            raise InputError("input contains NaN or infinite values")
        single = arr.dtype in (np.float32, np.complex64)
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if not (t.is_complex() or t.is_floating_point()):
            t = t.double()
        out = self._np_apply(t, adjoint)
        out = out.numpy()
        return out if not single else out.astype(np.complex64 if out.dtype.kind == "c"
                                                 else np.float32)
