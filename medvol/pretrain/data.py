"""Volumes for pre-training and for the few-label hippocampus benchmark.

Everything is read from a data root given by the caller (``--data DIR`` or ``MEDVOL_DATA``,
:func:`medvol.learned.data.resolve_data_root`), laid out as the project's shared data folder::

    DIR/mri/hippocampus/images/hippocampus_NNN.nii.gz   unlabelled pool (minus the test subjects)
    DIR/mri/hippocampus/labels/hippocampus_NNN.nii.gz   labels 1 anterior, 2 posterior (fine-tuning)
    DIR/mri/ixi10/t1/*.nii.gz                           optional extra pool (--sources ixi10)
    DIR/mri/stroke/{T1,T2,FLAIR}.nii.gz                 optional (--sources stroke)
    DIR/ct/totalseg/{abdomen_ct,chest_cta}.nii.gz       optional CT (--sources totalseg)

Arrays are returned in ``(z, y, x)`` order (the NIfTI array ``(x, y, z)`` transposed), so the
VoCo "x–y" plane is the last two axes. The subject split is ``splits.json`` next to this module:
the test subjects are never in the pre-training pool.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["SOURCES", "HIPPO", "splits", "read_zyx", "normalise_mri", "window_ct",
           "foreground_box", "unlabelled_pool", "load_hippocampus_labelled", "heldout_images",
           "resize_to"]

HIPPO = "mri/hippocampus"
# source name -> (sub-path, file pattern, modality)
SOURCES = {
    "hippocampus": ("mri/hippocampus/images", "*.nii.gz", "mri"),
    "ixi10": ("mri/ixi10/t1", "*.nii.gz", "mri"),
    "stroke": ("mri/stroke", "*.nii.gz", "mri"),
    "totalseg": ("ct/totalseg", "*_ct*.nii.gz", "ct"),
}
CT_WINDOW = (-175.0, 250.0)  # HU window of VoCo v1


def splits() -> dict:
    """The fixed subject split (``splits.json`` next to this module)."""
    return json.loads(Path(__file__).with_name("splits.json").read_text())


def read_zyx(path) -> np.ndarray:
    """A NIfTI volume as float32 ``(z, y, x)``; one-line :class:`InputError` when unreadable."""
    import nibabel as nib

    try:
        a = np.asarray(nib.load(str(path)).dataobj, np.float32)
    except Exception as e:  # nibabel raises many kinds for broken files
        raise InputError(f"cannot read volume ({type(e).__name__})", path=path,
                         hint="pass a folder of readable .nii.gz files") from None
    if a.ndim == 4 and a.shape[3] == 1:
        a = a[..., 0]
    if a.ndim != 3 or min(a.shape) < 4:
        raise InputError(f"expected a 3D volume, got shape {a.shape}", path=path)
    return np.ascontiguousarray(a.transpose(2, 1, 0))


def normalise_mri(a: np.ndarray) -> np.ndarray:
    """MRI intensities to [0, 1]: 0.5th–99.5th percentile of the non-zero voxels, clipped."""
    sel = a[a > 0] if np.any(a > 0) else a.ravel()
    lo, hi = np.percentile(sel, [0.5, 99.5])
    return np.clip((a - lo) / max(float(hi - lo), 1e-6), 0, 1).astype(np.float32)


def window_ct(a: np.ndarray) -> np.ndarray:
    """CT HU window [−175, 250] → [0, 1], clipped (VoCo v1)."""
    lo, hi = CT_WINDOW
    return np.clip((a - lo) / (hi - lo), 0, 1).astype(np.float32)


def foreground_box(a: np.ndarray, threshold: float) -> tuple[slice, ...]:
    """Bounding box of ``a > threshold`` (MONAI ``generate_spatial_bounding_box``); the whole
    array when nothing exceeds it."""
    from monai.transforms.utils import generate_spatial_bounding_box

    lo, hi = generate_spatial_bounding_box(a[None], select_fn=lambda x: x > threshold)
    if any(h - l < 4 for l, h in zip(lo, hi)):
        return tuple(slice(0, n) for n in a.shape)
    return tuple(slice(l, h) for l, h in zip(lo, hi))


def resize_to(a: np.ndarray, shape: Sequence[int], mode: str = "trilinear") -> np.ndarray:
    """``a`` resampled to ``shape`` (torch ``interpolate``; ``mode="nearest"`` for labels)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
    kw = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(t, size=tuple(int(s) for s in shape), mode=mode, **kw)[0, 0].numpy()


