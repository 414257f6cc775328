"""Filtered backprojection: parallel beam (2D; 3D row by row), flat-detector fan beam, FDK cone.

Every reconstruction here returns attenuation in *image units* (e.g. 1/mm) from line integrals in
mm × image units — the units of :class:`medvol.kernels.Projector` and of
:func:`medvol.phantoms.ellipse_sinogram` — so an FBP of an analytic sinogram reproduces the
phantom's values, not a scaled copy.

Filtering
---------
The ramp is built from its band-limited *spatial* kernel (Kak & Slaney, eq. 3.61):
``h[0] = 1/(4τ²)``, ``h[n odd] = -1/(n²π²τ²)``, ``h[n even ≠ 0] = 0`` with ``τ`` the detector
spacing in mm, zero-padded to ``P ≥ 2·nextpow2(n_det)`` samples and Fourier transformed. Its
response ``τ·DFT(h)`` equals ``|ν|`` (ν in cycles/mm) except near DC, where it is slightly
positive instead of 0 — this is what removes the DC offset/cupping a sampled ``|ν|`` produces.
The apodisation window is then applied on ``|ν| ≤ ν_c = cutoff · 1/(2τ)`` (zero above):

* ``ram-lak``: 1
* ``shepp-logan``: ``sinc(ν / (2ν_c)) = sin(πν/(2ν_c)) / (πν/(2ν_c))``
* ``cosine``: ``cos(πν / (2ν_c))``
* ``hann``: ``(1 + cos(πν/ν_c)) / 2``
* ``hamming``: ``0.54 + 0.46·cos(πν/ν_c)``

(at ``cutoff = 1`` these are scikit-image's filters.) :func:`filter_response` returns the
response so it can be checked against these formulas.

Backprojection
--------------
Backprojection is **pixel/voxel driven** (each pixel centre is projected onto the detector and the
filtered data linearly — bilinearly for cone beam — interpolated), not the projector's ray-driven
adjoint ``A.T``. Fan- and cone-beam FBP need the distance weight ``1/U²`` per pixel *and* view,
which cannot be factored through ``A.T``; and the pixel-driven form avoids the moiré of a
ray-driven adjoint. Only the geometry (``A.geometry``), the grid (``A.domain_shape``) and the
pixel size (``A.spacing``) of the operator are used. For parallel beam,
``backprojection="adjoint"`` uses ``A.T`` instead, scaled by ``det_spacing / (sx·sy)``
(2D; ``det_spacing·det_spacing_row / (sx·sy·sz)`` in 3D): ``A.T`` of a sinogram that is constant
along the detector deposits ``pixel area / ray spacing`` per unit value in every pixel, whereas
the continuous backprojection deposits exactly the value.

Formulas (θ view angle, ``D = src_iso``, ``M = (src_iso + iso_det)/src_iso``):

* Parallel: ``f(x) = Σ_views w_v · q_v(x·u(θ))`` with ``q = p * h``; ``w_v = π / n_views``
  (uniform views over π or 2π: a 2π scan counts each line twice, hence ``π/n`` again).
* Fan, flat detector (Kak & Slaney §3.4.2, rewritten in :mod:`medvol.geometry`'s convention):
  rescale the detector to the isocentre, ``s' = s/M`` (spacing ``τ' = τ/M``); pre-weight
  ``p·D/√(D² + s'²)``; ramp-filter with ``τ'``; backproject
  ``f(x) = Σ_v w_v(s') · U⁻² · q_v(s'(x))`` with ``U = (D + x·d(θ))/D`` and
  ``s'(x) = D·(x·u)/(D + x·d)``. Full 2π scans use ``w_v = ½ · 2π/n_views``. Short scans (less
  than 2π, at least π + fan angle) use Parker weights with the generalised half-range
  ``δ = (β_last − β_first − π)/2``: rays at fan angle ``γ = atan(s'/D)`` (the conjugate of
  ``(β, γ)`` is ``(β + π − 2γ, −γ)`` here) get ``sin²(π/4 · β/(δ+γ))`` for ``β < 2δ + 2γ``,
  ``1`` up to ``π + 2γ``, then ``sin²(π/4 · (π + 2δ − β)/(δ − γ))``; times ``Δβ``.
* FDK cone: per detector row the fan formula with pre-weight ``D/√(D² + s'² + v'²)``, filtering
  along the detector rows only, and bilinear interpolation at
  ``(s', v') = D·(x·u, z)/(D + x·d)``. Exact in the mid-plane; the usual cone-angle artefacts
  off it.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import GeometryError, InputError

__all__ = ["FILTERS", "filter_response", "filter_sinogram", "backproject_parallel", "fbp", "fdk"]

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hann", "hamming")
_CHUNK_ELEMS = 1 << 23          # interpolation work per chunk (elements), bounds peak memory


# ------------------------------------------------------------------------------------ filters
def _padded_length(n_det: int) -> int:
    return max(64, 2 * (1 << int(math.ceil(math.log2(max(n_det, 1))))))


def _window(name: str, nu: np.ndarray, nu_c: float) -> np.ndarray:
    x = np.abs(nu) / nu_c
    if name == "ram-lak":
        w = np.ones_like(x)
    elif name == "shepp-logan":
        w = np.sinc(x / 2.0)
    elif name == "cosine":
        w = np.cos(np.pi * x / 2.0)
    elif name == "hann":
        w = 0.5 * (1.0 + np.cos(np.pi * x))
    elif name == "hamming":
        w = 0.54 + 0.46 * np.cos(np.pi * x)
    else:
        raise InputError(f"unknown FBP filter {name!r}; choose one of {', '.join(FILTERS)}")
    return np.where(x <= 1.0, w, 0.0)


def filter_response(n_det: int, det_spacing: float = 1.0, filter: str = "ram-lak",
                    cutoff: float = 1.0, *, pad_to: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Frequency response of the FBP filter used for ``n_det`` detector columns.

    Parameters
    ----------
    n_det : int
        Detector columns.
    det_spacing : float
        Detector sample spacing τ in mm (for fan/cone beam: scaled to the isocentre).
    filter : str
        One of :data:`FILTERS`.
    cutoff : float
        Window cut-off as a fraction of the Nyquist frequency ``1/(2τ)``, in ``(0, 1]``.
    pad_to : int, optional
        Padded length (default ``max(64, 2·nextpow2(n_det))``).

    Returns
    -------
    nu : ndarray ``(P//2 + 1,)``
        Non-negative frequencies in cycles/mm (``numpy.fft.rfftfreq(P, τ)``).
    H : ndarray ``(P//2 + 1,)``
        Real response in 1/mm: multiply the ``rfft`` of a zero-padded projection by ``H``;
        ``H ≈ |ν|·window(ν)``.
    """
    if not (0.0 < float(cutoff) <= 1.0):
        raise InputError(f"FBP filter cutoff must be in (0, 1] (fraction of Nyquist), got {cutoff}")
    tau = float(det_spacing)
    P = _padded_length(n_det) if pad_to is None else int(pad_to)
    if P < n_det:
        raise InputError(f"pad_to={P} is shorter than the detector ({n_det} columns)")
    n = np.concatenate([np.arange(0, P // 2 + 1), np.arange(-(P - P // 2 - 1), 0)])
    h = np.zeros(P)
    h[0] = 1.0 / (4.0 * tau ** 2)
    odd = (n % 2) != 0
    h[odd] = -1.0 / (np.pi ** 2 * tau ** 2 * n[odd].astype(float) ** 2)
    H = tau * np.real(np.fft.rfft(h))
    nu = np.fft.rfftfreq(P, tau)
    H = H * _window(filter.lower(), nu, float(cutoff) / (2.0 * tau))
    return nu, H


def filter_sinogram(y, det_spacing: float = 1.0, filter: str = "ram-lak", cutoff: float = 1.0):
    """Ramp-filter a sinogram along its last axis (detector columns).

    ``y``: torch tensor ``(..., n_det)``; returns ``q = p * h`` sampled on the same columns, in
    ``(units of y) / mm²·mm = units of y / mm``. See :func:`filter_response`.
    """
    import torch

    n = y.shape[-1]
    _, H = filter_response(n, det_spacing, filter, cutoff)
    P = 2 * (H.size - 1)
    Ht = torch.as_tensor(H, dtype=y.dtype, device=y.device)
    Y = torch.fft.rfft(y, n=P, dim=-1)
    return torch.fft.irfft(Y * Ht, n=P, dim=-1)[..., :n]


# ------------------------------------------------------------------------------------ helpers
def _as_torch(y):
    import torch

    if isinstance(y, torch.Tensor):
        return y, False
    arr = np.asarray(y)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr)), True


def _work_dtype(t):
    import torch

    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _grid_of(A, spacing=None):
    shape = getattr(A, "domain_shape", None)
    if shape is None:
        shape = getattr(A, "volume_shape", None)
    if shape is None:
        raise InputError("fbp: the operator has no domain_shape; pass a medvol.kernels.Projector")
    shape = tuple(int(v) for v in shape)
    if spacing is None:
        spacing = getattr(A, "spacing", None)
        if spacing is None:
            spacing = getattr(A, "volume_spacing", None)
    if spacing is None:
        spacing = (1.0,) * len(shape)
    sp = np.broadcast_to(np.asarray(spacing, dtype=float), (len(shape),))
    return shape, tuple(float(v) for v in sp)


def _centres(n: int, s: float):
    import torch

    return (torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0) * s


def _check_sino(y, g, name="fbp"):
    want = tuple(g.sino_shape)
    if tuple(y.shape[-len(want):]) != want:
        raise InputError(f"{name}: sinogram shape {tuple(y.shape)} does not end with the "
                         f"geometry's {want} (views, [rows,] n_det)")


def _interp1(q, k):
    """Linear interpolation of ``q (B, c, K)`` at fractional column ``k (c, N)``; 0 outside."""
    import torch

    B, c, K = q.shape
    qp = torch.nn.functional.pad(q, (1, 1))                     # (B, c, K+2)
    kk = (k.clamp(-1.0, float(K)) + 1.0)
    k0 = kk.floor().clamp_(max=float(K))
    fr = (kk - k0).to(q.dtype)
    i0 = k0.long().unsqueeze(0).expand(B, c, k.shape[-1])
    v0 = torch.gather(qp, 2, i0)
    v1 = torch.gather(qp, 2, i0 + 1)
    return torch.lerp(v0, v1, fr)


def _interp2(q, r, k):
    """Bilinear interpolation of ``q (B, c, R, K)`` at fractional (row ``r``, column ``k``)
    ``(c, N)``; 0 outside the detector."""
    import torch

    B, c, R, K = q.shape
    qp = torch.nn.functional.pad(q, (1, 1, 1, 1)).reshape(B, c, -1)   # (B, c, (R+2)(K+2))
    rr = r.clamp(-1.0, float(R)) + 1.0
    kk = k.clamp(-1.0, float(K)) + 1.0
    r0 = rr.floor().clamp_(max=float(R))
    k0 = kk.floor().clamp_(max=float(K))
    fr = (rr - r0).to(q.dtype)
    fk = (kk - k0).to(q.dtype)
    W = K + 2
    i00 = (r0.long() * W + k0.long()).unsqueeze(0).expand(B, c, r.shape[-1])

    def at(off):
        return torch.gather(qp, 2, i00 + off)

    top = torch.lerp(at(0), at(1), fk)
    bot = torch.lerp(at(W), at(W + 1), fk)
    return torch.lerp(top, bot, fr)


def _view_weights(g, gamma=None, short_scan=None, fan=False):
    """Per-view (and, for Parker short scans, per-column) angular weights.

    Returns an array ``(views,)`` or ``(views, n_det)``.
    """
    a = np.asarray(g.angles, dtype=np.float64)
    n = a.size
    if not fan:
        return np.full(n, np.pi / n)
    rng = g.angular_range
    if n < 2:
        raise GeometryError("fan/cone FBP needs more than one view")
    step = abs(float(np.median(np.diff(a))))
    full = rng >= 2.0 * np.pi - 0.5 * step
    if short_scan is None:
        short_scan = not full
    if not short_scan:
        if not full:
            warnings.warn(f"fan/cone FBP: angular range {np.degrees(rng):.1f}° < 360° without "
                          "short-scan (Parker) weighting; expect artefacts", stacklevel=3)
        return np.full(n, np.pi / n)               # ½ · Δβ with Δβ = 2π/n
    sgn = 1.0 if np.median(np.diff(a)) > 0 else -1.0
    beta = sgn * (a - a[0])
    span = float(beta.max())
    delta = (span - np.pi) / 2.0
    g_eff = sgn * np.asarray(gamma, dtype=np.float64)
    gmax = float(np.abs(g_eff).max())
    if delta <= 0:
        raise GeometryError(f"short-scan FBP needs at least 180° + fan angle of views; got "
                            f"{np.degrees(span):.1f}°", hint="acquire more views or a full scan")
    if delta < gmax:
        warnings.warn(f"short scan covers 180° + {np.degrees(2 * delta):.1f}°, less than the "
                      f"fan angle {np.degrees(2 * gmax):.1f}°; outer rays are incomplete",
                      stacklevel=3)
    gg = np.clip(g_eff, -delta * (1 - 1e-9), delta * (1 - 1e-9))[None, :]
    b = beta[:, None]
    w = np.ones((n, gg.size))
    lo = b < 2 * delta + 2 * gg
    hi = b > np.pi + 2 * gg
    w = np.where(lo, np.sin(np.pi / 4 * b / (delta + gg)) ** 2, w)
    w = np.where(hi, np.sin(np.pi / 4 * (np.pi + 2 * delta - b) / (delta - gg)) ** 2, w)
    w = np.where(b > np.pi + 2 * delta, 0.0, w)
    return w * step


# --------------------------------------------------------------------------------- parallel
def _bp_parallel2d(q, g, shape, spacing, view_w):
    """Pixel-driven parallel backprojection. q: (B, V, K) filtered; returns (B, ny, nx)."""
    import torch

    B, V, K = q.shape
    ny, nx = shape
    dev, dt = q.device, q.dtype
    Y = _centres(ny, spacing[0]).to(dev)[:, None]
    X = _centres(nx, spacing[1]).to(dev)[None, :]
    th = np.asarray(g.angles, dtype=np.float64)
    cos_t = torch.as_tensor(np.cos(th) / g.det_spacing, dtype=dt, device=dev)[:, None, None]
    sin_t = torch.as_tensor(np.sin(th) / g.det_spacing, dtype=dt, device=dev)[:, None, None]
    k_0 = (K - 1) / 2.0 - g.det_offset / g.det_spacing
    Y, X = Y.to(dt), X.to(dt)
    vw = torch.as_tensor(view_w, dtype=dt, device=dev)
    out = torch.zeros(B, ny * nx, dtype=dt, device=dev)
    c = max(1, min(V, _CHUNK_ELEMS // max(1, B * ny * nx)))
    for i in range(0, V, c):
        k = (X * cos_t[i:i + c] + Y * sin_t[i:i + c] + k_0).reshape(cos_t[i:i + c].shape[0], -1)
        vals = _interp1(q[:, i:i + c], k)
        out += torch.einsum("bcn,c->bn", vals, vw[i:i + c])
    return out.reshape(B, ny, nx)


def backproject_parallel(q, geometry, shape, spacing=(1.0, 1.0)):
    """Pixel-driven backprojection of *filtered* parallel-beam data — FBP's second half.

    ``q``: torch tensor ``(..., views, n_det)`` (e.g. from :func:`filter_sinogram`);
    ``geometry``: :class:`~medvol.geometry.ParallelBeam2D`; ``shape``: ``(ny, nx)``;
    ``spacing``: ``(sy, sx)`` mm. Weights ``π / views``, linear interpolation, zero outside the
    detector. Returns ``(..., ny, nx)``. Filtering once and back-projecting for many geometries
    (e.g. candidate rotation axes, :func:`medvol.recon.projections.estimate_center_of_rotation`)
    gives the same images as :func:`fbp` for each.
    """
    from ..geometry import ParallelBeam2D

    if not isinstance(geometry, ParallelBeam2D):
        raise GeometryError("backproject_parallel needs a ParallelBeam2D geometry")
    _check_sino(q, geometry, "backproject_parallel")
    lead = q.shape[:-2]
    B = int(np.prod(lead)) if lead else 1
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(v) for v in spacing)
    out = _bp_parallel2d(q.reshape(B, *geometry.sino_shape), geometry, shape, spacing,
                         _view_weights(geometry))
    return out.reshape(*lead, *shape)


def _fbp_parallel(A, y, shape, spacing, filt, cutoff, backprojection):
    import torch

    from ..geometry import ParallelBeam2D

    g = A.geometry
    lead = y.shape[:-len(g.sino_shape)]
    B = int(np.prod(lead)) if lead else 1
    q = filter_sinogram(y, g.det_spacing, filt, cutoff)
    vw = _view_weights(g)
    if backprojection == "adjoint":
        w = torch.as_tensor(vw, dtype=q.dtype, device=q.device)
        if isinstance(g, ParallelBeam2D):
            q = q * w[:, None]
            scale = g.det_spacing / (spacing[0] * spacing[1])
        else:
            q = q * w[:, None, None]
            scale = g.det_spacing * g.det_spacing_row / (spacing[0] * spacing[1] * spacing[2])
        return A.T(q) * scale
    if isinstance(g, ParallelBeam2D):
        if len(shape) != 2:
            raise GeometryError(f"ParallelBeam2D needs a 2D image grid, got {shape}")
        out = _bp_parallel2d(q.reshape(B, *g.sino_shape), g, shape, spacing, vw)
        return out.reshape(*lead, *shape)
    # ParallelBeam3D: interpolate detector rows at the slice positions, then 2D per slice.
    if len(shape) != 3:
        raise GeometryError(f"ParallelBeam3D needs a 3D volume grid, got {shape}")
    V, R, K = g.sino_shape
    nz = shape[0]
    z = _centres(nz, spacing[0]).to(q.device)
    r = ((z - g.det_offset_row) / g.det_spacing_row + (R - 1) / 2.0).to(q.dtype)
    qb = q.reshape(B, V, R, K).permute(0, 1, 3, 2).reshape(B, V * K, R)   # rows last
    rows = _interp1(qb.reshape(B * V * K, 1, R), r[None, :].expand(1, nz))  # (BVK, 1, nz)
    qz = rows.reshape(B, V, K, nz).permute(0, 3, 1, 2).reshape(B * nz, V, K)
    out = _bp_parallel2d(qz, g, shape[1:], spacing[1:], vw)
    return out.reshape(*lead, *shape)


# -------------------------------------------------------------------------------- fan / cone
def _fbp_fan(A, y, shape, spacing, filt, cutoff, short_scan):
    import torch

    g = A.geometry
    if len(shape) != 2:
        raise GeometryError(f"FanBeam2D needs a 2D image grid, got {shape}")
    V, K = g.sino_shape
    lead = y.shape[:-2]
    B = int(np.prod(lead)) if lead else 1
    dev, dt = y.device, y.dtype
    D, M = g.src_iso, g.magnification
    s_iso = ((np.arange(K) - (K - 1) / 2.0) * g.det_spacing + g.det_offset) / M
    pre = torch.as_tensor(D / np.sqrt(D ** 2 + s_iso ** 2), dtype=dt, device=dev)
    q = filter_sinogram(y.reshape(B, V, K) * pre, g.det_spacing / M, filt, cutoff)
    w = torch.as_tensor(_view_weights(g, np.arctan(s_iso / D), short_scan, fan=True),
                        dtype=dt, device=dev)
    if w.ndim == 2:                                  # Parker: weight before backprojection
        q = q * w
        w = torch.ones(V, dtype=dt, device=dev)
    ny, nx = shape
    Yc = _centres(ny, spacing[0]).to(dev, dt)[:, None]
    Xc = _centres(nx, spacing[1]).to(dev, dt)[None, :]
    th = torch.as_tensor(np.array(g.angles), dtype=dt, device=dev)
    out = torch.zeros(B, ny * nx, dtype=dt, device=dev)
    c = max(1, min(V, _CHUNK_ELEMS // max(1, B * ny * nx)))
    for i in range(0, V, c):
        t = th[i:i + c, None, None]
        ct, st = torch.cos(t), torch.sin(t)
        xu = Xc * ct + Yc * st                        # x·u
        xd = -Xc * st + Yc * ct                       # x·d
        L = D + xd                                    # distance from the source along d
        s_det = (D + g.iso_det) * xu / L
        k = ((s_det - g.det_offset) / g.det_spacing + (K - 1) / 2.0).reshape(t.shape[0], -1)
        U2 = ((L / D) ** 2).reshape(t.shape[0], -1)
        vals = _interp1(q[:, i:i + c], k) / U2
        out += torch.einsum("bcn,c->bn", vals, w[i:i + c])
    return out.reshape(*lead, ny, nx)


def fdk(A, y, *, filter: str = "ram-lak", cutoff: float = 1.0, short_scan: bool | None = None,
        spacing=None):
    """Feldkamp–Davis–Kress reconstruction for a circular :class:`ConeBeam3D` scan.

    Parameters
    ----------
    A : Projector
        Operator with ``geometry`` (``ConeBeam3D``), ``domain_shape`` ``(nz, ny, nx)`` and
        ``spacing`` ``(sz, sy, sx)`` mm.
    y : tensor or ndarray ``(..., views, n_rows, n_det)``
        Line integrals (mm × image units).
    filter, cutoff
        See :func:`filter_response`.
    short_scan : bool, optional
        Parker weighting; default: automatically when the scan covers less than 360°.
    spacing : optional
        Override the voxel size if ``A`` has no ``spacing`` attribute.

    Returns
    -------
    Volume array ``(..., nz, ny, nx)`` in image units; numpy in → numpy out.
    """
    from ..geometry import ConeBeam3D

    if not isinstance(A.geometry, ConeBeam3D):
        raise GeometryError(f"fdk needs a ConeBeam3D geometry, got {type(A.geometry).__name__}")
    yt, was_np = _as_torch(y)
    _check_sino(yt, A.geometry, "fdk")
    yt = yt.to(_work_dtype(yt))
    shape, sp = _grid_of(A, spacing)
    out = _fdk(A.geometry, yt, shape, sp, filter, cutoff, short_scan)
    return out.cpu().numpy() if was_np else out


def _fdk(g, y, shape, spacing, filt, cutoff, short_scan):
    import torch

    if len(shape) != 3:
        raise GeometryError(f"ConeBeam3D needs a 3D volume grid, got {shape}")
    V, R, K = g.sino_shape
    lead = y.shape[:-3]
    B = int(np.prod(lead)) if lead else 1
    dev, dt = y.device, y.dtype
    D, M = g.src_iso, g.magnification
    s_iso = ((np.arange(K) - (K - 1) / 2.0) * g.det_spacing + g.det_offset) / M
    v_iso = ((np.arange(R) - (R - 1) / 2.0) * g.det_spacing_row + g.det_offset_row) / M
    pre = D / np.sqrt(D ** 2 + s_iso[None, :] ** 2 + v_iso[:, None] ** 2)
    pre = torch.as_tensor(pre, dtype=dt, device=dev)
    q = filter_sinogram(y.reshape(B, V, R, K) * pre, g.det_spacing / M, filt, cutoff)
    w = torch.as_tensor(_view_weights(g, np.arctan(s_iso / D), short_scan, fan=True),
                        dtype=dt, device=dev)
    if w.ndim == 2:
        q = q * w[:, None, :]
        w = torch.ones(V, dtype=dt, device=dev)
    nz, ny, nx = shape
    Z = _centres(nz, spacing[0]).to(dev, dt)[:, None, None]
    Yc = _centres(ny, spacing[1]).to(dev, dt)[None, :, None]
    Xc = _centres(nx, spacing[2]).to(dev, dt)[None, None, :]
    th = torch.as_tensor(np.array(g.angles), dtype=dt, device=dev)
    N = nz * ny * nx
    out = torch.zeros(B, N, dtype=dt, device=dev)
    c = max(1, min(V, _CHUNK_ELEMS // max(1, B * N)))
    for i in range(0, V, c):
        t = th[i:i + c, None, None, None]
        ct, st = torch.cos(t), torch.sin(t)
        xu = Xc * ct + Yc * st                        # (c, 1, ny, nx)
        L = D + (-Xc * st + Yc * ct)
        mag = (D + g.iso_det) / L
        s_det = xu * mag
        v_det = Z * mag                               # (c, nz, ny, nx)
        cc = t.shape[0]
        k = ((s_det - g.det_offset) / g.det_spacing + (K - 1) / 2.0).expand(cc, nz, ny, nx)
        r = (v_det - g.det_offset_row) / g.det_spacing_row + (R - 1) / 2.0
        U2 = ((L / D) ** 2).expand(cc, nz, ny, nx).reshape(cc, -1)
        vals = _interp2(q[:, i:i + c], r.reshape(cc, -1), k.reshape(cc, -1))
        out += torch.einsum("bcn,c->bn", vals / U2, w[i:i + c])
    return out.reshape(*lead, nz, ny, nx)


# ------------------------------------------------------------------------------------ public
def fbp(A, y, *, filter: str = "ram-lak", cutoff: float = 1.0, short_scan: bool | None = None,
        backprojection: str = "pixel", spacing=None):
    """Filtered backprojection for any :mod:`medvol.geometry` beam (dispatch on ``A.geometry``).

    Parameters
    ----------
    A : Projector
        The operator of the acquisition: ``A.geometry`` (ParallelBeam2D, ParallelBeam3D,
        FanBeam2D or ConeBeam3D → :func:`fdk`), ``A.domain_shape`` (``(ny, nx)`` /
        ``(nz, ny, nx)``) and ``A.spacing`` (mm, array order).
    y : torch tensor or ndarray ``(..., views, n_det)`` or ``(..., views, n_rows, n_det)``
        Sinogram(s) of line integrals in mm × image units; leading dims are a batch.
    filter : {"ram-lak", "shepp-logan", "cosine", "hann", "hamming"}
        Apodisation window (see :func:`filter_response`).
    cutoff : float
        Window cut-off as a fraction of the detector Nyquist frequency, ``(0, 1]``.
    short_scan : bool, optional
        Fan/cone beam only: Parker weights. Default: on when the scan covers < 360°.
    backprojection : {"pixel", "adjoint"}
        Parallel beam only: pixel-driven interpolation (default) or the operator's ``A.T``.
    spacing : optional
        Pixel size (mm) when ``A`` has no ``spacing`` attribute.

    Returns
    -------
    Image ``(..., ny, nx)`` / volume ``(..., nz, ny, nx)`` in image units (e.g. 1/mm), same
    type (torch/numpy) and device as ``y``; float64 input stays float64, else float32.

    Notes
    -----
    Parallel scans are assumed to cover π or 2π uniformly (view weight ``π / n_views``); a
    limited-angle scan is normalised the same way and shows the usual missing-wedge artefacts.
    """
    from ..geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D

    g = getattr(A, "geometry", None)
    if g is None:
        raise InputError("fbp needs an operator with a .geometry (a medvol.kernels.Projector)")
    if filter.lower() not in FILTERS:
        raise InputError(f"unknown FBP filter {filter!r}; choose one of {', '.join(FILTERS)}")
    if backprojection not in ("pixel", "adjoint"):
        raise InputError(f"backprojection must be 'pixel' or 'adjoint', got {backprojection!r}")
    if isinstance(g, ConeBeam3D):
        return fdk(A, y, filter=filter, cutoff=cutoff, short_scan=short_scan, spacing=spacing)
    yt, was_np = _as_torch(y)
    _check_sino(yt, g)
    yt = yt.to(_work_dtype(yt))
    shape, sp = _grid_of(A, spacing)
    if isinstance(g, (ParallelBeam2D, ParallelBeam3D)):
        out = _fbp_parallel(A, yt, shape, sp, filter.lower(), cutoff, backprojection)
    elif isinstance(g, FanBeam2D):
        if backprojection != "pixel":
            raise InputError("fan-beam FBP supports only backprojection='pixel' (the 1/U² "
                             "weight cannot be applied through A.T)")
        out = _fbp_fan(A, yt, shape, sp, filter.lower(), cutoff, short_scan)
    else:
        raise GeometryError(f"fbp: unsupported geometry {type(g).__name__}")
    return out.cpu().numpy() if was_np else out
