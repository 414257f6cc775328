"""ASTRA Toolbox adapter: medvol geometries → ASTRA vector geometries, forward/back projection.

The mapping follows the convention of ``medvol.geometry`` exactly (verified numerically against
the medvol kernels in ``tests/kernels/test_astra.py``):

* **2D.** ASTRA's 2D volume puts image row 0 at the *top* (largest y): the centre of pixel
  ``(r, c)`` is at ``x = min_x + (c + ½)·sx``, ``y = max_y − (r + ½)·sy``. medvol's rows run
  along +y, so the same array seen by ASTRA is the medvol image mirrored in y. We therefore hand
  ASTRA the medvol geometry mirrored in y (every vector ``(a, b) → (a, −b)``), which makes each
  ray hit the same array elements. Geometries are expressed as ``parallel_vec`` (ray direction,
  detector centre, detector pixel step) and ``fanflat_vec`` (source, detector centre, pixel step);
  the detector centre carries ``det_offset``. ASTRA's 2D CPU projectors need square pixels.
  The ``strip`` kernel has no fan-beam vector form in ASTRA, so fan ``strip`` uses the plain
  ``fanflat`` geometry at angles ``π − θ`` with the detector reversed (``det_offset`` must be 0).
* **3D (CUDA only).** ASTRA's 3D volume ``(slices, rows, cols) = (z, y, x)`` has no mirror:
  ``x = min_x + (c + ½)·sx``, ``y = min_y + (r + ½)·sy``, ``z = min_z + (s + ½)·sz`` (see
  ``ASTRA3D_FLIP_Y``). ``parallel3d_vec``/``cone_vec`` rows hold ray/source, detector centre,
  ``u`` (column step = ``det_spacing·u(θ)``) and ``v`` (row step = ``det_spacing_row·e_z``).
  ASTRA's projection array is ``(rows, views, cols)``; medvol's is ``(views, rows, cols)``.
* **Units.** The volume window is set from the spacing (mm), and all vectors are in mm, so the
  line integrals come out in image units × mm, as with the medvol kernels.

ASTRA computes in float32 only; results are cast back to the input dtype.

ASTRA 3D must never be called without a usable CUDA device (it can abort the process), so every
3D entry point checks :func:`cuda_available` first and raises ``BackendError`` otherwise.
"""
from __future__ import annotations

import functools

import numpy as np

from medvol.errors import BackendError, GeometryError
from medvol.geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D

__all__ = ["available", "cuda_available", "AstraOperator", "vol_geom", "proj_geom",
           "ASTRA2D_KERNELS", "ASTRA3D_FLIP_Y"]

ASTRA2D_KERNELS = ("line", "linear", "strip", "cuda")
#: whether ASTRA's 3D volume row index runs along −y (False: along +y, as medvol's)
ASTRA3D_FLIP_Y = False


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when the ``astra`` module imports."""
    try:
        import astra  # noqa: F401
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when torch sees a CUDA device *and* astra imports with CUDA support."""
    try:
        import torch
        if not torch.cuda.is_available():
            return False
    except Exception:
        return False
    if not available():
        return False
    import astra
    try:
        return bool(astra.use_cuda())
    except Exception:
        return False


def _import_astra():
    if not available():
        raise BackendError("backend='astra' needs the astra-toolbox package, which is not "
                           "installed — pip install astra-toolbox, or use backend='torch'")
    import astra
    return astra


# --------------------------------------------------------------------------------------------
# geometry mapping
# --------------------------------------------------------------------------------------------
def _trig(geom):
    th = np.asarray(geom.angles, dtype=np.float64)
    return np.cos(th), np.sin(th)


def _vectors_2d(geom) -> np.ndarray:
    """ASTRA ``parallel_vec`` / ``fanflat_vec`` rows for a medvol 2D geometry, shape ``(views, 6)``."""
    c, s = _trig(geom)
    flip = np.array([1.0, -1.0])
    d = np.stack([-s, c], axis=1) * flip          # ray direction / source→detector axis
    u = np.stack([c, s], axis=1) * flip           # detector axis
    if isinstance(geom, ParallelBeam2D):
        centre = geom.det_offset * u
        return np.concatenate([d, centre, geom.det_spacing * u], axis=1)
    if isinstance(geom, FanBeam2D):
        src = -geom.src_iso * d
        centre = geom.iso_det * d + geom.det_offset * u
        return np.concatenate([src, centre, geom.det_spacing * u], axis=1)
    raise GeometryError(f"{type(geom).__name__} is not a 2D geometry")


