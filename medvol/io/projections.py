"""Detector data on disk: projection stacks (TIFF folders, multi-page TIFF, ``.npy``, ``.nrrd``),
flat/dark frames and view-angle files → :class:`Projections`.

Flat/dark correction, ``−log`` and the rotation-axis search are in :mod:`medvol.recon.projections`.

Layout and units
----------------
* Projections are ``(views, rows, cols)`` float32 raw counts. ``cols`` runs along the detector axis
  ``u`` of :mod:`medvol.geometry` (``n_det``), ``rows`` along the rotation axis (``n_rows``), so
  ``data[:, r, :]`` is the sinogram ``(views, n_det)`` of detector row ``r`` and ``data`` itself is
  already in the 3D sinogram layout ``(views, n_rows, n_det)``.
* Frames are used as stored: image row 0 (the *top* of a TIFF as displayed) becomes detector
  row 0, which :mod:`medvol.geometry` places at the lowest ``z``. A volume reconstructed from
  such frames therefore has the sample's top at its last slice; flip ``data[:, ::-1, :]`` if
  "up" matters. Columns are not mirrored either (a mirrored detector read-out mirrors the
  reconstruction and the sign of the CoR offset consistently).
* Angles are radians (converted from degrees on load unless ``angles_unit="rad"``).
* A centre-of-rotation (CoR) offset is given in detector pixels and mm *relative to the detector
  centre* ``(n_det - 1) / 2``: ``+δ`` means the axis projects ``δ`` to the right of the centre
  (larger column index). Following :mod:`medvol.geometry`, such data are reconstructed with
  ``ParallelBeam2D(..., det_offset=-δ_mm)`` — :attr:`CorEstimate.det_offset` holds that value.

Bundled synchrotron example
---------------------------
``load_synchrotron_example(root)`` reads the Diamond I13-2 test set (``raw/raw_00000.tiff`` …
``raw_00090.tiff``, ``dark.tiff``, ``flat.tiff``, ``angles.txt``). What the files actually hold
(inspected, not assumed):

* ``raw/``: 91 single-page 135×160 uint16 frames. The file names are zero-padded frame numbers and
  their natural order *is* the acquisition order (angles increase monotonically with it).
* ``dark.tiff``/``flat.tiff``: one 135×160 float32 frame each (already averaged). One flat pixel
  (row 0, col 0) equals the dark there (a dead pixel); it is reported and set to transmission 1.
* ``angles.txt``: 111 rows (the last line has no newline, so ``wc -l`` says 110). Rows 0–9 repeat
  −88.2 and rows 101–110 repeat 91.8: these are the dark/flat frames recorded at the start and end
  angle. Rows 10–100 are the 91 projection angles, −88.2° … 91.7999° in 2.000 ± 0.0003° steps —
  exactly 180°, so the first and last projections are an opposed (mirror-image) pair.
  :func:`load_projections` finds this split itself when an angle file is longer than the number of
  projections and the extra rows are constant runs at both ends; otherwise it asks for
  ``angle_rows``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["Projections", "load_projections", "load_synchrotron_example", "read_angles"]

_TIFF_EXT = (".tif", ".tiff")


# --------------------------------------------------------------------------------------------
# data container
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Projections:
    """Raw detector frames with their flats, darks and angles.

    Attributes
    ----------
    data : np.ndarray
        float32 ``(views, rows, cols)`` raw counts (cols = detector axis ``n_det``).
    angles : np.ndarray
        float64 ``(views,)`` view angles in radians.
    flats, darks : np.ndarray or None
        float32 ``(n, rows, cols)`` flat-field / dark-field frames (``n ≥ 1``).
    source : dict
        Where the data came from (paths, how the angles were selected); no patient data.
    """

    data: np.ndarray
    angles: np.ndarray
    flats: np.ndarray | None = None
    darks: np.ndarray | None = None
    source: dict = field(default_factory=dict)

    @property
    def n_views(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.data.shape[1])

    @property
    def n_det(self) -> int:
        return int(self.data.shape[2])

    def sinogram(self, row: int | None = None) -> np.ndarray:
        """Raw-count sinogram ``(views, n_det)`` of detector row ``row`` (default: middle row)."""
        r = self.n_rows // 2 if row is None else int(row)
        if not -self.n_rows <= r < self.n_rows:
            raise InputError(f"detector row {r} out of range: the projections have {self.n_rows} rows")
        return self.data[:, r, :]

    def __repr__(self) -> str:
        return (f"Projections(views={self.n_views}, rows={self.n_rows}, n_det={self.n_det}, "
                f"angles={np.degrees(self.angles[0]):.3f}°…{np.degrees(self.angles[-1]):.3f}°, "
                f"flats={None if self.flats is None else self.flats.shape[0]}, "
                f"darks={None if self.darks is None else self.darks.shape[0]})")


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _tiff_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _TIFF_EXT
             and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _read_stack(path: str | Path, what: str) -> tuple[np.ndarray, dict]:
    """Read frames from a folder of TIFFs, a (multi-page) TIFF, .npy or .nrrd as (n, rows, cols)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found", path=p, hint="check the path")
    info: dict[str, Any] = {}
    try:
        if p.is_dir():
            files = _tiff_files(p)
            if not files:
                raise InputError(f"no .tif/.tiff files in the {what} folder", path=p,
                                 hint="point at a folder of TIFF frames or a single stack file")
            import tifffile
            frames = [np.asarray(tifffile.imread(f)) for f in files]
            shapes = {f.shape for f in frames}
            if len(shapes) != 1:
                raise InputError(f"{what} frames have different shapes {sorted(shapes)}", path=p,
                                 hint="all frames must be the same size")
            arr = np.stack(frames)
            info = {"kind": "tiff-folder", "n_files": len(files), "first": files[0].name,
                    "last": files[-1].name}
        else:
            ext = p.suffix.lower()
            if ext in _TIFF_EXT:
                import tifffile
                arr = np.asarray(tifffile.imread(p))
                info = {"kind": "tiff"}
            elif ext == ".npy":
                arr = np.load(p, allow_pickle=False)
                info = {"kind": "npy"}
            elif ext == ".nrrd" or p.name.lower().endswith(".nhdr"):
                import nrrd
                arr, _hdr = nrrd.read(str(p), index_order="C")
                info = {"kind": "nrrd"}
            else:
                raise InputError(f"unsupported {what} file type {ext!r}", path=p,
                                 hint="use a folder of TIFFs, a .tif/.tiff stack, .npy or .nrrd")
    except InputError:
        raise
    except Exception as e:  # unreadable/corrupt file
        raise InputError(f"cannot read {what}: {type(e).__name__}: {e}", path=p,
                         hint="check that the file is a valid TIFF/NPY/NRRD") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{what} must be 2D frames or a 3D stack (frames, rows, cols), "
                         f"got shape {arr.shape}", path=p)
    if not (np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)):
        raise InputError(f"{what} has non-numeric dtype {arr.dtype}", path=p)
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        n = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{what} contains {n} NaN/infinite values", path=p,
                         hint="fix or mask the bad pixels before loading")
    info["path"] = str(p)
    return arr, info