def _files(root: Path, source: str) -> list[Path]:
    sub, pattern, _ = SOURCES[source]
    files = sorted((root / sub).glob(pattern))
    if source == "hippocampus":
        keep = set(splits()["hippocampus"]["pretrain"])
        files = [f for f in files if f.name[:-7] in keep]
    if source == "totalseg":
        files = [f for f in files if not f.name.endswith("_seg.nii.gz")]
    return files


def unlabelled_pool(data, sources: Sequence[str] = ("hippocampus",), *,
                    region: Sequence[int] = (32, 48, 32), exclude: Sequence[str] = ()) -> tuple[np.ndarray, list[str]]:
    """Pre-training volumes: each normalised, cropped to its foreground and resized to
    ``region`` ``(z, y, x)``. Hippocampus test subjects (and ``exclude``) are never included.

    Returns ``(volumes (N, z, y, x) float32, names)``; names are file stems (no identifiers).
    """
    from ..learned.data import resolve_data_root

    bad = [s for s in sources if s not in SOURCES]
    if bad or not sources:
        raise InputError(f"unknown pre-training source(s) {bad or '(none)'}; choose from "
                         f"{', '.join(SOURCES)}")
    root = resolve_data_root(data, need=tuple(SOURCES[s][0] for s in sources))
    test = set(splits()["hippocampus"]["test"]) | set(exclude)
    vols, names = [], []
    for s in sources:
        files = [f for f in _files(root, s) if f.name.split(".")[0] not in test]
        if not files:
            raise InputError(f"no volumes for source {s}", path=root / SOURCES[s][0])
        for f in files:
            a = read_zyx(f)
            a = window_ct(a) if SOURCES[s][2] == "ct" else normalise_mri(a)
            a = a[foreground_box(a, 0.3 if SOURCES[s][2] == "ct" else 0.05)]
            vols.append(resize_to(a, region))
            names.append(f"{s}/{f.name.split('.')[0]}")
    return np.stack(vols).astype(np.float32), names


def heldout_images(data, region: Sequence[int]) -> np.ndarray:
    """Images of the hippocampus *test* subjects present under the data root, normalised and
    resized to ``region`` (``(N, z, y, x)``; ``N = 0`` when there are none). Labels are not read."""
    from ..learned.data import resolve_data_root

    root = resolve_data_root(data) / HIPPO / "images"
    files = [root / f"{s}.nii.gz" for s in splits()["hippocampus"]["test"]]
    vols = [resize_to(normalise_mri(read_zyx(f)), region) for f in files if f.is_file()]
    return np.stack(vols) if vols else np.zeros((0, *region), np.float32)


def load_hippocampus_labelled(data, subjects: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(image (z, y, x) in [0, 1], labels (z, y, x) uint8)]`` at native 1 mm resolution."""
    from ..learned.data import resolve_data_root

    root = resolve_data_root(data, need=(f"{HIPPO}/images", f"{HIPPO}/labels")) / HIPPO
    out = []
    for s in subjects:
        fi, fl = root / "images" / f"{s}.nii.gz", root / "labels" / f"{s}.nii.gz"
        if not fi.is_file() or not fl.is_file():
            raise InputError(f"hippocampus subject {s} missing", path=fi,
                             hint="the data root must hold mri/hippocampus/{images,labels}")
        img, lab = read_zyx(fi), np.rint(read_zyx(fl)).astype(np.uint8)
        if img.shape != lab.shape:
            raise InputError(f"image and label grids differ for {s}", path=fl)
        out.append((normalise_mri(img), lab))
    return out