def _vectors_3d(geom, flip_y: bool = ASTRA3D_FLIP_Y) -> np.ndarray:
    """ASTRA ``parallel3d_vec`` / ``cone_vec`` rows, shape ``(views, 12)``."""
    c, s = _trig(geom)
    z = np.zeros_like(c)
    f = np.array([1.0, -1.0 if flip_y else 1.0, 1.0])
    d = np.stack([-s, c, z], axis=1) * f
    u = np.stack([c, s, z], axis=1) * f
    ez = np.broadcast_to(np.array([0.0, 0.0, 1.0]), d.shape)
    vstep = geom.det_spacing_row * ez
    ustep = geom.det_spacing * u
    if isinstance(geom, ParallelBeam3D):
        centre = geom.det_offset * u + geom.det_offset_row * ez
        return np.concatenate([d, centre, ustep, vstep], axis=1)
    if isinstance(geom, ConeBeam3D):
        src = -geom.src_iso * d
        centre = geom.iso_det * d + geom.det_offset * u + geom.det_offset_row * ez
        return np.concatenate([src, centre, ustep, vstep], axis=1)
    raise GeometryError(f"{type(geom).__name__} is not a 3D geometry")


def vol_geom(vol_shape, spacing):
    """ASTRA volume geometry centred on the isocentre with the window set from ``spacing`` (mm)."""
    astra = _import_astra()
    if len(vol_shape) == 2:
        ny, nx = vol_shape
        sy, sx = spacing
        hx, hy = nx * sx / 2.0, ny * sy / 2.0
        return astra.create_vol_geom(int(ny), int(nx), -hx, hx, -hy, hy)
    nz, ny, nx = vol_shape
    sz, sy, sx = spacing
    hx, hy, hz = nx * sx / 2.0, ny * sy / 2.0, nz * sz / 2.0
    return astra.create_vol_geom(int(ny), int(nx), int(nz), -hx, hx, -hy, hy, -hz, hz)


def proj_geom(geom, *, plain_fan: bool = False, flip_y_3d: bool = ASTRA3D_FLIP_Y):
    """ASTRA projection geometry (vector form) for a medvol geometry."""
    astra = _import_astra()
    if isinstance(geom, ParallelBeam2D):
        return astra.create_proj_geom("parallel_vec", geom.n_det, _vectors_2d(geom))
    if isinstance(geom, FanBeam2D):
        if plain_fan:
            # plain fanflat at angle α has src (R sinα, −R cosα) and u = (cosα, sinα) in ASTRA's
            # frame; with α = π − θ it is our mirrored geometry with the detector reversed.
            ang = np.pi - np.asarray(geom.angles, dtype=np.float64)
            return astra.create_proj_geom("fanflat", geom.det_spacing, geom.n_det, ang,
                                          geom.src_iso, geom.iso_det)
        return astra.create_proj_geom("fanflat_vec", geom.n_det, _vectors_2d(geom))
    if isinstance(geom, ParallelBeam3D):
        return astra.create_proj_geom("parallel3d_vec", geom.n_rows, geom.n_det,
                                      _vectors_3d(geom, flip_y_3d))
    if isinstance(geom, ConeBeam3D):
        return astra.create_proj_geom("cone_vec", geom.n_rows, geom.n_det,
                                      _vectors_3d(geom, flip_y_3d))
    raise GeometryError(f"ASTRA adapter does not know geometry type {type(geom).__name__}")


