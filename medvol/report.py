"""Run reports: grey-scale PNG panels in the patient frame and a small self-contained HTML page.

Everything is drawn with Pillow (no matplotlib), so reports work on a bare server.

* :func:`orthoslices_png` / :func:`render_orthoslices` — axial, coronal and sagittal slices of a
  volume **in the patient frame** (radiological convention, orientation letters, slice position in
  mm, window/level printed), or a 2D image.
* :func:`comparison_png` — images side by side in one shared grey window with a label under each
  (e.g. reference / FBP / TV, or centred vs estimated rotation axis).
* :func:`montage_png` — evenly spaced axial slices of a volume (QC montage).
* :func:`write_html_report` — ``report.html`` with a title, the images (relative links), metric
  tables with human headers and units, and a parameter table; written atomically.
* :func:`ingest_report` — the QC report of an ingest run: one montage per series + a series table.

Display conventions
-------------------
A :class:`medvol.Volume` is first brought to the LPS frame from its direction matrix
(:func:`to_lps_view`): axis-aligned grids (any permutation or flip of the LPS axes, e.g. a RAS
NIfTI or a sagittal acquisition) are permuted and flipped exactly (nibabel's ``io_orientation``);
oblique grids (more than 1° from the nearest axes) are resampled linearly (SimpleITK) onto an
axis-aligned LPS grid, as a viewer's default slice views do — except thin slabs (fewer than 16
voxels along an axis, e.g. a few reconstructed slices), which are shown in their acquisition planes
on the nearest axes, with the obliquity printed. Then, as on a radiology workstation:

* **axial** — seen from the feet: patient right on the image left (``R`` … ``L``), anterior at the
  top (``A`` … ``P``);
* **coronal** — seen from the front: patient right on the image left, superior at the top;
* **sagittal** — seen from the patient's left side: anterior on the image left, superior at the top.

Every panel carries its orientation letters on its four edges, the slice position in mm along the
normal (``S 12.5 mm`` = 12.5 mm superior of the scanner origin, LPS coordinates as in DICOM) and
the window as ``W`` (width) / ``L`` (level). Plain arrays have no geometry: they are drawn in array
order ``(z, y, x)`` with +z at the top of the coronal/sagittal panels and no letters.

Windows: ``window=(low, high)`` in image units, a preset name (:data:`WINDOWS`, all HU), or
``None`` for the modality-aware default (:func:`default_windows`): head CT → brain (W80/L40) and
bone (W2000/L500) panels; other CT → soft tissue (W400/L40); MRI and everything else → the
0.5–99.5 percentile range of the data.

Privacy: the HTML report never includes patient identifiers; parameter or table keys that name
patient data (``PatientName``, ``PatientID``, ``PatientBirthDate``, ``…Name``/``…ID`` of the
patient, ``AccessionNumber`` …) have their values replaced by ``[removed]``.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from .errors import InputError

__all__ = ["WINDOWS", "resolve_window", "default_windows", "to_uint8", "to_lps_view", "LPSView",
           "Panel", "render_orthoslices", "orthoslices_png", "comparison_png", "montage_png",
           "patient_slices", "panels_png",
           "write_html_report", "ingest_report", "human_header"]

WINDOWS: dict[str, tuple[float, float]] = {
    # name: (width, level) in HU
    "soft_tissue": (400.0, 40.0),
    "bone": (1800.0, 400.0),
    "head_bone": (2000.0, 500.0),
    "lung": (1500.0, -600.0),
    "brain": (80.0, 40.0),
}

_PHI = re.compile(r"patient|birth|accession|institution|referring|operator|physician"
                  r"|studyid|otherpatient", re.I)
_HEAD = re.compile(r"head|brain|skull|cran|neuro", re.I)
#: In-plane field of view (mm) up to which a CT without BodyPartExamined counts as a head CT.
HEAD_FOV_MM = 260.0

_TEXT = (225, 225, 225)
_LETTER = (255, 200, 0)
_BG = (0, 0, 0)


def _raw(x) -> np.ndarray:
    """numpy view of an array or tensor (no copy for numpy), checked to be numeric."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise InputError(f"image must be numeric, got dtype {a.dtype}")
    return a


def _np(x) -> np.ndarray:
    return _raw(x).astype(np.float64)


