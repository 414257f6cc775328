"""ADMM for TV-regularised least squares on volumes: the data-consistency solver of the diffusion
samplers (:mod:`medvol.recon.diffusion`) and the 3D ADMM-TV baseline.

Problem (``x`` a volume whose axis −3 is z, in the units of the operator's domain)::

    min_x  ½‖A x − y‖² + λ ‖D x‖₁

with ``D = D_z`` (forward difference along z: the "TV-z" of DiffusionMBIR / DDS) or
``D = (D_z, D_y, D_x)`` (anisotropic 3D TV, the ADMM-TV baseline). Scaled-form ADMM with the split
``d = D x`` and scaled dual ``u``::

    x ← argmin ½‖A x − y‖² + ρ/2 ‖D x − d + u‖²    (CG on (AᵀA + ρ DᵀD) x = Aᵀy + ρ Dᵀ(d − u))
    d ← S(D x + u, λ/ρ)                            (soft threshold)
    u ← u + D x − d

The state (``x``, ``d``, ``u``) lives in :class:`ADMMState`, so a sampler can run one iteration per
diffusion step with the split and dual persisting across steps.

``A`` is any :class:`medvol.operators.LinearOperator` that maps the volume batch: a 2D projector
applied to the slices as a batch (``x`` shaped ``(nz, ny, nx)``) or a 3D projector (``x`` shaped
``(…, nz, ny, nx)``). :class:`SliceChunked` applies a 2D operator in chunks of slices to bound
peak memory. Written here rather than taken from a library because D must be the z-coupling of a
batch of per-slice projections, with a state that persists across diffusion steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import InputError

__all__ = ["soft_threshold", "diff", "diff_adjoint", "ADMMState", "SliceChunked",
           "MatrixSliceOperator", "admm_init",
           "admm_iteration", "admm_tv", "cg", "final_data_consistency", "normalised_operator"]

_AXES = {"z": -3, "y": -2, "x": -1}


def soft_threshold(v, kappa: float):
    """``S(v, κ) = sign(v)·max(|v| − κ, 0)`` (elementwise; torch tensors)."""
    import torch

    return torch.sign(v) * torch.clamp(v.abs() - float(kappa), min=0.0)


def diff(x, axis: int = -3, *, circular: bool = False):
    """Forward difference along ``axis``: ``(Dx)_k = x_{k+1} − x_k``.

    Neumann boundary (default): the last entry is 0. ``circular=True``: the last slice is
    differenced against the first (DiffusionMBIR's wrap)."""
    import torch

    if circular:
        return torch.roll(x, -1, dims=axis) - x
    out = torch.zeros_like(x)
    n = x.shape[axis]
    out.narrow(axis, 0, n - 1).copy_(x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1))
    return out


def diff_adjoint(p, axis: int = -3, *, circular: bool = False):
    """The exact adjoint ``Dᵀ`` of :func:`diff` (same boundary)."""
    import torch

    if circular:
        return torch.roll(p, 1, dims=axis) - p
    n = p.shape[axis]
    out = torch.zeros_like(p)
    q = p.narrow(axis, 0, n - 1)                  # the last entry of Dx is identically 0
    out.narrow(axis, 0, n - 1).sub_(q)
    out.narrow(axis, 1, n - 1).add_(q)
    return out


def _D(x, axes, circular):
    return [diff(x, _AXES[a], circular=circular) for a in axes]


def _Dt(ps, axes, circular):
    out = None
    for p, a in zip(ps, axes):
        t = diff_adjoint(p, _AXES[a], circular=circular)
        out = t if out is None else out + t
    return out


def _dot(a, b) -> Any:
    return (a * b).sum()


class SliceChunked:
    """A 2D operator applied to a stack of slices ``chunk`` slices at a time (bounds the peak
    memory of the projector's work arrays); same interface as the wrapped operator."""

    def __init__(self, A, chunk: int = 16):
        if chunk < 1:
            raise InputError(f"chunk must be at least 1, got {chunk}")
        self.A, self.chunk = A, int(chunk)
        self.domain_shape, self.range_shape = A.domain_shape, A.range_shape

    def _apply(self, f, x, nd):
        import torch

        lead = x.shape[:x.dim() - nd]
        flat = x.reshape(-1, *x.shape[x.dim() - nd:])
        outs = [f(flat[i:i + self.chunk]) for i in range(0, flat.shape[0], self.chunk)]
        out = torch.cat(outs, 0)
        return out.reshape(*lead, *out.shape[1:])

    def __call__(self, x):
        return self._apply(self.A, x, len(self.domain_shape))

    def adjoint(self, y):
        return self._apply(self.A.T, y, len(self.range_shape))

    @property
    def T(self):
        from ..operators import Transposed

        return Transposed(self)

    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        return self.A.norm(n_iter, seed)

    def adjointness_test(self, dtype=None, seed: int = 0) -> float:
        return self.A.adjointness_test(dtype, seed)