def _as_frames(x, what: str, shape: tuple[int, int] | None) -> tuple[np.ndarray | None, dict]:
    if x is None:
        return None, {}
    if isinstance(x, (str, Path)):
        arr, info = _read_stack(x, what)
    else:
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise InputError(f"{what} array must be (rows, cols) or (n, rows, cols), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{what} array contains NaN/infinite values")
        info = {"kind": "array"}
    if shape is not None and arr.shape[1:] != shape:
        raise InputError(f"{what} frames are {arr.shape[1:]} but the projections are {shape} "
                         f"(rows, cols)", path=info.get("path"),
                         hint="flats/darks must come from the same detector region")
    return arr, info


def read_angles(spec, *, unit: str = "deg", rows: slice | Sequence[int] | None = None) -> np.ndarray:
    """Read view angles and return them in radians, ``(views,)`` float64.

    Parameters
    ----------
    spec
        * path to a text file (one angle per line; ``#`` comments and blank lines ignored; extra
          columns are ignored — the first column is used) or a ``.npy`` file;
        * an array-like of numbers;
        * a linspace spec: the string ``"linspace:START:STOP:NUM"`` (``np.linspace`` semantics,
          *endpoint included*) or a dict of ``np.linspace`` keywords
          ``{"start":…, "stop":…, "num":…, "endpoint": False}``.
    unit : {"deg", "rad"}
        Unit of the values in ``spec``.
    rows : slice or sequence of int, optional
        Select these rows (e.g. ``slice(10, 101)``) after reading.
    """
    if unit not in ("deg", "rad"):
        raise InputError(f"angles_unit must be 'deg' or 'rad', got {unit!r}")
    src = spec
    if isinstance(spec, dict):
        try:
            a = np.linspace(**spec)
        except TypeError as e:
            raise InputError(f"bad linspace angle spec {spec!r}: {e}",
                             hint="use keys start, stop, num and optionally endpoint") from None
    elif isinstance(spec, str) and spec.startswith("linspace:"):
        parts = spec.split(":")[1:]
        try:
            if len(parts) != 3:
                raise ValueError("need START:STOP:NUM")
            a = np.linspace(float(parts[0]), float(parts[1]), int(parts[2]))
        except ValueError as e:
            raise InputError(f"bad angle spec {spec!r}: {e}",
                             hint="write it as linspace:START:STOP:NUM, e.g. linspace:0:180:91") from None
    elif isinstance(spec, (str, Path)):
        p = Path(src)
        if not p.is_file():
            raise InputError("angle file not found", path=p, hint="check the path")
        try:
            if p.suffix.lower() == ".npy":
                a = np.load(p, allow_pickle=False)
            else:
                vals = []
                for ln, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                    t = line.split("#", 1)[0].replace(",", " ").split()
                    if not t:
                        continue
                    try:
                        vals.append(float(t[0]))
                    except ValueError:
                        raise InputError(f"line {ln} is not a number: {line.strip()[:40]!r}", path=p,
                                         hint="the angle file must hold one angle per line") from None
                a = np.array(vals, dtype=np.float64)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"cannot read angles: {type(e).__name__}: {e}", path=p) from None
    else:
        try:
            a = np.asarray(spec, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"cannot interpret angles of type {type(spec).__name__}",
                             hint="give a path, an array or 'linspace:START:STOP:NUM'") from None
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if rows is not None:
        try:
            a = a[rows] if isinstance(rows, slice) else a[np.asarray(rows, dtype=int)]
        except IndexError:
            raise InputError(f"angle_rows {rows!r} is out of range for {a.size} angle values") from None
    if a.size == 0:
        raise InputError("no angles were read", path=src if isinstance(src, (str, Path)) else None)
    if not np.all(np.isfinite(a)):
        raise InputError("angles contain NaN or infinity",
                         path=src if isinstance(src, (str, Path)) else None)
    return np.radians(a) if unit == "deg" else a


