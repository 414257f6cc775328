"""Iterative reconstruction: SIRT, CGLS and TV-regularised least squares (Chambolle–Pock PDHG).

All solvers need only the operator interface of :class:`medvol.operators.LinearOperator`:
``A(x)``, ``A.T(y)`` (and ``A.norm()`` for :func:`tv_pdhg`); ``A.domain_shape`` /
``A.range_shape`` tell how many trailing axes are the image and the data, the rest are a batch
that is solved independently (per-item step sizes in CGLS). The image is real; the data may be
real (sinograms, :class:`medvol.kernels.Projector`) or complex (k-space,
:class:`medvol.mri.RadialNUFFT`), with ``A.T`` the adjoint for ``Re⟨u, v⟩``.
Inputs may be torch tensors or numpy arrays; numpy in gives numpy out.

``callback(iteration, x)`` is called after every iteration (``iteration`` counts from 1) with the
current estimate; its return value is ignored. ``progress=True`` shows a determinate ``rich`` bar
(iterations, ETA) when stderr is a terminal; ``progress=None`` follows the enclosing
:func:`medvol._progress.scope` (the CLI's ``--progress/--no-progress``).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import numpy as np

from ..errors import InputError

__all__ = ["sirt", "cgls", "tv_pdhg", "gradient", "divergence", "tv", "tv_objective"]


# ------------------------------------------------------------------------------------ helpers
def _to_torch(a, like=None):
    import torch

    if isinstance(a, torch.Tensor):
        return a, False
    arr = np.asarray(a)
    if np.iscomplexobj(arr):
        dt = torch.complex128 if arr.dtype == np.complex128 else torch.complex64
    else:
        dt = torch.float64 if arr.dtype == np.float64 else torch.float32
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(dt)
    if like is not None:
        t = t.to(like.device)
    return t, True


def _out(x, was_np):
    return x.detach().cpu().numpy() if was_np else x


def _ndims(A, y):
    dom = getattr(A, "domain_shape", None)
    rng = getattr(A, "range_shape", None)
    if dom is None or rng is None:
        raise InputError("the operator needs domain_shape and range_shape attributes "
                         "(use medvol.kernels.Projector)")
    dom, rng = tuple(dom), tuple(rng)
    if tuple(y.shape[y.ndim - len(rng):]) != rng:
        raise InputError(f"data shape {tuple(y.shape)} does not end with the operator's range "
                         f"shape {rng}")
    return dom, rng, tuple(y.shape[:y.ndim - len(rng)])


def _sum_last(t, n):
    return t.reshape(*t.shape[:t.ndim - n], -1).sum(-1) if n else t


def _sqnorm(t, n):
    """``‖t‖²`` over the last ``n`` axes (``|t|²`` for complex data)."""
    return _sum_last(t.real.square() + t.imag.square() if t.is_complex() else t * t, n)


def _real(dtype):
    from ..operators import real_dtype

    return real_dtype(dtype)


def _bcast(v, n):
    return v.reshape(*v.shape, *([1] * n))


@contextlib.contextmanager
def _progress(total: int, desc: str, enabled: bool | None):
    """Yield an ``advance()`` callable: a determinate bar on an interactive stderr only
    (:func:`medvol._progress.bar`; ``enabled=None`` follows the command's --progress)."""
    from .._progress import bar

    with bar(total, desc, progress=enabled, unit="it") as update:
        yield update


def _init_x(x0, dom, lead, like):
    import torch

    dt = _real(like.dtype)
    if x0 is None:
        return torch.zeros(*lead, *dom, dtype=dt, device=like.device)
    x, _ = _to_torch(x0, like)
    x = x.to(dt).clone()
    if tuple(x.shape[x.ndim - len(dom):]) != dom:
        raise InputError(f"x0 shape {tuple(x.shape)} does not end with the image shape {dom}")
    return x.expand(*lead, *dom).clone() if x.shape != (*lead, *dom) else x


# --------------------------------------------------------------------------------------- SIRT
def sirt(A, y, n_iter: int = 100, *, x0=None, nonneg: bool = False, progress: bool = True,
         callback: Callable | None = None):
    """Simultaneous Iterative Reconstruction Technique.

    ``x ← x + C·Aᵀ R (y − A x)`` with ``R = 1 / A(1)`` (inverse ray lengths, mm⁻¹) and
    ``C = 1 / Aᵀ(1)`` (inverse column sums); zero sums give zero weights (rays missing the image,
    pixels no ray crosses). For a non-negative ``A`` this is preconditioned gradient descent on
    ``½‖A x − y‖²_R`` that decreases that weighted residual monotonically and converges to the
    ``R``-weighted least-squares solution nearest ``x0`` in the ``C⁻¹`` norm. An operator that
    is not non-negative supplies its own weights by ``A.sirt_weights() -> (R, C)`` (e.g. the
    density compensation of :class:`medvol.mri.RadialNUFFT`: iterative gridding).

    Parameters
    ----------
    A : operator
        ``A(x)``, ``A.T(y)``, ``domain_shape``, ``range_shape``.
    y : tensor or ndarray ``(..., *range_shape)``
        Data (sinogram), line integrals.
    n_iter : int
        Iterations.
    x0 : optional ``(..., *domain_shape)``
        Start (default zeros).
    nonneg : bool
        Project onto ``x ≥ 0`` after every update.

    Returns
    -------
    ``(..., *domain_shape)`` estimate, image units.
    """
    import torch

    yt, was_np = _to_torch(y)
    dom, rng, lead = _ndims(A, yt)
    with torch.no_grad():
        R, C = _sirt_weights(A, dom, rng, yt)
        x = _init_x(x0, dom, lead, yt)
        if nonneg:
            x.clamp_(min=0)
        with _progress(n_iter, "SIRT", progress) as advance:
            for it in range(1, int(n_iter) + 1):
                x = x + C * A.T(R * (yt - A(x)))
                if nonneg:
                    x.clamp_(min=0)
                advance()
                if callback is not None:
                    callback(it, _out(x, was_np))
    return _out(x, was_np)


def _sirt_weights(A, dom, rng, yt):
    import torch

    rdt = _real(yt.dtype)
    hook = getattr(A, "sirt_weights", None)
    if hook is not None:
        R, C = hook()
        R, C = torch.as_tensor(R), torch.as_tensor(C)
        return R.to(rdt).to(yt.device), C.to(rdt).to(yt.device)
    row = A(torch.ones(dom, dtype=rdt, device=yt.device))
    col = A.T(torch.ones(rng, dtype=yt.dtype, device=yt.device))
    R = torch.where(row.abs() > 1e-12 * row.abs().max(), 1.0 / row, torch.zeros_like(row))
    C = torch.where(col.abs() > 1e-12 * col.abs().max(), 1.0 / col, torch.zeros_like(col))
    return R, C


# --------------------------------------------------------------------------------------- CGLS
def cgls(A, y, n_iter: int = 30, *, x0=None, progress: bool = True,
         callback: Callable | None = None):
    """Conjugate gradients on the normal equations ``AᵀA x = Aᵀ y`` (CGLS, Björck's form).

    Minimises ``‖A x − y‖²`` over the Krylov space; early stopping (``n_iter``) is the
    regularisation. Each batch item gets its own step sizes. Iteration stops early for items
    whose normal-equation residual has vanished.

    Parameters and returns as :func:`sirt` (no ``nonneg``).
    """
    import torch

    yt, was_np = _to_torch(y)
    dom, rng, lead = _ndims(A, yt)
    nd, nr = len(dom), len(rng)
    with torch.no_grad():
        x = _init_x(x0, dom, lead, yt)
        r = yt - A(x) if x0 is not None else yt.clone()
        s = A.T(r)
        p = s.clone()
        gamma = _sum_last(s * s, nd)
        tiny = torch.finfo(_real(yt.dtype)).tiny
        with _progress(n_iter, "CGLS", progress) as advance:
            for it in range(1, int(n_iter) + 1):
                q = A(p)
                qq = _sqnorm(q, nr)
                alpha = torch.where(qq > tiny, gamma / qq.clamp(min=tiny), torch.zeros_like(qq))
                x = x + _bcast(alpha, nd) * p
                r = r - _bcast(alpha, nr) * q
                s = A.T(r)
                gamma_new = _sum_last(s * s, nd)
                beta = torch.where(gamma > tiny, gamma_new / gamma.clamp(min=tiny),
                                   torch.zeros_like(gamma))
                p = s + _bcast(beta, nd) * p
                gamma = gamma_new
                advance()
                if callback is not None:
                    callback(it, _out(x, was_np))
                if bool((gamma <= tiny).all()):
                    break
    return _out(x, was_np)


# ----------------------------------------------------------------------------------------- TV
def gradient(x, ndim: int):
    """Forward differences over the last ``ndim`` axes (zero at the far boundary).

    ``x``: tensor ``(..., *spatial)`` → ``(ndim, ..., *spatial)``; units per pixel.
    """
    import torch

    g = x.new_zeros((ndim,) + tuple(x.shape))
    for i in range(ndim):
        ax = x.ndim - ndim + i
        n = x.shape[ax]
        if n > 1:
            g[i].narrow(ax, 0, n - 1).copy_(torch.diff(x, dim=ax))
    return g


def divergence(p, ndim: int):
    """Negative adjoint of :func:`gradient`: ``⟨∇x, p⟩ = −⟨x, div p⟩``.

    ``p``: ``(ndim, ..., *spatial)`` → ``(..., *spatial)``.
    """
    out = p.new_zeros(p.shape[1:])
    for i in range(ndim):
        ax = out.ndim - ndim + i
        n = out.shape[ax]
        if n == 1:
            continue
        pi = p[i]
        # backward difference of p with p[-1] treated as 0 and p[-1 - 1] at the end
        out.narrow(ax, 0, n - 1).add_(pi.narrow(ax, 0, n - 1))
        out.narrow(ax, 1, n - 1).sub_(pi.narrow(ax, 0, n - 1))
    return out


def tv(x, ndim: int):
    """Isotropic total variation ``Σ_pixels ‖∇x‖₂`` over the last ``ndim`` axes (per item)."""
    g = gradient(x, ndim)
    return _sum_last(g.pow(2).sum(0).sqrt(), ndim)


def tv_objective(A, y, x, lam: float):
    """``½‖A x − y‖² + λ·TV(x)`` per batch item (torch tensors or numpy arrays)."""
    yt, was_np = _to_torch(y)
    xt, _ = _to_torch(x, yt)
    dom, rng, _ = _ndims(A, yt)
    xt = xt.to(_real(yt.dtype))
    r = A(xt) - yt
    val = 0.5 * _sqnorm(r, len(rng)) + lam * tv(xt, len(dom))
    return val.detach().cpu().numpy() if was_np else val


def tv_pdhg(A, y, lam: float, n_iter: int = 200, *, nonneg: bool = True, x0=None,
            progress: bool = True, callback: Callable | None = None,
            tau: float | None = None, sigma: float | None = None, op_norm: float | None = None):
    """Total-variation regularised reconstruction by Chambolle–Pock (PDHG).

    Solves ``min_x ½‖A x − y‖² + λ·TV(x)  (+ indicator x ≥ 0 when nonneg)`` with isotropic TV
    of forward differences per pixel (Neumann boundary; the same TV as
    ``skimage.restoration.denoise_tv_chambolle``, whose ``weight`` equals ``λ`` for ``A = I``).

    The stacked operator is ``K = [A; μ∇]`` with ``μ = ‖A‖ / ‖∇‖`` (``‖∇‖ ≤ √(4·ndim)``: √8 in
    2D, √12 in 3D), so both blocks have the same norm and ``‖K‖ ≤ √2·‖A‖``; the TV term becomes
    ``(λ/μ)·‖μ∇x‖₂,₁`` (dual ball of radius ``λ/μ``). Default steps ``τ = σ = 0.99/‖K‖``
    satisfy ``τσ‖K‖² < 1``. Iteration:

    ``p ← (p + σ(A x̄ − y)) / (1 + σ)``; ``q ← proj_{|q|≤λ/μ}(q + σμ∇x̄)``;
    ``x⁺ ← proj_{≥0}(x − τ(Aᵀp − μ·div q))``; ``x̄ ← 2x⁺ − x``.

    Parameters
    ----------
    A : operator
        ``A(x)``, ``A.T(y)``, ``A.norm()`` (largest singular value), shapes.
    y : ``(..., *range_shape)``
        Data.
    lam : float
        TV weight λ ≥ 0 (data units² per image unit·pixel).
    n_iter : int
        Iterations.
    nonneg : bool
        Constrain ``x ≥ 0``.
    x0 : optional
        Start (default zeros).
    tau, sigma : float, optional
        Step sizes; must satisfy ``τσ‖K‖² < 1`` (checked).
    op_norm : float, optional
        ``‖A‖`` if already known (skips ``A.norm()``).

    Returns
    -------
    ``(..., *domain_shape)`` estimate.
    """
    import torch

    if not (lam >= 0) or not math.isfinite(lam):
        raise InputError(f"tv_pdhg: lam must be a finite number >= 0, got {lam}")
    yt, was_np = _to_torch(y)
    dom, rng, lead = _ndims(A, yt)
    nd = len(dom)
    normA = float(op_norm) if op_norm is not None else float(A.norm())
    if not (normA > 0) or not math.isfinite(normA):
        raise InputError(f"tv_pdhg: operator norm must be positive, got {normA}")
    grad_norm = math.sqrt(4.0 * nd)
    mu = normA / grad_norm
    L = math.sqrt(normA ** 2 + (mu * grad_norm) ** 2)
    if tau is None and sigma is None:
        tau = sigma = 0.99 / L
    elif tau is None:
        tau = 0.98 / (sigma * L * L)
    elif sigma is None:
        sigma = 0.98 / (tau * L * L)
    if not (tau > 0 and sigma > 0) or tau * sigma * L * L >= 1.0:
        raise InputError(f"tv_pdhg: step sizes tau={tau}, sigma={sigma} violate "
                         f"tau·sigma·L² < 1 with L = ‖[A; μ∇]‖ = {L:.4g}")
    radius = lam / mu
    with torch.no_grad():
        x = _init_x(x0, dom, lead, yt)
        if nonneg:
            x.clamp_(min=0)
        xbar = x.clone()
        p = torch.zeros_like(yt)
        q = x.new_zeros((nd,) + tuple(x.shape))
        with _progress(n_iter, "TV-PDHG", progress) as advance:
            for it in range(1, int(n_iter) + 1):
                p = (p + sigma * (A(xbar) - yt)) / (1.0 + sigma)
                q = q + (sigma * mu) * gradient(xbar, nd)
                nrm = q.pow(2).sum(0, keepdim=True).sqrt()
                q = q / torch.clamp(nrm / radius, min=1.0) if radius > 0 else torch.zeros_like(q)
                x_new = x - tau * (A.T(p) - mu * divergence(q, nd))
                if nonneg:
                    x_new.clamp_(min=0)
                xbar = 2.0 * x_new - x
                x = x_new
                advance()
                if callback is not None:
                    callback(it, _out(x, was_np))
    return _out(x, was_np)