class MatrixSliceOperator:
    """A 2D operator as its explicit (sparse CSR) matrix, applied to a stack of slices by one
    sparse matrix product.

    Built once from ``A`` by back-projecting the unit sinograms (``range`` size back-projections,
    batched), so it holds exactly ``A``'s numbers (``A`` must have an exact adjoint, as medvol's
    projectors do). Hand-written because the diffusion samplers call ``A``/``Aᵀ`` hundreds of
    times on small grids (64²–128²) where a dense matmul is far cheaper on a CPU than
    re-tracing rays. Building it needs a dense ``4·range·domain`` bytes once (64², 8 views:
    12 MB; 128²: 48 MB); the CSR copies keep only the nonzeros.
    """

    MAX_BYTES = 1 << 30

    def __init__(self, A, *, batch: int = 64, dtype=None):
        import math

        import torch

        self.domain_shape, self.range_shape = tuple(A.domain_shape), tuple(A.range_shape)
        n_dom, n_rng = math.prod(self.domain_shape), math.prod(self.range_shape)
        if 4 * n_dom * n_rng > self.MAX_BYTES:
            raise InputError(f"explicit matrix of {n_rng}×{n_dom} is too large",
                             hint="use the projector (or SliceChunked) directly")
        rows = []
        for i in range(0, n_rng, batch):
            k = min(batch, n_rng - i)
            e = torch.zeros(k, n_rng, dtype=dtype or torch.float32)
            e[torch.arange(k), torch.arange(i, i + k)] = 1.0
            rows.append(A.T(e.reshape(k, *self.range_shape)).reshape(k, n_dom))
        M = torch.cat(rows, 0)                            # (n_rng, n_dom) = A
        self._norm = float(torch.linalg.matrix_norm(M.double(), ord=2))
        # a ray meets O(n) of the n² pixels: sparse CSR products are ~n times cheaper
        from .._warnings import quiet

        with quiet("Sparse CSR tensor support"):
            self.S = M.to_sparse_csr()
            self.St = M.T.contiguous().to_sparse_csr()
        self.n_dom, self.n_rng = n_dom, n_rng

    def _mm(self, S, v, n_in, out_shape):
        import torch

        lead = v.shape[:v.dim() - (len(self.domain_shape) if n_in == self.n_dom
                                   else len(self.range_shape))]
        flat = v.reshape(-1, n_in)
        S = S.to(flat.device)
        out = torch.sparse.mm(S.to(flat.dtype), flat.T.contiguous()).T
        return out.reshape(*lead, *out_shape)

    def __call__(self, x):
        return self._mm(self.S, x, self.n_dom, self.range_shape)

    def adjoint(self, y):
        return self._mm(self.St, y, self.n_rng, self.domain_shape)

    @property
    def T(self):
        from ..operators import Transposed

        return Transposed(self)

    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        return self._norm

    def adjointness_test(self, dtype=None, seed: int = 0) -> float:
        return 0.0


class _Scaled:
    """``s·A`` (used to normalise ‖A‖ to 1 so ρ and λ do not depend on pixel size or views)."""

    def __init__(self, A, s: float):
        self.A, self.s = A, float(s)
        self.domain_shape, self.range_shape = A.domain_shape, A.range_shape

    def __call__(self, x):
        return self.A(x) * self.s

    def adjoint(self, y):
        return self.A.T(y) * self.s

    @property
    def T(self):
        from ..operators import Transposed

        return Transposed(self)

    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        return self.A.norm(n_iter, seed) * self.s

    def adjointness_test(self, dtype=None, seed: int = 0) -> float:
        return self.A.adjointness_test(dtype, seed)


def normalised_operator(A, y):
    """``(A/‖A‖, y/‖A‖)``: the same minimiser for the data term, with a unit-norm operator, so
    that ρ and λ mean the same at any pixel size, detector pitch or number of views."""
    s = 1.0 / float(A.norm())
    return _Scaled(A, s), y * s


@dataclass
class ADMMState:
    """The ADMM iterate ``x``, split ``d`` (one tensor per TV axis) and scaled dual ``u``."""

    x: Any
    d: list
    u: list
    axes: tuple = ("z",)
    circular: bool = False
    iterations: int = 0