def _infer_padded_rows(a: np.ndarray, n_views: int, tol: float) -> int | None:
    """Start row ``s`` if ``a`` = constant run · n_views angles · constant run, unique; else None."""
    extra = a.size - n_views
    hits = []
    for s in range(extra + 1):
        head, body, tail = a[:s], a[s:s + n_views], a[s + n_views:]
        if head.size and np.max(np.abs(head - body[0])) > tol:
            continue
        if tail.size and np.max(np.abs(tail - body[-1])) > tol:
            continue
        d = np.diff(body)
        if body.size > 1 and not (np.all(d > 0) or np.all(d < 0)):
            continue
        hits.append(s)
    return hits[0] if len(hits) == 1 else None


def load_projections(path: str | Path | np.ndarray, *, flats=None, darks=None, angles=None,
                     angles_unit: str = "deg", angle_rows: slice | Sequence[int] | None = None
                     ) -> Projections:
    """Load raw projections, flats, darks and angles.

    Parameters
    ----------
    path : path or array
        A folder of TIFF frames (sorted *naturally* by file name, ``p2`` before ``p10``; the sorted
        order is taken to be the acquisition order, matching the angle list row by row), a
        multi-page TIFF, ``.npy`` or ``.nrrd`` stack ``(views, rows, cols)``, or an array.
        A folder with a ``raw/`` sub-folder and no TIFFs besides ``dark*``/``flat*`` ones is read
        as the synchrotron layout
        (``raw/`` + ``dark.tif(f)`` + ``flat.tif(f)`` + ``angles.txt``) with missing arguments
        filled from it.
    flats, darks : path or array, optional
        Single frames, stacks or folders, like ``path``; several frames are averaged at correction.
    angles : path, array, linspace spec
        See :func:`read_angles`. Required (except for the synchrotron layout).
    angles_unit : {"deg", "rad"}
    angle_rows : slice or sequence of int, optional
        Rows of the angle file that belong to the projections (e.g. ``slice(10, 101)``). If omitted
        and the file has more rows than projections, a unique split "constant run + projections +
        constant run" (angles repeated for dark/flat frames) is detected; anything else is an error.

    Returns
    -------
    Projections

    Raises
    ------
    InputError
        Missing/unreadable files, NaN values, mismatched frame sizes, or an angle count that does
        not match the number of projections.
    """
    source: dict[str, Any] = {}
    if isinstance(path, (str, Path)):
        p = Path(path)
        if (p.is_dir() and (p / "raw").is_dir()
                and all(f.name.lower().startswith(("dark", "flat")) for f in _tiff_files(p))):
            def _pick(*names):
                for n in names:
                    if (p / n).exists():
                        return p / n
                return None
            flats = flats if flats is not None else _pick("flat.tiff", "flat.tif", "flats")
            darks = darks if darks is not None else _pick("dark.tiff", "dark.tif", "darks")
            angles = angles if angles is not None else _pick("angles.txt")
            source["layout"] = "raw/ + dark + flat + angles.txt"
            p = p / "raw"
        data, info = _read_stack(p, "projections")
        source["data"] = info
    else:
        data = np.asarray(path, dtype=np.float32)
        if data.ndim == 2:
            data = data[:, None, :]
        if data.ndim != 3:
            raise InputError(f"projection array must be (views, rows, cols), got {data.shape}")
        if not np.all(np.isfinite(data)):
            raise InputError("projection array contains NaN/infinite values",
                             hint="fix or mask the bad pixels before loading")
        source["data"] = {"kind": "array"}
    n_views = data.shape[0]
    fl, fi = _as_frames(flats, "flat field", data.shape[1:])
    dk, di = _as_frames(darks, "dark field", data.shape[1:])
    if fi:
        source["flats"] = fi
    if di:
        source["darks"] = di
    if angles is None:
        raise InputError("no angles given for the projections",
                         hint="pass angles= (a file, an array or 'linspace:START:STOP:NUM')")
    ang_src = str(angles) if isinstance(angles, (str, Path)) else type(angles).__name__
    a = read_angles(angles, unit=angles_unit, rows=angle_rows)
    if angle_rows is None and a.size > n_views:
        s = _infer_padded_rows(a, n_views, tol=math.radians(0.01) if angles_unit == "deg" else 1e-4)
        if s is None:
            raise InputError(f"{a.size} angles but {n_views} projections ({ang_src})",
                             hint="select the projection rows with angle_rows=slice(start, stop)")
        a = a[s:s + n_views]
        source["angle_rows"] = [s, s + n_views]
        source["angle_rows_note"] = "inferred: constant runs at both ends are dark/flat frames"
    elif angle_rows is not None:
        source["angle_rows"] = (list(angle_rows.indices(10**9)[:2]) if isinstance(angle_rows, slice)
                                else list(map(int, angle_rows)))
    if a.size != n_views:
        raise InputError(f"{a.size} angles but {n_views} projections ({ang_src})",
                         hint="the angle list must have one entry per projection; "
                              "use angle_rows= to select rows")
    source["angles"] = ang_src
    a.setflags(write=False)
    return Projections(data=data, angles=a, flats=fl, darks=dk, source=source)


def load_synchrotron_example(root: str | Path) -> Projections:
    """Load the bundled Diamond I13-2 parallel-beam example (see the module docstring).

    ``root`` is the folder holding ``raw/``, ``dark.tiff``, ``flat.tiff`` and ``angles.txt``.
    Angles are rows 10–100 of ``angles.txt`` (degrees).
    """
    r = Path(root)
    for n in ("raw", "dark.tiff", "flat.tiff", "angles.txt"):
        if not (r / n).exists():
            raise InputError(f"synchrotron example is missing {n!r}", path=r,
                             hint="point at the folder with raw/, dark.tiff, flat.tiff, angles.txt")
    return load_projections(r / "raw", flats=r / "flat.tiff", darks=r / "dark.tiff",
                            angles=r / "angles.txt", angles_unit="deg", angle_rows=slice(10, 101))