def _sample(a: np.ndarray, n: int = 2_000_000) -> np.ndarray:
    """At most about ``n`` evenly strided values of ``a`` as float64 (display percentiles of big
    volumes without copying them whole)."""
    flat = a.reshape(-1)
    return flat[::max(1, flat.size // n)].astype(np.float64)


def _is_volume(x) -> bool:
    return hasattr(x, "array") and hasattr(x, "spacing") and hasattr(x, "direction")


def resolve_window(window, data: np.ndarray | Sequence[np.ndarray] | None = None
                   ) -> tuple[float, float]:
    """``(low, high)`` display range from a tuple, a preset name or the data's percentiles."""
    if window is None:
        arrs = [data] if isinstance(data, np.ndarray) else list(data or [])
        v = np.concatenate([a[np.isfinite(a)].ravel() for a in arrs]) if arrs else np.zeros(1)
        if v.size == 0:
            return (0.0, 1.0)
        lo, hi = np.percentile(v, [0.5, 99.5])
        if not hi > lo:
            lo, hi = float(v.min()), float(v.max())
        if not hi > lo:
            hi = lo + 1.0
        return (float(lo), float(hi))
    if isinstance(window, str):
        key = window.lower().replace("-", "_").replace(" ", "_")
        if key not in WINDOWS:
            raise InputError(f"unknown window preset {window!r}; choose one of "
                             f"{', '.join(WINDOWS)} or give (low, high)")
        w, lvl = WINDOWS[key]
        return (lvl - w / 2, lvl + w / 2)
    try:
        lo, hi = (float(window[0]), float(window[1]))
    except (TypeError, ValueError, IndexError):
        raise InputError(f"window must be (low, high), a preset name or None, got {window!r}") from None
    if not hi > lo:
        raise InputError(f"window high ({hi}) must be above low ({lo})")
    return (lo, hi)


def _wl_text(win: tuple[float, float]) -> str:
    lo, hi = win
    return f"W {hi - lo:.4g} L {(hi + lo) / 2:.4g}"


def _is_ct(meta: Mapping[str, Any]) -> bool:
    return str(meta.get("modality", "")).upper() == "CT" or str(meta.get("units", "")).upper() == "HU"


def _is_head_ct(vol) -> bool:
    meta = getattr(vol, "meta", {}) or {}
    bp = str(meta.get("body_part", "") or "")
    if bp:
        return bool(_HEAD.search(bp))
    sp = vol.spacing
    nz, ny, nx = vol.shape
    return max(nx * sp[0], ny * sp[1]) <= HEAD_FOV_MM


def default_windows(vol_or_array) -> list[tuple[str, tuple[float, float]]]:
    """Modality-aware display windows ``[(name, (low, high)), ...]`` for a volume.

    * CT (``meta['modality'] == 'CT'`` or ``meta['units'] == 'HU'``) of the head (``body_part``
      naming head/brain/skull, or, without ``body_part``, an in-plane field of view of at most
      :data:`HEAD_FOV_MM` mm): ``brain`` W80/L40 and ``head_bone`` W2000/L500.
    * Other CT: ``soft_tissue`` W400/L40.
    * MRI, other modalities and plain arrays: the 0.5–99.5 percentiles of the data.
    """
    if _is_volume(vol_or_array):
        meta = getattr(vol_or_array, "meta", {}) or {}
        if _is_ct(meta):
            if _is_head_ct(vol_or_array):
                return [("brain", resolve_window("brain")), ("bone", resolve_window("head_bone"))]
            return [("soft tissue", resolve_window("soft_tissue"))]
        data = _sample(_raw(vol_or_array.array))
    else:
        data = _sample(_raw(vol_or_array))
    return [("0.5-99.5 percentile", resolve_window(None, data))]


def to_uint8(img, window) -> np.ndarray:
    """Map ``img`` linearly from ``window=(low, high)`` to 0…255 (clipped); NaN → 0."""
    lo, hi = window
    a = (_np(img) - lo) / (hi - lo)
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------- patient frame
@dataclass(frozen=True)
class LPSView:
    """A volume with its axes ordered and flipped to LPS: ``array[z, y, x]`` with x → patient
    Left, y → Posterior, z → Superior (index grows that way).

    ``affine`` maps a voxel ``(x, y, z)`` index to LPS mm (diagonal unless the input was oblique
    and kept, see :func:`to_lps_view`); ``spacing_zyx`` is the voxel size (mm) along z, y, x;
    ``source_axes`` the orientation code of the input's i, j, k axes (e.g. ``RAS``);
    ``obliquity_deg`` the largest angle between an input axis and its nearest LPS axis;
    ``resampled`` whether an oblique input was resampled onto an axis-aligned grid.
    """

    array: np.ndarray
    spacing_zyx: tuple[float, float, float]
    affine: np.ndarray
    source_axes: str
    resampled: bool
    obliquity_deg: float = 0.0

    @property
    def origin(self) -> np.ndarray:
        """LPS position (mm) of voxel ``[0, 0, 0]``."""
        return self.affine[:3, 3].copy()

    def index_of(self, lps) -> np.ndarray:
        """Nearest ``(z, y, x)`` index of an LPS point (mm), clipped to the grid."""
        p = np.asarray(lps, float).reshape(3)
        xyz = np.rint(np.linalg.solve(self.affine[:3, :3], p - self.affine[:3, 3])).astype(int)
        return np.clip(xyz[::-1], 0, np.asarray(self.array.shape) - 1)

    def position(self, zyx_index) -> np.ndarray:
        """LPS position (mm) of a ``(z, y, x)`` index."""
        return self.affine[:3, :3] @ np.asarray(zyx_index, float)[::-1] + self.affine[:3, 3]

    @property
    def center(self) -> np.ndarray:
        return self.position((np.asarray(self.array.shape) - 1) / 2.0)


def _axcodes(direction) -> str:
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    d = np.asarray(direction, float)
    out = ""
    for c in range(3):
        w = int(np.argmax(np.abs(d[:, c])))
        out += letters[w][0 if d[w, c] > 0 else 1]
    return out


def to_lps_view(vol, *, oblique: str = "auto", max_size: int = 320,
                oblique_tol_deg: float = 1.0) -> LPSView:
    """Bring a :class:`medvol.Volume` to the LPS frame for display (see :class:`LPSView`).

    Axis-aligned inputs (within ``oblique_tol_deg`` of a permutation/flip of the LPS axes) are
    permuted and flipped without interpolation (``nibabel.orientations``). Oblique inputs:

    * ``oblique="resample"`` — resampled with linear interpolation (SimpleITK) onto an
      axis-aligned LPS grid covering the whole volume, isotropic at the finest input spacing but
      at most ``max_size`` voxels along any axis; outside the acquired region is the data minimum.
      The panels are then true axial/coronal/sagittal planes, as a viewer's default slice views.
    * ``oblique="nearest"`` — permuted and flipped to the nearest LPS axes like an axis-aligned
      grid (as SimpleITK's ``DICOMOrient``): the panels are the acquisition planes, labelled with
      the nearest directions and their obliquity.
    * ``oblique="auto"`` (default) — ``resample`` for volumes at least 16 voxels along every
      axis, ``nearest`` for thin slabs (a few reconstructed slices), which resampling would cut.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    if oblique not in ("auto", "resample", "nearest"):
        raise InputError(f"oblique must be auto, resample or nearest, got {oblique!r}")
    arr = _raw(vol.array)
    d = np.asarray(vol.direction, float)
    sp_xyz = np.asarray(vol.spacing, float)
    aff = np.eye(4)
    aff[:3, :3] = d * sp_xyz[None, :]
    aff[:3, 3] = vol.origin
    code = _axcodes(d)
    cos = np.max(np.abs(d), axis=0)
    angle = float(np.degrees(np.arccos(np.clip(cos.min(), -1.0, 1.0))))
    is_oblique = len(set(np.argmax(np.abs(d), axis=0).tolist())) < 3 or angle > oblique_tol_deg
    if oblique == "auto":
        oblique = "resample" if min(arr.shape) >= 16 else "nearest"
    if not is_oblique or oblique == "nearest":
        ornt = io_orientation(aff)
        ijk = arr.transpose(2, 1, 0)
        out = apply_orientation(ijk, ornt)
        new_aff = aff @ inv_ornt_aff(ornt, ijk.shape)
        sp_new = np.linalg.norm(new_aff[:3, :3], axis=0)
        return LPSView(out.transpose(2, 1, 0),
                       (float(sp_new[2]), float(sp_new[1]), float(sp_new[0])),
                       new_aff, code, False, angle if is_oblique else 0.0)
    import itertools

    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.astype(np.float32)))
    img.SetSpacing(tuple(float(s) for s in sp_xyz))
    img.SetOrigin(tuple(float(o) for o in vol.origin))
    img.SetDirection(tuple(float(x) for x in d.reshape(-1)))
    shp_xyz = np.asarray(arr.shape[::-1], float) - 1
    corners = np.array([aff[:3, :3] @ (np.array(c) * shp_xyz) + aff[:3, 3]
                        for c in itertools.product((0, 1), repeat=3)])
    lo, hi = corners.min(0), corners.max(0)
    step = float(sp_xyz.min())
    if (hi - lo).max() / step + 1 > max_size:
        step = float((hi - lo).max() / (max_size - 1))
    size = [int(math.floor(e / step)) + 1 for e in (hi - lo)]
    fill = float(np.nanmin(arr)) if arr.size else 0.0     # NaN-free data assumed for display
    res = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, tuple(float(v) for v in lo),
                        (step,) * 3, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), fill, sitk.sitkFloat32)
    new_aff = np.eye(4)
    new_aff[:3, :3] *= step
    new_aff[:3, 3] = lo
    return LPSView(sitk.GetArrayFromImage(res), (step,) * 3, new_aff, code,
                   True, angle)


def _pos_text(axis: int, value: float) -> str:
    pos, neg = (("L", "R"), ("P", "A"), ("S", "I"))[axis]
    v = float(value)
    return f"{pos if v >= 0 else neg} {abs(v):.1f} mm"


@dataclass(frozen=True)
class Panel:
    """Where one slice was drawn in a rendered image: ``box = (x0, y0, x1, y1)`` pixels
    (x1, y1 exclusive), the plane (``axial``/``coronal``/``sagittal``/``image``), the edge letters
    ``(left, right, top, bottom)`` (empty for plain arrays), the slice position text and window."""

    plane: str
    box: tuple[int, int, int, int]
    letters: tuple[str, str, str, str]
    position: str
    window: tuple[float, float]


def _patient_slices(view: LPSView, center) -> list[tuple[str, np.ndarray, tuple, tuple, str]]:
    """``[(plane, 2D image, (row mm, col mm), letters, position text)]`` in display order."""
    a = view.array
    sz, sy, sx = view.spacing_zyx
    c = view.center if center is None else np.asarray(center, float)
    kz, ky, kx = (int(v) for v in view.index_of(c))
    p = view.position((kz, ky, kx))
    ob = (f" (oblique {view.obliquity_deg:.0f}°)" if view.obliquity_deg and not view.resampled
          else "")
    return [
        ("axial", a[kz], (sy, sx), ("R", "L", "A", "P"), _pos_text(2, p[2]) + ob),
        ("coronal", a[:, ky, :][::-1], (sz, sx), ("R", "L", "S", "I"), _pos_text(1, p[1]) + ob),
        ("sagittal", a[:, :, kx][::-1], (sz, sy), ("A", "P", "S", "I"), _pos_text(0, p[0]) + ob),
    ]


def _array_slices(a: np.ndarray, sp) -> list[tuple[str, np.ndarray, tuple, tuple, str]]:
    nz, ny, nx = a.shape
    sz, sy, sx = sp
    none = ("", "", "", "")
    return [("axial", a[nz // 2], (sy, sx), none, f"z index {nz // 2}"),
            ("coronal", a[:, ny // 2, :][::-1], (sz, sx), none, f"y index {ny // 2}"),
            ("sagittal", a[:, :, nx // 2][::-1], (sz, sy), none, f"x index {nx // 2}")]


def _font(size: int = 12):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _panel(img2d: np.ndarray, window, px_mm: tuple[float, float], scale: float):
    """Grey PIL image of a 2D slice resized to ``scale`` output pixels per mm (square mm)."""
    from PIL import Image
    im = Image.fromarray(to_uint8(img2d, window))
    h = max(1, int(round(img2d.shape[0] * px_mm[0] * scale)))
    w = max(1, int(round(img2d.shape[1] * px_mm[1] * scale)))
    if (w, h) != im.size:
        im = im.resize((w, h), Image.BILINEAR if (w > im.size[0] or h > im.size[1]) else Image.LANCZOS)
    return im


_GUT = 14   # gutter for the orientation letters around a panel (px)


def _compose_rows(rows: Sequence[Sequence[tuple[Any, str, tuple[str, str, str, str], str]]],
                  title: str | None, pad: int = 6):
    """Lay out rows of ``(PIL grey image, caption, letters, plane)``; returns (RGB image, boxes).

    Each cell is the panel with a gutter for the orientation letters, at least as wide as its
    caption; captions (two lines at most) sit at the bottom of the row."""
    from PIL import Image, ImageDraw
    font, tfont, lfont = _font(12), _font(14), _font(13)
    meas = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cap_h = 32
    tit_h = 22 if title else 0

    def cell_w(p, cap):
        tw = max((meas.textlength(line, font=font) for line in str(cap).split("\n")[:2]),
                 default=0)
        return int(max(p.size[0] + 2 * _GUT, math.ceil(tw) + 4))

    widths = [sum(cell_w(p, cap) for p, cap, *_ in r) + pad * (len(r) + 1) for r in rows]
    heights = [max(p.size[1] for p, *_ in r) + 2 * _GUT + cap_h for r in rows]
    W = max(widths + [int(meas.textlength(title, font=tfont)) + 2 * pad if title else 0])
    H = sum(heights) + tit_h + pad
    canvas = Image.new("RGB", (W, H), _BG)
    d = ImageDraw.Draw(canvas)
    if title:
        d.text((pad, pad // 2 + 2), title, fill=_TEXT, font=tfont)
    boxes: list[list[tuple[int, int, int, int]]] = []
    y = tit_h + pad
    for r, rh in zip(rows, heights):
        x = pad
        rb = []
        for p, cap, letters, _plane in r:
            w, h = p.size
            cw = cell_w(p, cap)
            x0, y0 = x + (cw - w) // 2, y + _GUT
            canvas.paste(p.convert("RGB"), (x0, y0))
            rb.append((x0, y0, x0 + w, y0 + h))
            left, right, top, bottom = letters
            for t, (cx, cy) in ((left, (x0 - _GUT // 2, y0 + h / 2)),
                                (right, (x0 + w + _GUT // 2, y0 + h / 2)),
                                (top, (x0 + w / 2, y0 - _GUT // 2)),
                                (bottom, (x0 + w / 2, y0 + h + _GUT // 2))):
                if t:
                    d.text((cx, cy), t, fill=_LETTER, font=lfont, anchor="mm")
            for i, line in enumerate(str(cap).split("\n")[:2]):
                d.text((x + 2, y + rh - cap_h + 1 + 14 * i), line, fill=_TEXT, font=font)
            x += cw + pad
        boxes.append(rb)
        y += rh
    return canvas, boxes


def _save_png(img, path, overwrite: bool) -> Path:
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise InputError("report images are PNG: the path must end in .png", path=p)
    with atomic_path(p, overwrite=overwrite) as tmp:
        img.save(tmp, format="PNG")
    return p


def _scale_for(extent_mm: float, target_px: int) -> float:
    return target_px / max(extent_mm, 1e-9)


def _windows_for(window, obj, data) -> list[tuple[str, tuple[float, float]]]:
    if window is None:
        return default_windows(obj) if _is_volume(obj) else [
            ("0.5-99.5 percentile", resolve_window(None, _sample(np.asarray(data))))]
    name = window if isinstance(window, str) else ""
    return [(name, resolve_window(window, data))]


def render_orthoslices(vol_or_array, *, window=None, title: str | None = None,
                       spacing: Sequence[float] | None = None, center=None, size: int = 256,
                       view: LPSView | None = None):
    """Draw the orthogonal slices (see :func:`orthoslices_png`) and say where each panel lies.

    Returns ``(image, panels)``: a Pillow RGB image and a list of :class:`Panel`, one per drawn
    slice and window (rows = windows, columns = axial, coronal, sagittal). ``view``: the volume's
    :func:`to_lps_view`, when already computed.
    """
    sp = None
    x = vol_or_array
    if _is_volume(x):
        sp = tuple(float(s) for s in reversed(x.spacing))
        if spacing is not None:
            view = None                     # explicit spacing: array order, as documented
        elif view is None:
            view = to_lps_view(x)
        data = _raw(x.array)
    else:
        view = None
        data = _raw(x)
    if spacing is not None:
        sp = tuple(float(s) for s in spacing)
    a = data
    if view is None and a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
        sp = sp[1:] if sp is not None and len(sp) == 3 else sp
    if a.ndim not in (2, 3):
        raise InputError(f"orthoslices_png needs a 2D or 3D array, got shape {a.shape}")
    sp = sp if sp is not None else (1.0,) * a.ndim
    if len(sp) != a.ndim or not all(s > 0 for s in sp):
        raise InputError(f"spacing {sp} must hold {a.ndim} positive mm values in array order")
    wins = _windows_for(window, x, a)
    rows, meta = [], []
    if a.ndim == 2:
        scale = _scale_for(max(a.shape[0] * sp[0], a.shape[1] * sp[1]), size)
        for name, win in wins:
            cap = f"{a.shape[1]}x{a.shape[0]} px\n{_wl_text(win)}" + (f" ({name})" if name else "")
            rows.append([(_panel(a, win, sp, scale), cap, ("", "", "", ""), "image")])
            meta.append([("image", ("", "", "", ""), "", win)])
    else:
        sl = _patient_slices(view, center) if view is not None else _array_slices(a, sp)
        nz, ny, nx = (view.array.shape if view is not None else a.shape)
        sz, sy, sx = (view.spacing_zyx if view is not None else sp)
        scale = _scale_for(max(nz * sz, ny * sy, nx * sx), size)
        for name, win in wins:
            r, m = [], []
            for plane, img, mm, letters, pos in sl:
                cap = f"{plane} {pos}\n{_wl_text(win)}" + (f" ({name})" if name else "")
                r.append((_panel(img, win, mm, scale), cap, letters, plane))
                m.append((plane, letters, pos, win))
            rows.append(r)
            meta.append(m)
    canvas, boxes = _compose_rows(rows, title)
    panels = [Panel(pl, b, le, pos, win) for rb, rm in zip(boxes, meta)
              for b, (pl, le, pos, win) in zip(rb, rm)]
    return canvas, panels


def orthoslices_png(vol_or_array, path, *, window=None, title: str | None = None,
                    spacing: Sequence[float] | None = None, center=None, size: int = 256,
                    overwrite: bool = False, view: LPSView | None = None) -> Path:
    """Write axial, coronal and sagittal slices (or a 2D image) as one labelled PNG.

    Parameters
    ----------
    vol_or_array : :class:`medvol.Volume` (drawn in the patient frame, see the module docstring),
        numpy array or torch tensor ``(z, y, x)`` or ``(y, x)`` (drawn in array order).
    path : output ``.png`` (written atomically; an existing file is an error unless ``overwrite``).
    window : ``(low, high)``, a preset name (see :data:`WINDOWS`) or ``None`` for the
        modality-aware default (:func:`default_windows`; head CT gets a brain and a bone row).
    title : text drawn above the panels (never put patient identifiers here).
    spacing : mm in array order; default from the Volume, else 1 mm. Giving it for a Volume
        draws the array in array order (no reorientation).
    center : LPS point (mm) the three slices pass through; default the centre of the volume.
    size : the largest physical extent is drawn this many pixels wide.
    view : the volume's :func:`to_lps_view`, when already computed.

    Returns the path.
    """
    img, _ = render_orthoslices(vol_or_array, window=window, title=title, spacing=spacing,
                                center=center, size=size, view=view)
    return _save_png(img, path, overwrite)


def comparison_png(images: Sequence[Any], labels: Sequence[str], path, *, window=None,
                   title: str | None = None, spacing: Sequence[float] | None = None,
                   size: int = 256, overwrite: bool = False) -> Path:
    """Images side by side in one shared grey window, each with its label underneath.

    ``images`` are 2D arrays of the same shape (volumes show their axial slice through the centre,
    in the patient frame with orientation letters); ``window=None`` uses the first image's
    default window (for a Volume the modality default, else the 0.5–99.5 percentiles), so every
    panel is shown on the same scale; the window is printed under each panel. Returns the path.
    """
    if len(images) == 0:
        raise InputError("comparison_png needs at least one image")
    if len(labels) != len(images):
        raise InputError(f"{len(images)} images but {len(labels)} labels")
    arrs, letters, pos = [], [], []
    sp = tuple(float(s) for s in spacing[-2:]) if spacing is not None else None
    for im in images:
        if _is_volume(im):
            view = to_lps_view(im)
            pl, a, mm, le, ptxt = _patient_slices(view, None)[0]
            sp = sp or mm
            letters.append(le)
            pos.append(ptxt)
        else:
            a = _np(im)
            if a.ndim == 3:
                a = a[a.shape[0] // 2]
            letters.append(("", "", "", ""))
            pos.append("")
        if a.ndim != 2:
            raise InputError(f"comparison_png needs 2D images (or 3D volumes), got shape {a.shape}")
        arrs.append(a)
    if len({a.shape for a in arrs}) != 1:
        raise InputError(f"images have different shapes {[a.shape for a in arrs]}")
    sp = sp or (1.0, 1.0)
    first = images[0] if _is_volume(images[0]) and window is None else arrs[0]
    name, win = _windows_for(window, first, arrs[0])[0]
    scale = _scale_for(max(arrs[0].shape[0] * sp[0], arrs[0].shape[1] * sp[1]), size)
    wl = _wl_text(win) + (f" ({name})" if name else "")
    row = [(_panel(a, win, sp, scale), f"{lab}" + (f": {p}" if p else "") + f"\n{wl}", le, "image")
           for a, lab, le, p in zip(arrs, labels, letters, pos)]
    img, _ = _compose_rows([row], title)
    return _save_png(img, path, overwrite)


def montage_png(vol, path, *, n: int = 8, window=None, title: str | None = None,
                size: int = 160, overwrite: bool = False, view: LPSView | None = None) -> Path:
    """QC montage: ``n`` evenly spaced axial slices (patient frame, radiological) per window.

    Slices run from 10 % to 90 % of the superior–inferior extent; each caption gives its position
    in mm and the window. ``window=None`` uses :func:`default_windows`; ``view`` is the volume's
    :func:`to_lps_view` when already computed. Returns the path.
    """
    if not _is_volume(vol):
        raise InputError("montage_png needs a medvol Volume (with its geometry)")
    view = to_lps_view(vol) if view is None else view
    a = view.array
    nz, ny, nx = a.shape
    sz, sy, sx = view.spacing_zyx
    ks = sorted(set(int(round(f * (nz - 1))) for f in np.linspace(0.1, 0.9, max(1, int(n)))))
    scale = _scale_for(max(ny * sy, nx * sx), size)
    rows = []
    for name, win in _windows_for(window, vol, a):
        wl = _wl_text(win) + (f" ({name})" if name else "")
        rows.append([(_panel(a[k], win, (sy, sx), scale),
                      f"{_pos_text(2, view.position((k, 0, 0))[2])}\n{wl}", ("R", "L", "A", "P"),
                      "axial") for k in ks[::-1]])
    img, _ = _compose_rows(rows, title)
    return _save_png(img, path, overwrite)


def patient_slices(vol, *, center=None, view: LPSView | None = None
                   ) -> list[tuple[str, np.ndarray, tuple[float, float], tuple, str]]:
    """The axial, coronal and sagittal slices of a Volume through ``center`` (LPS mm; default the
    centre) in radiological convention: ``[(plane, 2D image, (row mm, col mm), letters
    (left, right, top, bottom), position text)]``. Volumes on one grid give slices that match
    pixel for pixel, so they can be combined (checkerboards, overlays) before drawing with
    :func:`panels_png`."""
    if not _is_volume(vol):
        raise InputError("patient_slices needs a medvol Volume (with its geometry)")
    return _patient_slices(to_lps_view(vol) if view is None else view, center)


def panels_png(rows: Sequence[Sequence[tuple[np.ndarray, tuple[float, float], str, tuple, str]]],
               path, *, title: str | None = None, size: int = 256, overwrite: bool = False
               ) -> tuple[Path, list[Panel]]:
    """Draw rows of already composed slices, each ``(image, (row mm, col mm), caption, letters,
    plane)`` with ``image`` grey ``(h, w)`` or RGB ``(h, w, 3)`` in 0…1, at one common scale
    (the largest extent ``size`` px wide), square mm, orientation letters around each panel.

    Returns ``(path, panels)`` with the :class:`Panel` boxes (window ``(0, 1)``)."""
    from PIL import Image

    ext = max(max(im.shape[0] * mm[0], im.shape[1] * mm[1]) for r in rows for im, mm, *_ in r)
    scale = _scale_for(ext, size)
    out_rows, meta = [], []
    for r in rows:
        pr, m = [], []
        for im, mm, cap, letters, plane in r:
            a = np.asarray(im, np.float64)
            if a.ndim == 2:
                pil = _panel(a, (0.0, 1.0), mm, scale)
            else:
                pil = Image.fromarray((np.clip(np.nan_to_num(a), 0, 1) * 255).astype(np.uint8))
                w = max(1, int(round(a.shape[1] * mm[1] * scale)))
                h = max(1, int(round(a.shape[0] * mm[0] * scale)))
                pil = pil.resize((w, h), Image.NEAREST)
            pr.append((pil, cap, letters, plane))
            m.append((plane, letters, cap.split("\n")[0]))
        out_rows.append(pr)
        meta.append(m)
    canvas, boxes = _compose_rows(out_rows, title)
    panels = [Panel(pl, b, le, pos, (0.0, 1.0)) for rb, rm in zip(boxes, meta)
              for b, (pl, le, pos) in zip(rb, rm)]
    return _save_png(canvas, path, overwrite), panels


# ------------------------------------------------------------------------------ HTML
def _scrub(key: str, value: Any) -> Any:
    return "[removed]" if _PHI.search(str(key)) else value


_HEADERS = {
    "psnr_db": "PSNR (dB)", "psnr": "PSNR (dB)", "ssim": "SSIM", "rmse": "RMSE", "mae": "MAE",
    "psnr_db_window": "PSNR in window (dB)", "ssim_window": "SSIM in window",
    "n_iter": "Iterations", "lam": "TV weight λ", "lam_effective": "TV weight λ (effective)",
    "dice_before": "Dice before", "dice_after": "Dice after", "seconds": "Time (s)",
    "views_factor": "Sparse-view factor (×)", "full_views": "Full views", "views": "Views kept",
    "shape_zyx": "Shape (z, y, x)", "spacing_mm": "Spacing x, y, z (mm)",
    "fov_mm": "Field of view x, y, z (mm)", "tilt_deg": "Gantry tilt (°)", "kvp": "kVp",
    "n_slices_in": "Slices in", "ct_hu": "CT in HU", "body_part": "Body part",
    "noise_i0": "Photons per ray (I₀)", "i0": "Photons per ray (I₀)", "cor": "Rotation axis",
    "seconds_project": "Projection time (s)", "seconds_reconstruct": "Reconstruction time (s)",
    "tv_lambda": "TV weight λ (data scale)", "det_offset_mm": "Detector offset (mm)",
}
_UNITS = {"mm": "mm", "db": "dB", "s": "s", "hu": "HU", "deg": "°", "px": "px", "ms": "ms",
          "pct": "%", "percent": "%", "hz": "Hz"}
_ACRONYMS = {"psnr", "ssim", "rmse", "mae", "nrmse", "ct", "mr", "mri", "tv", "fbp", "sirt",
             "cgls", "hu", "lps", "ras", "id", "cor", "gpu", "cpu", "dvf", "ncc", "mi", "kvp",
             "uid", "tre"}


def human_header(key: str) -> str:
    """A table header for a record key: known names (``psnr_db`` → ``PSNR (dB)``), else words with
    a unit suffix turned into ``(unit)`` (``spacing_mm`` → ``Spacing (mm)``). Keys with spaces or
    capitals are kept as given."""
    k = str(key)
    if k in _HEADERS:
        return _HEADERS[k]
    if " " in k or any(ch.isupper() for ch in k) or "_" not in k and k not in _ACRONYMS:
        return k[:1].upper() + k[1:] if k.islower() else k
    parts = [p for p in k.split("_") if p]
    unit = None
    if len(parts) > 1 and parts[-1].lower() in _UNITS:
        unit = _UNITS[parts.pop().lower()]
    words = [p.upper() if p.lower() in _ACRONYMS else p for p in parts]
    if words and words[0] == words[0].lower():
        words[0] = words[0][:1].upper() + words[0][1:]
    return " ".join(words) + (f" ({unit})" if unit else "")


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not np.isfinite(f):
            return html.escape(str(f))
        return f"{f:.4g}" if (abs(f) >= 1e-3 or f == 0) and abs(f) < 1e6 else f"{f:.3e}"
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float, np.number))
                                                  and not isinstance(x, bool) for x in v):
        return "\u00a0×\u00a0".join(_fmt(x) for x in v) if len(v) <= 4 else html.escape(json.dumps(
            [float(x) for x in v])[:500])
    if isinstance(v, (list, tuple, dict)):
        try:
            return html.escape(json.dumps(v, default=str)[:500])
        except (TypeError, ValueError):
            pass
    return html.escape(str(v)[:500])


def _table(rows: Iterable[Mapping[str, Any]]) -> str:
    rows = list(rows)
    if not rows:
        return "<p><em>(empty)</em></p>"
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    head = "".join(f"<th title='{html.escape(str(c), quote=True)}'>"
                   f"{html.escape(human_header(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(_scrub(c, r.get(c, '')))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:80em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}td,th{border:1px solid #bbb;padding:.25em .6em;
text-align:right;font-variant-numeric:tabular-nums}th{background:#eee}td:first-child{text-align:left}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figcaption{font-size:.9em;color:#444;max-width:60em}
img{max-width:100%;image-rendering:auto;border:1px solid #ccc}
p.note{font-size:.9em;color:#555;max-width:60em}"""

_NOTE = ("Images are shown in radiological convention from each volume's direction matrix: "
         "axial seen from the feet (patient right on the image left), coronal seen from the front, "
         "sagittal seen from the patient's left; letters mark the patient directions, positions "
         "are LPS coordinates in mm, windows are width (W) / level (L).")


def write_html_report(out_dir, *, title: str, images: Sequence[tuple[str, str | os.PathLike]] = (),
                      tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                      params: Mapping[str, Any] | None = None, overwrite: bool = False,
                      note: str | None = _NOTE) -> Path:
    """Write ``out_dir/report.html``: title, metric tables, figures, parameters.

    Parameters
    ----------
    out_dir : folder for the report (created if missing). Image links are written relative to it,
        so keep the PNGs inside ``out_dir`` for a self-contained folder.
    title : page title.
    images : ``[(caption, png_path), ...]``; a missing file is an :class:`InputError`.
    tables : ``{table name: [row dict, ...]}`` (e.g. metrics per method); columns are the union of
        the row keys in first-seen order, headed by :func:`human_header` (``psnr_db`` →
        ``PSNR (dB)``; the raw key is the header's tooltip); floats shown with 4 significant digits.
    params : run parameters (name → value), shown as a two-column table.
    overwrite : replace an existing ``report.html``.
    note : a line under the figures heading explaining the display conventions (``None``: none).

    Returns the path of ``report.html``. No patient identifiers: values of keys that name patient
    data are replaced by ``[removed]``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "report.html"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for name, rows in (tables or {}).items():
        parts.append(f"<h2>{html.escape(str(name))}</h2>{_table(rows)}")
    if images:
        parts.append("<h2>Figures</h2>")
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        for cap, p in images:
            pp = Path(p)
            if not pp.is_file():
                raise InputError("report image not found", path=pp,
                                 hint="write the PNG before the report")
            rel = os.path.relpath(pp.resolve(), out.resolve()).replace(os.sep, "/")
            parts.append(f"<figure><img src='{html.escape(rel, quote=True)}' "
                         f"alt='{html.escape(str(cap), quote=True)}'>"
                         f"<figcaption>{html.escape(str(cap))}</figcaption></figure>")
    if params:
        rows = [{"parameter": human_header(k), "value": _scrub(k, v)} for k, v in params.items()]
        parts.append(f"<h2>Parameters</h2>{_table(rows)}")
    parts.append("</body></html>\n")
    return atomic_write_text(target, "\n".join(parts), overwrite=overwrite)


# ---------------------------------------------------------------------------- ingest QC
def _series_row(vol, label: str, view: LPSView) -> dict[str, Any]:
    meta = dict(getattr(vol, "meta", {}) or {})
    ing = meta.get("ingest", {}) if isinstance(meta.get("ingest"), Mapping) else {}
    a = _raw(vol.array)
    nz, ny, nx = vol.shape
    sp = vol.spacing
    row = {
        "series": label,
        "modality": meta.get("modality", ""),
        "body_part": meta.get("body_part", ""),
        "shape_zyx": [nz, ny, nx],
        "spacing_mm": [round(float(s), 4) for s in sp],
        "fov_mm": [round(nx * sp[0], 1), round(ny * sp[1], 1), round(nz * sp[2], 1)],
        "orientation": view.source_axes + (f" (oblique {view.obliquity_deg:.1f}°)"
                                           if view.obliquity_deg else ""),
        "kind": meta.get("image_kind", ""),
        "units": meta.get("units", ""),
        "min": float(np.nanmin(a)) if a.size else float("nan"),
        "max": float(np.nanmax(a)) if a.size else float("nan"),
    }
    if "tilt_deg" in meta:
        row["tilt_deg"] = meta["tilt_deg"]
    if meta.get("repeat_count"):
        row["repeats"] = int(meta["repeat_count"])
    if ing:
        row["n_slices_in"] = ing.get("n_slices_in", "")
        row["resampled"] = bool(ing.get("resampled", False))
        row["warnings"] = len(ing.get("warnings", []) or [])
    return row


def ingest_report(volumes: Sequence[Any], out_dir, *, title: str = "medvol ingest — QC",
                  n_slices: int = 8, overwrite: bool = False, manifest=None) -> list[Path]:
    """QC report of an ingest run: ``out_dir/<label>/qc_montage.png`` and ``qc_orthoslices.png`` per
    series (beside its ``volume.nrrd``) and ``out_dir/report.html``.

    Each series gets a montage (``n_slices`` axial slices, radiological, positions in mm) and its
    orthogonal slices through the volume centre, in the modality's default windows (head CT: brain
    and bone rows). The page has a series table (modality, shape, spacing and field of view in mm,
    source orientation, content kind, value range, units, tilt, repeats, resampling, warnings).
    For repeats stacked into one 4D file pass the first repeat (its ``repeat_count`` is shown).

    Parameters
    ----------
    volumes : :class:`medvol.Volume` objects; ``meta['label']`` (the safe series label such as
        ``s003_CT_1a2b3c4d``) names the figures, else ``series_<n>``. Labels are reduced to
        ``[A-Za-z0-9_.-]``.
    out_dir : the ingest output folder (or any folder); created if missing.
    manifest : a :class:`medvol.manifest.Manifest`; the written files are listed under its ``qc``
        key (path relative to ``out_dir``, sha256), apart from the data ``outputs``.

    Returns the written paths (PNGs first, ``report.html`` last), e.g. for the manifest.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, rows, written = [], [], []
    for n, vol in enumerate(volumes):
        label = str((getattr(vol, "meta", {}) or {}).get("label") or f"series_{n + 1:03d}")
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:80] or f"series_{n + 1:03d}"
        view = to_lps_view(vol)
        rows.append(_series_row(vol, label, view))
        (out / label).mkdir(exist_ok=True)
        m = montage_png(vol, out / label / "qc_montage.png", n=n_slices, title=label,
                        overwrite=overwrite, view=view)
        o = orthoslices_png(vol, out / label / "qc_orthoslices.png", title=label,
                            overwrite=overwrite, view=view)
        images += [(f"{label}: axial montage", m), (f"{label}: axial, coronal, sagittal", o)]
        written += [m, o]
    written.append(write_html_report(out, title=title, images=images,
                                     tables={"Series": rows}, overwrite=overwrite))
    if manifest is not None:
        from .manifest import sha256_file

        manifest.data["qc"] = [{"path": os.path.relpath(p, out).replace(os.sep, "/"),
                                "sha256": sha256_file(p)} for p in written]
    return written