def admm_init(x0, *, axes: Sequence[str] = ("z",), circular: bool = False) -> ADMMState:
    """State at ``x0`` with ``d = u = 0`` (as DiffusionMBIR/DDS start)."""
    import torch

    axes = tuple(axes)
    bad = [a for a in axes if a not in _AXES]
    if bad or not axes:
        raise InputError(f"TV axes must be a non-empty subset of z, y, x; got {axes}")
    return ADMMState(x0.clone(), [torch.zeros_like(x0) for _ in axes],
                     [torch.zeros_like(x0) for _ in axes], axes, circular)


def cg(apply_M, b, x0, n_iter: int, tol: float = 0.0):
    """Conjugate gradients for the SPD system ``M x = b`` from ``x0`` (``n_iter`` steps; stops
    early when ‖r‖ ≤ tol·‖b‖)."""
    x = x0.clone()
    r = b - apply_M(x)
    p = r.clone()
    rs = _dot(r, r)
    bn = float(_dot(b, b)) ** 0.5
    for _ in range(int(n_iter)):
        if float(rs) <= (tol * bn) ** 2 or float(rs) == 0.0:
            break
        Mp = apply_M(p)
        alpha = rs / _dot(p, Mp)
        x = x + alpha * p
        r = r - alpha * Mp
        rs_new = _dot(r, r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


def admm_iteration(A, y, state: ADMMState, *, lam: float, rho: float, n_cg: int = 1,
                   x_start=None, ATy=None) -> ADMMState:
    """One ADMM iteration (in place on ``state``; also returned).

    ``x_start`` (optional) replaces ``state.x`` as the CG warm start — DDS starts from the
    Tweedie estimate x̂₀. ``ATy`` may be passed to save one back-projection per call.
    """
    if rho <= 0 or lam < 0:
        raise InputError(f"ADMM needs rho > 0 and lam >= 0, got rho={rho}, lam={lam}")
    axes, circ = state.axes, state.circular
    if ATy is None:
        ATy = A.T(y)
    rhs = ATy + rho * _Dt([d - u for d, u in zip(state.d, state.u)], axes, circ)

    def M(v):
        return A.T(A(v)) + rho * _Dt(_D(v, axes, circ), axes, circ)

    x = cg(M, rhs, state.x if x_start is None else x_start, n_cg)
    Dx = _D(x, axes, circ)
    state.d = [soft_threshold(g + u, lam / rho) for g, u in zip(Dx, state.u)]
    state.u = [u + g - d for u, g, d in zip(state.u, Dx, state.d)]
    state.x = x
    state.iterations += 1
    return state


def admm_tv(A, y, *, lam: float, rho: float = 1.0, n_outer: int = 30, n_cg: int = 20,
            axes: Sequence[str] = ("z", "y", "x"), circular: bool = False, x0=None,
            nonneg: bool = False, progress: bool = False, normalise: bool = True):
    """ADMM-TV reconstruction: ``n_outer`` ADMM iterations of ``n_cg`` CG steps each.

    ``axes=("z", "y", "x")`` is anisotropic 3D TV (the baseline), ``("z",)`` the TV-z
    least-squares problem of the diffusion samplers; ``lam = 0`` solves plain least squares.
    With ``normalise`` (default) the problem is solved with ``A/‖A‖`` and ``y/‖A‖``: λ and ρ are
    then relative to a unit-norm operator (the data term is divided by ‖A‖²). ``nonneg``
    clips the result at 0 after every outer iteration (a projection, not part of the ADMM
    theory; off by default). Returns ``x`` shaped like ``A.T(y)``.
    """
    import torch

    from .iterative import _progress

    if normalise:
        A, y = normalised_operator(A, y)
    y = torch.as_tensor(y)
    ATy = A.T(y)
    st = admm_init(torch.zeros_like(ATy) if x0 is None else torch.as_tensor(x0).to(ATy),
                   axes=axes, circular=circular)
    with _progress(n_outer, "ADMM-TV", progress) as advance:
        for _ in range(int(n_outer)):
            admm_iteration(A, y, st, lam=lam, rho=rho, n_cg=n_cg, ATy=ATy)
            if nonneg:
                st.x = st.x.clamp_min(0.0)
            advance()
    return st.x


def final_data_consistency(A, y, x, *, eps: float = 1e-8):
    """DiffusionMBIR's closing step ``x ← x + Aᵀ(y − Ax) / Aᵀ(A·1)`` (one SIRT-like
    normalised Landweber step; pixels the rays miss are left unchanged)."""
    import torch

    ones = torch.ones_like(x)
    w = A.T(A(ones))
    upd = A.T(y - A(x))
    return torch.where(w > eps, x + upd / w.clamp_min(eps), x)
