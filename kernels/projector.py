"""``Projector``: the X-ray transform ``A`` of a beam geometry as a batched, differentiable operator.

>>> import numpy as np, torch
>>> from medvol.geometry import ParallelBeam2D
>>> from medvol.kernels import Projector
>>> g = ParallelBeam2D(angles=np.linspace(0, np.pi, 180, endpoint=False), n_det=96)
>>> A = Projector(g, volume_shape=(64, 64), spacing=(1.0, 1.0), backend="torch")
>>> y = A(torch.ones(2, 64, 64))          # (2, 180, 96) sinograms, line integrals in mm
>>> x = A.T(y)                             # (2, 64, 64) unfiltered back projection
>>> A.adjointness_test() < 1e-10
True

Backends
--------
``"torch"``  medvol's Joseph kernels: compiled numba kernels for tensors on the CPU
             (``_cpu2d`` / ``_cpu3d``), torch-native kernels (``_torch_kernels``) for tensors on
             CUDA and as the fallback when numba is unavailable. The adjoint is the exact
             transpose of the forward projection.
``"astra"``  the ASTRA Toolbox: 2D on the CPU (``astra_kernel`` = ``"line"``, ``"linear"``
             (default; the same Joseph discretisation as ours for parallel beam) or ``"strip"``;
             fan beam offers ``"line"`` (default) and ``"strip"``), 2D on CUDA (``"cuda"``) and
             3D on CUDA only. ASTRA computes in float32.
``"auto"``   ASTRA CUDA when a CUDA device exists and astra was built with CUDA, else
             ``"torch"``; the choice is logged at INFO level.

Non-torch computations (numba, ASTRA) are wrapped in one ``torch.autograd.Function`` whose
backward is the other direction of the same operator, so gradients of ``A`` are ``Aᵀ`` (and vice
versa) on every backend.

Input checks: wrong trailing shapes raise ``GeometryError``; NaN or infinite inputs raise
``InputError`` (one extra reduction over the input; pass ``check_finite=False`` to skip it).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from medvol.errors import BackendError, GeometryError, InputError
from medvol.geometry import GEOMETRY_TYPES as _GEOMS
from medvol.geometry import ParallelBeam2D
from medvol.operators import Transposed

__all__ = ["Projector"]

log = logging.getLogger("medvol.kernels")

_BACKENDS = ("auto", "torch", "astra")


# --------------------------------------------------------------------------------------------
# the one autograd bridge for non-torch kernels
# --------------------------------------------------------------------------------------------
_BRIDGE = None


def _bridge():
    """``torch.autograd.Function`` applying ``op._np_apply(x, transpose)``; backward = other way."""
    global _BRIDGE
    if _BRIDGE is None:
        import torch

        class _NumpyOperator(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, op, transpose):  # noqa: D401 - torch API
                ctx.op = op
                ctx.transpose = transpose
                arr = x.detach().cpu().numpy()
                out = op._np_apply(arr, transpose)
                return torch.from_numpy(np.ascontiguousarray(out)).to(device=x.device)

            @staticmethod
            def backward(ctx, grad):
                # differentiable itself, so higher-order gradients work too
                return _NumpyOperator.apply(grad.contiguous(), ctx.op, not ctx.transpose), None, None

        _BRIDGE = _NumpyOperator
    return _BRIDGE


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _cuda_available() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


def _numba_module(ndim: int):
    """``_cpu2d`` / ``_cpu3d`` when numba (and the module) import, else None."""
    try:
        if ndim == 2:
            from . import _cpu2d as m
            return m if m.HAVE_NUMBA else None
        from . import _cpu3d as m
        return m
    except Exception as e:  # missing numba or the 3D module
        log.debug("numba CPU kernels unavailable (%s); using torch kernels", e)
        return None


def _torch_module():
    try:
        from . import _torch_kernels as m
    except ImportError as e:
        raise BackendError(f"medvol's torch kernels are not available ({e}) — use "
                           "backend='astra'") from None
    return m


class _Transposed(Transposed):
    """``Aᵀ`` as an operator object: ``A.T(y)``; ``A.T.T`` is ``A`` (plus the projector's
    geometry and backend name)."""

    @property
    def geometry(self):
        return self._p.geometry

    @property
    def backend_name(self) -> str:
        return self._p.backend_name


# --------------------------------------------------------------------------------------------
# Projector
# --------------------------------------------------------------------------------------------
class Projector:
    """X-ray transform ``A`` for a medvol beam geometry on a centred pixel/voxel grid.

    Parameters
    ----------
    geometry : ParallelBeam2D | FanBeam2D | ParallelBeam3D | ConeBeam3D
        Beam geometry (mm, radians); see :mod:`medvol.geometry` for the coordinate convention.
    volume_shape : ``(ny, nx)`` or ``(nz, ny, nx)``
        Image/volume array shape.
    spacing : same order as ``volume_shape``, mm; default 1 mm in every axis.
    backend : ``"auto" | "torch" | "astra"``
    device : ``None | "cpu" | "cuda" | "cuda:N" | torch.device``
        Where to compute. ``None`` follows each input tensor's device (numpy inputs run on the
        CPU, or on CUDA for ASTRA 3D). Tensor outputs live on the compute device; numpy inputs
        give numpy outputs.
    astra_kernel : ``"line" | "linear" | "strip" | "cuda"``, optional
        ASTRA 2D projector; default ``"cuda"`` when ASTRA CUDA is used, else ``"linear"``
        (parallel) / ``"line"`` (fan).
    check_finite : bool
        Reject NaN/inf inputs with ``InputError`` (costs one reduction per call).

    Attributes
    ----------
    domain_shape, range_shape : tuple
        ``volume_shape`` and ``geometry.sino_shape`` (``(views, n_det)`` or
        ``(views, n_rows, n_det)``).
    backend, backend_name : str
        Resolved backend (``"torch"`` / ``"astra"``) and a descriptive name.

    Notes
    -----
    ``A(x)`` maps ``(..., *domain_shape)`` to ``(..., *range_shape)`` line integrals (image units
    × mm); ``A.T(y)`` is the adjoint (unfiltered back projection). Both accept torch tensors or
    numpy arrays, batch over leading dimensions and are differentiable.
    """

    def __init__(self, geometry, volume_shape, spacing=None, *, backend: str = "auto",
                 device: Any = None, astra_kernel: str | None = None,
                 check_finite: bool = True):
        name = type(geometry).__name__
        if not isinstance(geometry, _GEOMS):
            raise GeometryError(f"Projector needs a medvol geometry "
                                f"({', '.join(c.__name__ for c in _GEOMS)}), got {name}")
        nd = int(geometry.ndim)
        try:
            vol = tuple(int(n) for n in volume_shape)
        except (TypeError, ValueError):
            raise GeometryError(f"volume_shape must be a tuple of {nd} integers, "
                                f"got {volume_shape!r}") from None
        if len(vol) != nd or any(n < 1 for n in vol):
            raise GeometryError(f"volume_shape {vol} does not fit the {nd}D geometry {name}: "
                                f"give {'(ny, nx)' if nd == 2 else '(nz, ny, nx)'} with "
                                "positive sizes")
        if spacing is None:
            spacing = (1.0,) * nd
        try:
            sp = tuple(float(s) for s in spacing)
        except (TypeError, ValueError):
            raise GeometryError(f"spacing must be {nd} positive numbers (mm), got {spacing!r}") \
                from None
        if len(sp) != nd or not all(math.isfinite(s) and s > 0 for s in sp):
            raise GeometryError(f"spacing {sp} must hold {nd} positive mm values in the order of "
                                f"volume_shape")
        if backend not in _BACKENDS:
            raise BackendError(f"unknown projector backend {backend!r}; choose one of "
                               f"{', '.join(_BACKENDS)}")
        self.geometry = geometry
        self.domain_shape: tuple[int, ...] = vol
        self.range_shape: tuple[int, ...] = tuple(int(n) for n in geometry.sino_shape)
        self.spacing: tuple[float, ...] = sp
        self.ndim = nd
        self.check_finite = bool(check_finite)
        self._device = self._resolve_device(device)
        self._norm_cache: dict = {}
        self.pinv = None   # pseudo-inverse hook ``pinv(y) -> image`` behind :meth:`fbp`
        self._astra = None
        self._plan = None

        from . import astra_backend as ab

        explicit = backend
        if backend == "auto":
            if self._device is not None and self._device.type == "cpu":
                chosen, why = "torch", "device='cpu' requested"
            elif nd == 2 and abs(sp[0] - sp[1]) > 1e-9 * max(sp):
                chosen, why = "torch", "ASTRA 2D needs square pixels"
            elif ab.cuda_available():
                chosen, why = "astra", "CUDA device and CUDA-enabled ASTRA found"
            else:
                chosen, why = "torch", ("no CUDA-enabled ASTRA" if _cuda_available()
                                        else "no CUDA device")
            log.info("Projector(%s): backend='auto' chose %r (%s)", name, chosen, why)
            backend = chosen
        self.backend = backend

        if backend == "astra":
            if nd == 3:
                if not ab.cuda_available():
                    raise BackendError("ASTRA 3D needs a CUDA GPU; none found — use "
                                       "backend='torch'")
                kernel = "cuda3d"
            else:
                if astra_kernel is None:
                    want_gpu = (self._device is None or self._device.type == "cuda")
                    if want_gpu and ab.cuda_available():
                        astra_kernel = "cuda"
                    else:
                        astra_kernel = "linear" if isinstance(geometry, ParallelBeam2D) else "line"
                kernel = astra_kernel
            self._astra = ab.AstraOperator(geometry, vol, sp, kernel)
            self.backend_name = f"astra:{self._astra.kernel}"
        else:
            if astra_kernel is not None and explicit == "torch":
                raise BackendError(f"astra_kernel={astra_kernel!r} only applies to "
                                   "backend='astra'")
            self._numba = _numba_module(nd)
            self.backend_name = ("torch (numba on CPU, torch kernels on CUDA)"
                                 if self._numba is not None else "torch (torch kernels)")

    # ------------------------------------------------------------------------------------
    @staticmethod
    def _resolve_device(device):
        if device is None:
            return None
        import torch
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise BackendError(f"unknown device {device!r}; use 'cpu' or 'cuda'") from None
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendError(f"device {str(device)!r} requested but no CUDA device is "
                                   "available on this machine — use device='cpu'")
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise BackendError(f"device {str(device)!r} does not exist; this machine has "
                                   f"{torch.cuda.device_count()} CUDA device(s)")
        elif dev.type != "cpu":
            raise BackendError(f"device {str(device)!r} is not supported; use 'cpu' or 'cuda'")
        return dev

    @property
    def T(self) -> _Transposed:
        """The adjoint operator: ``A.T(y)``."""
        return _Transposed(self)

    @property
    def device(self):
        """Requested compute device (``None``: follow the input)."""
        return self._device

    def __repr__(self) -> str:
        g = self.geometry
        return (f"Projector({type(g).__name__}(views={g.n_views}), volume_shape="
                f"{self.domain_shape}, spacing={self.spacing}, backend={self.backend!r}"
                f"{'' if self._device is None else f', device={str(self._device)!r}'})")

    # ------------------------------------------------------------------------------------
    def _np_apply(self, arr: np.ndarray, transpose: bool) -> np.ndarray:
        """Numpy kernels on a flat batch ``(B, *shape)`` (numba or ASTRA)."""
        if self._astra is not None:
            return self._astra.adjoint(arr) if transpose else self._astra.forward(arr)
        m = self._numba
        kw = {}
        if hasattr(m, "plan"):  # 2D kernels: per-ray tables computed once per Projector
            if self._plan is None:
                self._plan = m.plan(self.geometry, self.domain_shape, self.spacing)
            kw["plan"] = self._plan
        if transpose:
            return m.adjoint(arr, self.geometry, self.domain_shape, self.spacing, **kw)
        return m.forward(arr, self.geometry, self.spacing, **kw)

    def _apply(self, data, transpose: bool):
        import torch

        in_shape = self.range_shape if transpose else self.domain_shape
        out_shape = self.domain_shape if transpose else self.range_shape
        what = "sinogram" if transpose else "image"
        is_numpy = not isinstance(data, torch.Tensor)
        if is_numpy:
            try:
                arr = np.asarray(data)
            except Exception:
                raise InputError(f"{what} must be a torch tensor or numpy array, got "
                                 f"{type(data).__name__}") from None
            if arr.dtype not in (np.float32, np.float64):
                arr = arr.astype(np.float32)
            t = torch.from_numpy(np.ascontiguousarray(arr))
        else:
            t = data
            if t.dtype not in (torch.float32, torch.float64):
                t = t.to(torch.float32)
        nd = len(in_shape)
        if t.dim() < nd or tuple(t.shape[t.dim() - nd:]) != in_shape:
            op = "A.T" if transpose else "A"
            raise GeometryError(f"{op} expects a {what} of shape (..., "
                                f"{', '.join(map(str, in_shape))}) but got "
                                f"{tuple(t.shape)}")
        lead = tuple(t.shape[:t.dim() - nd])
        flat = t.reshape((-1, *in_shape))

        dev = self._device if self._device is not None else flat.device
        if self._astra is not None and self._astra.ndim == 3 and self._device is None:
            dev = flat.device  # ASTRA runs on the GPU regardless; output follows the input
        flat = flat.to(dev)
        native = self.backend == "torch" and (dev.type == "cuda" or self._numba is None)
        if self.check_finite and flat.numel():
            # CPU data is checked with numpy: a torch reduction right before a numba parallel
            # region makes torch's OpenMP threads compete with numba's (tens of ms lost)
            if flat.device.type == "cpu":
                ok = bool(np.isfinite(flat.detach().numpy()).all())
            else:
                ok = bool(torch.isfinite(flat).all())
            if not ok:
                raise InputError(f"{what} contains NaN or infinite values — clean the input "
                                 "(or pass check_finite=False)")
        if native:
            tk = _torch_module()
            if transpose:
                out = tk.adjoint(flat.contiguous(), self.geometry, self.domain_shape, self.spacing)
            else:
                out = tk.forward(flat.contiguous(), self.geometry, self.spacing)
        else:
            out = _bridge().apply(flat.contiguous(), self, transpose)
        out = out.reshape((*lead, *out_shape))
        if is_numpy:
            return out.detach().cpu().numpy()
        return out

    def forward(self, x):
        """``A x``: ``(..., *domain_shape)`` → ``(..., *range_shape)`` line integrals (mm)."""
        return self._apply(x, transpose=False)

    def adjoint(self, y):
        """``Aᵀ y``: ``(..., *range_shape)`` → ``(..., *domain_shape)`` (unfiltered back projection)."""
        return self._apply(y, transpose=True)

    __call__ = forward

    def fbp(self, y):
        """Pseudo-inverse ``A⁺y`` (e.g. a filtered back-projection) through the hook
        :attr:`pinv`, which the code that builds the operator sets (kernels stay free of
        reconstruction code): :func:`medvol.recon.pdunet.pdunet_operator` installs the Hann FBP
        that learned reconstructors such as PD-UNet call as ``A.fbp(y)``."""
        if self.pinv is None:
            raise InputError("this Projector has no pseudo-inverse hook (A.pinv is None)",
                             hint="build it with medvol.recon.pdunet.pdunet_operator or set A.pinv")
        return self.pinv(y)

    # ------------------------------------------------------------------------------------
    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        """Operator 2-norm ‖A‖ = sqrt(λ_max(AᵀA)) by the power method (cached).

        Runs ``n_iter`` iterations in float32 from a seeded random start.
        """
        from medvol.operators import power_norm

        key = (int(n_iter), int(seed))
        if key not in self._norm_cache:
            self._norm_cache[key] = power_norm(self, n_iter, seed, device=self._device)
        return self._norm_cache[key]

    def adjointness_test(self, dtype=None, seed: int = 0) -> float:
        """Relative adjoint mismatch ``|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / (‖Ax‖·‖y‖)`` for random x, y.

        Parameters
        ----------
        dtype : torch dtype, default ``torch.float64`` (ASTRA always computes in float32)
        seed : int
        """
        from medvol.operators import adjointness_error

        return adjointness_error(self, dtype=dtype, seed=seed, device=self._device)
