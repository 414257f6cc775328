"""Run reports: grey-scale PNG panels and a small self-contained HTML page.

Everything is drawn with Pillow only (no matplotlib), so reports work on a bare server.

* :func:`orthoslices_png` — the three orthogonal mid-slices of a volume (axial / coronal /
  sagittal, each resampled to square millimetres so the physical aspect is right) or a 2D image.
* :func:`comparison_png` — images side by side in one shared grey window with a label under each
  (e.g. reference / FBP / TV, or centred vs estimated rotation axis).
* :func:`write_html_report` — ``report.html`` with a title, the images (relative links), metric
  tables and a parameter table; written atomically.

Display conventions
-------------------
Arrays are ``(z, y, x)`` (see :class:`medvol.Volume`). Axial = ``[z_mid]`` shown with rows = y,
columns = x (for an LPS volume with identity direction this is the radiological view: patient
right on the image left, anterior at the top). Coronal = ``[:, y_mid, :]`` and sagittal =
``[:, :, x_mid]`` are flipped vertically so that +z (superior) is at the top. Volumes with other
direction matrices are shown in array order (no reorientation).

Windows: ``window=(low, high)`` in image units, a CT preset name (``"soft_tissue"`` W/L 400/40,
``"bone"`` 1800/400, ``"lung"`` 1500/−600, ``"brain"`` 80/40 — all HU), or ``None`` for the
0.5–99.5 percentile range of the data.

Privacy: the HTML report never includes patient identifiers; parameter or table keys that name
patient data (``PatientName``, ``PatientID``, ``PatientBirthDate``, ``…Name``/``…ID`` of the
patient, ``AccessionNumber`` …) have their values replaced by ``[removed]``.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from .errors import InputError

__all__ = ["WINDOWS", "resolve_window", "to_uint8", "orthoslices_png", "comparison_png",
           "write_html_report"]

WINDOWS: dict[str, tuple[float, float]] = {
    # name: (width, level) in HU
    "soft_tissue": (400.0, 40.0),
    "bone": (1800.0, 400.0),
    "lung": (1500.0, -600.0),
    "brain": (80.0, 40.0),
}

_PHI = re.compile(r"patient|birth|accession|institution|referring|operator|physician"
                  r"|studyid|otherpatient", re.I)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise InputError(f"image must be numeric, got dtype {a.dtype}")
    return a.astype(np.float64)


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


def to_uint8(img, window) -> np.ndarray:
    """Map ``img`` linearly from ``window=(low, high)`` to 0…255 (clipped); NaN → 0."""
    lo, hi = window
    a = (_np(img) - lo) / (hi - lo)
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


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


def _compose(panels, labels: Sequence[str], title: str | None, pad: int = 6):
    from PIL import Image, ImageDraw
    font = _font(12)
    tfont = _font(14)
    lab_h = 18
    tit_h = 22 if title else 0
    W = sum(p.size[0] for p in panels) + pad * (len(panels) + 1)
    H = max(p.size[1] for p in panels) + lab_h + tit_h + 2 * pad
    canvas = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(canvas)
    if title:
        d.text((pad, pad // 2 + 2), title, fill=255, font=tfont)
    x = pad
    for p, lab in zip(panels, labels):
        canvas.paste(p, (x, tit_h + pad))
        d.text((x, tit_h + pad + p.size[1] + 3), str(lab), fill=255, font=font)
        x += p.size[0] + pad
    return canvas


def _save_png(img, path, overwrite: bool) -> Path:
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise InputError("report images are PNG: the path must end in .png", path=p)
    with atomic_path(p, overwrite=overwrite) as tmp:
        img.save(tmp, format="PNG")
    return p


def _scale_for(extent_mm: float, target_px: int) -> float:
    return target_px / max(extent_mm, 1e-9)


def orthoslices_png(vol_or_array, path, *, window=None, title: str | None = None,
                    spacing: Sequence[float] | None = None, size: int = 256,
                    overwrite: bool = False) -> Path:
    """Write three orthogonal mid-slices (or a 2D image) as one labelled grey PNG.

    Parameters
    ----------
    vol_or_array : :class:`medvol.Volume`, numpy array or torch tensor ``(z, y, x)`` or ``(y, x)``.
    path : output ``.png`` (written atomically; an existing file is an error unless ``overwrite``).
    window : ``(low, high)``, a preset name (see module docstring) or ``None`` (percentiles).
    title : text drawn above the panels (never put patient identifiers here).
    spacing : mm in array order; default from the Volume, else 1 mm.
    size : the largest physical extent is drawn this many pixels wide.

    Returns the path.
    """
    sp = None
    x = vol_or_array
    if hasattr(x, "array") and hasattr(x, "spacing") and hasattr(x, "direction"):
        sp = tuple(float(s) for s in reversed(x.spacing))
        x = x.array
    a = _np(x)
    if spacing is not None:
        sp = tuple(float(s) for s in spacing)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
        sp = sp[1:] if sp is not None and len(sp) == 3 else sp
    if a.ndim not in (2, 3):
        raise InputError(f"orthoslices_png needs a 2D or 3D array, got shape {a.shape}")
    sp = sp if sp is not None else (1.0,) * a.ndim
    if len(sp) != a.ndim or not all(s > 0 for s in sp):
        raise InputError(f"spacing {sp} must hold {a.ndim} positive mm values in array order")
    win = resolve_window(window, a)
    if a.ndim == 2:
        scale = _scale_for(max(a.shape[0] * sp[0], a.shape[1] * sp[1]), size)
        img = _compose([_panel(a, win, sp, scale)],
                       [f"{a.shape[1]}×{a.shape[0]} px  window [{win[0]:.4g}, {win[1]:.4g}]"], title)
        return _save_png(img, path, overwrite)
    nz, ny, nx = a.shape
    sz, sy, sx = sp
    scale = _scale_for(max(nz * sz, ny * sy, nx * sx), size)
    ax = a[nz // 2]
    co = a[:, ny // 2, :][::-1]
    sa = a[:, :, nx // 2][::-1]
    panels = [_panel(ax, win, (sy, sx), scale), _panel(co, win, (sz, sx), scale),
              _panel(sa, win, (sz, sy), scale)]
    labels = [f"axial z={nz // 2}", f"coronal y={ny // 2}", f"sagittal x={nx // 2}"]
    ttl = title if title is not None else None
    img = _compose(panels, labels, ttl)
    return _save_png(img, path, overwrite)


def comparison_png(images: Sequence[Any], labels: Sequence[str], path, *, window=None,
                   title: str | None = None, spacing: Sequence[float] | None = None,
                   size: int = 256, overwrite: bool = False) -> Path:
    """Images side by side in one shared grey window, each with its label underneath.

    ``images`` are 2D arrays of the same shape (3D arrays show their middle axial slice);
    ``window=None`` uses the percentiles of the *first* image (the reference, by convention), so
    every panel is shown on the same scale. Returns the path.
    """
    if len(images) == 0:
        raise InputError("comparison_png needs at least one image")
    if len(labels) != len(images):
        raise InputError(f"{len(images)} images but {len(labels)} labels")
    arrs = []
    for im in images:
        if hasattr(im, "array") and hasattr(im, "spacing") and hasattr(im, "direction"):
            im = im.array
        a = _np(im)
        if a.ndim == 3:
            a = a[a.shape[0] // 2]
        if a.ndim != 2:
            raise InputError(f"comparison_png needs 2D images (or 3D volumes), got shape {a.shape}")
        arrs.append(a)
    if len({a.shape for a in arrs}) != 1:
        raise InputError(f"images have different shapes {[a.shape for a in arrs]}")
    sp = tuple(float(s) for s in spacing[-2:]) if spacing is not None else (1.0, 1.0)
    win = resolve_window(window, arrs[0])
    scale = _scale_for(max(arrs[0].shape[0] * sp[0], arrs[0].shape[1] * sp[1]), size)
    panels = [_panel(a, win, sp, scale) for a in arrs]
    return _save_png(_compose(panels, list(labels), title), path, overwrite)


def _scrub(key: str, value: Any) -> Any:
    return "[removed]" if _PHI.search(str(key)) else value


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
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(_scrub(c, r.get(c, '')))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:72em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .6em;
text-align:right;font-variant-numeric:tabular-nums}th{background:#eee}td:first-child{text-align:left}
figure{display:inline-block;margin:.5em 1em .5em 0}figcaption{font-size:.9em;color:#444}
img{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}"""


def write_html_report(out_dir, *, title: str, images: Sequence[tuple[str, str | os.PathLike]] = (),
                      tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                      params: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``out_dir/report.html``: title, metric tables, figures, parameters.

    Parameters
    ----------
    out_dir : folder for the report (created if missing). Image links are written relative to it,
        so keep the PNGs inside ``out_dir`` for a self-contained folder.
    title : page title.
    images : ``[(caption, png_path), ...]``; a missing file is an :class:`InputError`.
    tables : ``{table name: [row dict, ...]}`` (e.g. metrics per method); columns are the union of
        the row keys in first-seen order; floats shown with 4 significant digits.
    params : run parameters (name → value), shown as a two-column table.
    overwrite : replace an existing ``report.html``.

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
        rows = [{"parameter": k, "value": _scrub(k, v)} for k, v in params.items()]
        parts.append(f"<h2>Parameters</h2>{_table(rows)}")
    parts.append("</body></html>\n")
    return atomic_write_text(target, "\n".join(parts), overwrite=overwrite)
