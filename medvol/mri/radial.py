"""Radial MRI: trajectories, NUFFT forward model, k-space → sinogram, gridding reconstruction.

Conventions (match :mod:`medvol.geometry`)
------------------------------------------
An image is ``(ny, nx)`` with square pixels of ``pixel`` mm; pixel ``(r, c)`` sits at
``x = (c − (nx−1)/2)·pixel``, ``y = (r − (ny−1)/2)·pixel``. Its Fourier transform is
``F(kx, ky) = Σ f(r, c) · exp(−2πi (kx·x + ky·y)) · pixel²`` (k in cycles/mm).

A **spoke** at angle ``θ`` samples ``k = κ·(cos θ, sin θ)`` — the detector axis ``u(θ)`` of a
:class:`~medvol.geometry.ParallelBeam2D` view at the same angle. The readout has ``n_read``
samples ``κ_j = (j − n_read/2)·Δκ`` (``j = 0…n_read−1``, DC at ``j = n_read/2``) with
``Δκ = 1/(n_read·pixel)``, i.e. ``±`` the image Nyquist frequency ``1/(2·pixel)`` for the default
2× oversampling ``n_read = 2·N`` (the reference implementation's spoke from −π to +π).

**Fourier slice theorem.** The 1D Fourier transform of the parallel projection
``p(θ, s) = ∫ f(s·u(θ) + t·d(θ)) dt`` is ``F(κ·u(θ))``. Hence the centred inverse DFT of one
spoke, ``p(s_k) = Σ_j F(κ_j) exp(2πi κ_j s_k) Δκ`` on ``s_k = (k − (n_read−1)/2)·pixel``, is
the projection on a ParallelBeam2D detector with ``det_spacing = pixel`` centred on the
isocentre. :func:`kspace_to_sinogram` evaluates exactly this sum with one FFT per spoke (plus
the two linear phases that put both grids' origins at their centres — the reference code's
"half-pixel shift"), takes the magnitude (no density compensation), and centre-crops the
``n_read`` bins to ``n_det`` (default ``⌈N√2⌉`` rounded up to the parity of ``n_read`` so the
crop is symmetric: 182 for N = 128, 364 for N = 256). The matching operator is::

    ParallelBeam2D(angles=spoke_angles, n_det=n_det, det_spacing=pixel)

on the ``(N, N)`` grid with spacing ``(pixel, pixel)``. The reference's ``(sin θ, cos θ)`` spoke
direction is this convention with ``θ_ref = π/2 − θ``.

The forward NUFFT is finufft's type-2 transform (``pip install finufft``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GeometryError, InputError

__all__ = ["GOLDEN_ANGLE", "RadialTrajectory", "uniform_trajectory", "golden_angle_trajectory",
           "nufft_forward", "nufft_adjoint", "radial_kspace", "kspace_to_sinogram",
           "sinogram_geometry", "density_compensation", "gridding_recon", "read_radial_kspace",
           "default_n_det", "kspace_sinogram_operator"]

GOLDEN_ANGLE = math.radians(111.246117975)
"""Golden-angle increment for radial MRI in radians (111.246°, Winkelmann et al. 2007)."""


@dataclass(frozen=True, eq=False)
class RadialTrajectory:
    """Radial k-space trajectory: spoke angles (radians) and readout samples per spoke.

    ``kx, ky`` (cycles per pixel) of sample ``j`` on spoke ``i``:
    ``κ_j·(cos θ_i, sin θ_i)`` with ``κ_j = (j − n_read/2)/n_read``.
    """

    angles: np.ndarray
    n_read: int

    def __post_init__(self):
        a = np.array(self.angles, dtype=np.float64).reshape(-1)
        if a.size == 0 or not np.all(np.isfinite(a)):
            raise GeometryError("radial trajectory needs at least one finite spoke angle")
        a.setflags(write=False)
        object.__setattr__(self, "angles", a)
        if int(self.n_read) != self.n_read or int(self.n_read) < 2:
            raise GeometryError(f"n_read must be an integer >= 2, got {self.n_read}")
        object.__setattr__(self, "n_read", int(self.n_read))

    @property
    def n_spokes(self) -> int:
        return int(self.angles.size)

    def __len__(self) -> int:
        return self.n_spokes

    def __getitem__(self, key) -> "RadialTrajectory":
        return RadialTrajectory(np.atleast_1d(self.angles[key]), self.n_read)

    def subsample(self, k: int, offset: int = 0) -> "RadialTrajectory":
        """Keep every ``k``-th spoke (acceleration ``k``)."""
        if int(k) != k or k < 1:
            raise GeometryError(f"acceleration must be a positive integer, got {k}")
        return self[offset::int(k)]

    def radii(self) -> np.ndarray:
        """``κ_j`` in cycles per pixel, ``(n_read,)``."""
        return (np.arange(self.n_read) - self.n_read / 2.0) / self.n_read

    def kxy(self) -> tuple[np.ndarray, np.ndarray]:
        """``(kx, ky)`` in cycles/pixel, each ``(n_spokes, n_read)``."""
        r = self.radii()[None, :]
        return r * np.cos(self.angles)[:, None], r * np.sin(self.angles)[:, None]


def uniform_trajectory(n_spokes: int, n_read: int, *, angular_range: float = math.pi
                       ) -> RadialTrajectory:
    """``n_spokes`` equidistant spokes over ``angular_range`` (default π, endpoint excluded)."""
    if int(n_spokes) != n_spokes or n_spokes < 1:
        raise GeometryError(f"n_spokes must be a positive integer, got {n_spokes}")
    return RadialTrajectory(np.arange(int(n_spokes)) * (angular_range / int(n_spokes)), n_read)


def golden_angle_trajectory(n_spokes: int, n_read: int, *, increment: float = GOLDEN_ANGLE
                            ) -> RadialTrajectory:
    """Golden-angle spokes ``θ_i = i·111.246°`` (mod 2π)."""
    if int(n_spokes) != n_spokes or n_spokes < 1:
        raise GeometryError(f"n_spokes must be a positive integer, got {n_spokes}")
    return RadialTrajectory(np.mod(np.arange(int(n_spokes)) * increment, 2 * math.pi), n_read)


def _finufft():
    try:
        import finufft
    except ImportError as e:  # pragma: no cover - depends on environment
        from ..errors import BackendError
        raise BackendError("radial MRI needs the finufft package — pip install finufft") from e
    return finufft


def _image2d(image, name="image") -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2D array (ny, nx), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or infinite values")
    return a


def _phase(traj: RadialTrajectory, shape: tuple[int, int]):
    """Angular frequencies ``(wx, wy)`` (radians per pixel, flattened) and the phase ramp that
    moves finufft's mode origin to medvol's pixel-centre origin."""
    ny, nx = (int(s) for s in shape)
    kx, ky = traj.kxy()
    wx = (2 * np.pi * kx).ravel()
    wy = (2 * np.pi * ky).ravel()
    # finufft mode index m runs −n/2 … n/2−1 (modeord 0) = array index − n//2; medvol's pixel
    # centre is at array index − (n−1)/2 = m + (n//2 − (n−1)/2): a phase for the offset.
    ox = nx // 2 - (nx - 1) / 2.0
    oy = ny // 2 - (ny - 1) / 2.0
    return wx, wy, np.exp(-1j * (wx * ox + wy * oy))


def _type2(f: np.ndarray, traj: RadialTrajectory, pixel: float, eps: float) -> np.ndarray:
    """Images ``(B, ny, nx)`` → k-space ``(B, n_spokes·n_read)`` (complex128)."""
    finufft = _finufft()
    wx, wy, ph = _phase(traj, f.shape[-2:])
    f = np.ascontiguousarray(f, dtype=np.complex128)
    c = finufft.nufft2d2(wy, wx, f if f.shape[0] > 1 else f[0], isign=-1, eps=eps, nthreads=1)
    return c.reshape(f.shape[0], -1) * ph * pixel ** 2


def _type1(c: np.ndarray, traj: RadialTrajectory, shape: tuple[int, int], pixel: float,
           eps: float) -> np.ndarray:
    """Adjoint of :func:`_type2`: k-space ``(B, n_spokes·n_read)`` → images ``(B, ny, nx)``."""
    finufft = _finufft()
    wx, wy, ph = _phase(traj, shape)
    c = np.ascontiguousarray(np.asarray(c, dtype=np.complex128) * np.conj(ph) * pixel ** 2)
    out = finufft.nufft2d1(wy, wx, c if c.shape[0] > 1 else c[0], tuple(int(s) for s in shape),
                           isign=1, eps=eps, nthreads=1)
    return out.reshape(c.shape[0], *shape)


def nufft_forward(image, traj: RadialTrajectory, *, pixel: float = 1.0, eps: float = 1e-7
                  ) -> np.ndarray:
    """Radial k-space of an image: ``F(κ_j u(θ_i))`` by a type-2 NUFFT (finufft).

    Parameters
    ----------
    image : ``(ny, nx)`` real or complex array.
    traj : :class:`RadialTrajectory`.
    pixel : pixel size in mm (k-space values carry ``pixel²``).
    eps : NUFFT tolerance.

    Returns
    -------
    complex128 ``(n_spokes, n_read)``. :class:`medvol.mri.RadialNUFFT` is the same map as a
    batched, torch-aware linear operator.
    """
    f = _image2d(image).astype(np.complex128)
    return _type2(f[None], traj, pixel, eps).reshape(traj.n_spokes, traj.n_read)


def nufft_adjoint(kspace, traj: RadialTrajectory, shape: tuple[int, int], *, pixel: float = 1.0,
                  eps: float = 1e-7) -> np.ndarray:
    """Adjoint of :func:`nufft_forward` (type-1 NUFFT): ``(n_spokes, n_read)`` → ``(ny, nx)``."""
    k = np.asarray(kspace, dtype=np.complex128)
    if k.shape != (traj.n_spokes, traj.n_read):
        raise InputError(f"k-space shape {k.shape} does not match the trajectory "
                         f"({traj.n_spokes} spokes × {traj.n_read} samples)")
    ny, nx = (int(s) for s in shape)
    return _type1(k.reshape(1, -1), traj, (ny, nx), pixel, eps)[0]


def radial_kspace(image, traj: RadialTrajectory, *, pixel: float = 1.0) -> np.ndarray:
    """Alias of :func:`nufft_forward` (simulate a fully/under-sampled radial acquisition)."""
    return nufft_forward(image, traj, pixel=pixel)


def default_n_det(n: int, n_read: int) -> int:
    """``⌈n√2⌉`` rounded up to the parity of ``n_read`` (symmetric centre crop)."""
    k = int(math.ceil(n * math.sqrt(2.0)))
    if (n_read - k) % 2:
        k += 1
    return min(k, n_read)


def kspace_to_sinogram(kspace, *, n_det: int | None = None, image_size: int | None = None,
                       pixel: float = 1.0, magnitude: bool = True) -> np.ndarray:
    """Radial k-space → parallel-beam sinogram (Fourier slice theorem; see the module docstring).

    Parameters
    ----------
    kspace : ``(..., n_spokes, n_read)`` complex, sampled as :class:`RadialTrajectory` says.
    n_det : detector bins kept (centre crop); default :func:`default_n_det` of ``image_size``
        (or all ``n_read`` bins when neither is given).
    image_size : N of the ``(N, N)`` image the sinogram is meant for.
    pixel : pixel size in mm (the detector spacing of the result).
    magnitude : return ``|p|`` (the reference pipeline; no density compensation) or complex ``p``.

    Returns
    -------
    ``(..., n_spokes, n_det)`` line integrals (image units × mm).
    """
    k = np.asarray(kspace)
    if k.ndim < 2:
        raise InputError(f"k-space must be (..., spokes, readout), got shape {k.shape}")
    M = k.shape[-1]
    if n_det is None:
        n_det = M if image_size is None else default_n_det(int(image_size), M)
    n_det = int(n_det)
    if n_det < 1 or n_det > M or (M - n_det) % 2:
        raise InputError(f"n_det={n_det} must be <= n_read={M} with the same parity "
                         "(symmetric centre crop)")
    j = np.arange(M)
    c = (M - 1) / 2.0
    # p_k = Δκ Σ_j F_j exp(2πi (j − M/2)(k − c)/M)
    #     = Δκ exp(−iπ(k − c)) · exp(−2πi j c/M)-weighted inverse DFT … written out:
    pre = np.exp(-2j * np.pi * j * c / M)
    post = np.exp(-1j * np.pi * (j - c))
    dk = 1.0 / (M * pixel)
    p = np.fft.ifft(k * pre, axis=-1) * M * post * dk
    lo = (M - n_det) // 2
    p = p[..., lo:lo + n_det]
    return np.abs(p) if magnitude else p


def sinogram_geometry(traj: RadialTrajectory, n_det: int, pixel: float = 1.0):
    """The :class:`~medvol.geometry.ParallelBeam2D` that :func:`kspace_to_sinogram` data lives on."""
    from ..geometry import ParallelBeam2D

    return ParallelBeam2D(angles=traj.angles, n_det=int(n_det), det_spacing=float(pixel))


def density_compensation(traj: RadialTrajectory) -> np.ndarray:
    """Ramp density compensation ``|κ|·π/n_spokes`` per sample (cycles/pixel), ``(spokes, read)``.

    For spokes that cover π (uniform or golden angle), each sample represents an annulus
    sector of area ``|κ|·Δκ·π/n_spokes``; the DC sample gets a quarter of the first ring.
    """
    r = np.abs(traj.radii())
    dk = 1.0 / traj.n_read
    w = r.copy()
    w[r == 0] = dk / 4.0
    w = w * dk * np.pi / traj.n_spokes
    return np.broadcast_to(w[None, :], (traj.n_spokes, traj.n_read)).copy()


def gridding_recon(kspace, traj: RadialTrajectory, shape: tuple[int, int], *, pixel: float = 1.0,
                   dcf: np.ndarray | None = None, magnitude: bool = True) -> np.ndarray:
    """Density-compensated NUFFT-adjoint (gridding) reconstruction.

    Returns ``(ny, nx)`` in image units (``|·|`` by default): ``Σ w_j F_j e^{+2πi k·x}`` / pixel⁴
    with the ramp :func:`density_compensation` (k in cycles/pixel), so a fully sampled
    acquisition returns the image itself up to gridding error.
    """
    w = density_compensation(traj) if dcf is None else np.asarray(dcf, dtype=np.float64)
    img = nufft_adjoint(np.asarray(kspace) * w, traj, shape, pixel=pixel) / pixel ** 4
    return np.abs(img) if magnitude else img


def read_radial_kspace(path, *, angles=None) -> tuple[np.ndarray, RadialTrajectory]:
    """Read radial k-space and its trajectory.

    Supported files
    ---------------
    ``.h5`` / ``.hdf5`` / ``.npz``
        datasets ``kspace`` (complex ``(spokes, read)``; or real ``(spokes, read, 2)`` as
        real/imag) and ``angles`` (radians, ``(spokes,)``).
    ``.npy``
        the k-space array; angles from ``angles=`` or a sidecar ``<stem>_angles.npy``.

    Returns
    -------
    kspace : complex128 ``(spokes, read)``; trajectory : :class:`RadialTrajectory`.
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise InputError("radial k-space file not found", path=p)
    suf = p.suffix.lower()
    k = a = None
    try:
        if suf in (".h5", ".hdf5"):
            import h5py
            with h5py.File(p, "r") as f:
                if "kspace" not in f:
                    raise InputError("HDF5 file has no 'kspace' dataset", path=p,
                                     hint="store k-space as 'kspace' and spoke angles as 'angles'")
                k = np.asarray(f["kspace"][()])
                a = np.asarray(f["angles"][()]) if "angles" in f else None
        elif suf == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "kspace" not in z:
                    raise InputError("npz file has no 'kspace' array", path=p)
                k = np.asarray(z["kspace"])
                a = np.asarray(z["angles"]) if "angles" in z else None
        elif suf == ".npy":
            k = np.load(p, allow_pickle=False)
            side = p.with_name(p.stem + "_angles.npy")
            if angles is None and side.exists():
                a = np.load(side, allow_pickle=False)
        else:
            raise InputError(f"unsupported radial k-space format {suf!r}", path=p,
                             hint="use .h5, .npz or .npy (+ _angles.npy)")
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read radial k-space: {e}", path=p) from None
    if angles is not None:
        a = np.asarray(angles, dtype=np.float64)
    if a is None:
        raise InputError("no spoke angles found", path=p,
                         hint="add an 'angles' dataset (radians), or a <name>_angles.npy beside "
                              "a .npy file (or pass angles= in Python)")
    if k.ndim == 3 and k.shape[-1] == 2 and not np.iscomplexobj(k):
        k = k[..., 0] + 1j * k[..., 1]
    if k.ndim != 2:
        raise InputError(f"k-space must be (spokes, read), got shape {k.shape}", path=p)
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size != k.shape[0]:
        raise InputError(f"{a.size} spoke angles for {k.shape[0]} spokes", path=p)
    return k.astype(np.complex128), RadialTrajectory(a, k.shape[1])


def kspace_sinogram_operator(kspace, trajectory, *, image_size: int | None = None,
                             pixel: float = 1.0, backend: str = "torch",
                             device: str | None = None):
    """Radial k-space → ``(sinogram, Projector)`` by the Fourier slice theorem.

    The sinogram is :func:`~medvol.mri.kspace_to_sinogram` (magnitude, centre crop to
    :func:`~medvol.mri.default_n_det` bins) on the ParallelBeam2D geometry of the spoke angles;
    ``image_size`` defaults to ``n_read // 2`` (2× oversampled readout). ``backend``/``device``
    choose the projector (the shipped MRI weights were trained with ``backend="torch"``).
    """
    from ..kernels import Projector

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