# --------------------------------------------------------------------------------------------
# operator
# --------------------------------------------------------------------------------------------
class AstraOperator:
    """Forward/back projection with ASTRA on numpy batches.

    Parameters
    ----------
    geom : medvol geometry
    vol_shape : ``(ny, nx)`` or ``(nz, ny, nx)``
    spacing : same order as ``vol_shape``, mm
    kernel : ``"line" | "linear" | "strip"`` (2D CPU) or ``"cuda"`` (2D GPU); ignored in 3D
        (always CUDA).
    """

    def __init__(self, geom, vol_shape, spacing, kernel: str = "linear"):
        self.astra = _import_astra()
        self.geom = geom
        self.vol_shape = tuple(int(n) for n in vol_shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.ndim = len(self.vol_shape)
        self.kernel = kernel
        self._reverse_det = False
        if self.ndim == 3:
            if not cuda_available():
                raise BackendError("ASTRA 3D needs a CUDA GPU; none found — use backend='torch'")
            self.kernel = "cuda3d"
            self._vg = vol_geom(self.vol_shape, self.spacing)
            self._pg = proj_geom(geom)
            self._pid = None
            return
        if kernel not in ASTRA2D_KERNELS:
            raise BackendError(f"unknown ASTRA 2D projector {kernel!r}; choose one of "
                               f"{', '.join(ASTRA2D_KERNELS)}")
        if kernel == "cuda" and not cuda_available():
            raise BackendError("ASTRA projector 'cuda' needs a CUDA GPU and a CUDA build of "
                               "astra; none found — use astra_kernel='linear' or backend='torch'")
        sy, sx = self.spacing
        if abs(sy - sx) > 1e-9 * max(sy, sx):
            raise GeometryError(f"ASTRA 2D needs square pixels, got spacing (sy, sx) = "
                                f"({sy}, {sx}) mm — resample or use backend='torch'")
        fan = isinstance(geom, FanBeam2D)
        ptype = kernel
        plain = False
        if fan and kernel == "linear":
            raise BackendError("ASTRA has no CPU 'linear' fan-beam projector — use "
                               "astra_kernel='line' or 'strip', or backend='torch'")
        if fan and kernel == "line":
            ptype = "line_fanflat"
        if fan and kernel == "strip":
            if geom.det_offset != 0.0:
                raise BackendError("ASTRA's fan-beam 'strip' projector cannot model det_offset "
                                   "— use astra_kernel='line' or backend='torch'")
            ptype, plain, self._reverse_det = "strip_fanflat", True, True
        self._vg = vol_geom(self.vol_shape, self.spacing)
        self._pg = proj_geom(geom, plain_fan=plain)
        self._pid = self.astra.create_projector(ptype, self._pg, self._vg)

    def __del__(self):  # pragma: no cover - depends on interpreter shutdown order
        try:
            if self._pid is not None:
                self.astra.projector.delete(self._pid)
        except Exception:
            pass

    # one item ---------------------------------------------------------------------------
    def _fp_one(self, x: np.ndarray) -> np.ndarray:
        astra = self.astra
        if self.ndim == 2:
            sid, y = astra.create_sino(x, self._pid)
            astra.data2d.delete(sid)
            return y[:, ::-1] if self._reverse_det else y
        sid, y = astra.create_sino3d_gpu(x, self._pg, self._vg)
        astra.data3d.delete(sid)
        return y.transpose(1, 0, 2)                     # (rows, views, cols) → (views, rows, cols)

    def _bp_one(self, y: np.ndarray) -> np.ndarray:
        astra = self.astra
        if self.ndim == 2:
            if self._reverse_det:
                y = np.ascontiguousarray(y[:, ::-1])
            vid, x = astra.create_backprojection(y, self._pid)
            astra.data2d.delete(vid)
            return x
        ya = np.ascontiguousarray(y.transpose(1, 0, 2))
        vid, x = astra.create_backprojection3d_gpu(ya, self._pg, self._vg)
        astra.data3d.delete(vid)
        return x

    # batches ----------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(B, *vol_shape)`` → ``(B, *sino_shape)``; dtype preserved (ASTRA runs in float32)."""
        dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
        xs = np.ascontiguousarray(x, dtype=np.float32)
        out = np.stack([self._fp_one(xi) for xi in xs]) if len(xs) else \
            np.zeros((0, *self.geom.sino_shape), np.float32)
        return out.astype(dt, copy=False)

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """``(B, *sino_shape)`` → ``(B, *vol_shape)``; dtype preserved."""
        dt = y.dtype if y.dtype in (np.float32, np.float64) else np.float32
        ys = np.ascontiguousarray(y, dtype=np.float32)
        out = np.stack([self._bp_one(yi) for yi in ys]) if len(ys) else \
            np.zeros((0, *self.vol_shape), np.float32)
        return out.astype(dt, copy=False)
