"""Many-patient training and test data for PD-UNet/LPD, split by patient/subject.

Every slice carries the subject it came from; a subject is in exactly one split. Subjects are
keyed by a salted one-way hash (:func:`subject_key`) — the patient ID itself never leaves this
module (not in logs, model cards or benchmark tables).

CT sources (below the data root, see ``shared/data/README.md``)
---------------------------------------------------------------
============== ================================ ========= ============================================
source         path                             region    split
============== ================================ ========= ============================================
``tcga_luad``  ``ct/tcga_luad_slices/*.dcm``    chest     54 patients (PatientID); the
                                                          :data:`N_TCGA_TEST` with the smallest keys
                                                          are test, the rest train
``chest_cta``  ``ct/totalseg/chest_cta.nii.gz`` chest     train (every 6th axial slice)
``petct``      ``ct/totalseg/petct_dicom/``     body      train (its 20 slices)
``head_ct``    ``dicom/ct_head_ge_tilt/``       head      **test** (the only head CT subject)
``abdomen_ct`` ``ct/totalseg/abdomen_ct.nii.gz`` abdomen  **test** (the only abdomen subject)
============== ================================ ========= ============================================

Each axial slice (reoriented to LPS) is converted HU → μ (1/mm, values below −1000 HU → 0),
zero-padded square and resampled to the task grid (128²) so that **the scan's field of view
fills the grid** (head 250 mm, chest 280–500 mm, abdomen 366 mm all map onto 128 pixels of the
task's nominal 1.953 mm). Line integrals are therefore those of a body scaled to a 250 mm field —
the same for every source, and what the ×16 task geometry sees. Test slices per subject: up to
:data:`TEST_SLICES_PER_SUBJECT`, evenly spaced over the slices with body content.

MRI sources
-----------
``ixi`` (``mri/ixi10/t1``: 10 subjects; the fixed IXI split of
``medvol/registration/splits.json``: 7 train, 3 test), ``stroke`` (``mri/stroke`` T1/T2/FLAIR of
one patient: train), ``mni`` (nilearn's MNI152 template, another subject: test). Axial brain
slices with ≥ 20 % foreground, each volume divided by its maximum.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..learned.data import resolve_data_root

__all__ = ["Subject", "subject_key", "ct_subjects", "mri_subjects", "cohort_slices",
           "split_table", "N_TCGA_TEST", "TEST_SLICES_PER_SUBJECT", "CT_SOURCES", "MRI_SOURCES"]

N_TCGA_TEST = 12
TEST_SLICES_PER_SUBJECT = 6
_SALT = "medvol-pdunet-v1:"
TCGA = "ct/tcga_luad_slices"
HEAD = "dicom/ct_head_ge_tilt"
ABDOMEN = "ct/totalseg/abdomen_ct.nii.gz"
CHEST_CTA = "ct/totalseg/chest_cta.nii.gz"
PETCT = "ct/totalseg/petct_dicom"
IXI = "mri/ixi10/t1"
STROKE = "mri/stroke"
CT_SOURCES = {"tcga_luad": TCGA, "chest_cta": CHEST_CTA, "petct": PETCT, "head_ct": HEAD,
              "abdomen_ct": ABDOMEN}
MRI_SOURCES = {"ixi": IXI, "stroke": STROKE, "mni": "nilearn:MNI152"}


@dataclass
class Subject:
    """One patient/subject: its hashed key, source, body region, split and 2D slices."""

    key: str
    source: str
    region: str
    split: str
    slices: list = field(default_factory=list, repr=False)

    def row(self) -> dict:
        return dict(key=self.key, source=self.source, region=self.region, split=self.split,
                    n_slices=len(self.slices))


def subject_key(source: str, ident: str) -> str:
    """Salted SHA-256 (12 hex digits) of a subject identifier: stable, not reversible."""
    return hashlib.sha256(f"{_SALT}{source}:{ident}".encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- CT
def _to_grid(mu: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad square and resample to ``size²`` (block mean when it divides, else anti-aliased
    linear)."""
    ny, nx = mu.shape
    n = max(ny, nx)
    pad = np.zeros((n, n), np.float32)
    pad[(n - ny) // 2:(n - ny) // 2 + ny, (n - nx) // 2:(n - nx) // 2 + nx] = mu
    if n % size == 0:
        f = n // size
        return pad.reshape(size, f, size, f).mean(axis=(1, 3)).astype(np.float32)
    from skimage.transform import resize

    return np.clip(resize(pad, (size, size), order=1, anti_aliasing=n > size,
                          preserve_range=True), 0, None).astype(np.float32)


def _hu_slice(hu: np.ndarray, size: int) -> np.ndarray:
    from ..simulate import hu_to_mu

    return _to_grid(np.asarray(hu_to_mu(np.asarray(hu, np.float32)), np.float32), size)


def _dicom_hu(path: Path):
    import pydicom

    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1.0)) \
        + float(getattr(ds, "RescaleIntercept", 0.0))
    pos = getattr(ds, "ImagePositionPatient", None)
    return ds, hu, (float(pos[2]) if pos is not None else 0.0)


def _body_fraction(mu: np.ndarray) -> float:
    from ..simulate import MU_WATER_70KEV

    return float((mu > 0.5 * MU_WATER_70KEV).mean())


def _spaced(slices: list, k: int) -> list:
    if len(slices) <= k:
        return list(slices)
    idx = np.linspace(0, len(slices) - 1, k).round().astype(int)
    return [slices[i] for i in idx]


def _axial_slices(path: Path, size: int, *, min_body: float = 0.1) -> list[np.ndarray]:
    from ..io import read
    from ..report import to_lps_view

    view = to_lps_view(read(path), oblique="nearest")
    out = []
    for hu in view.array:
        mu = _hu_slice(hu, size)
        if _body_fraction(mu) >= min_body:
            out.append(mu)
    return out


def _files(d: Path, pattern: str = "*") -> list[Path]:
    fs = sorted(p for p in d.glob(pattern) if p.is_file())
    if not fs:
        raise InputError(f"no files in {d}", path=d,
                         hint="see `medvol train pdunet --help` for the data layout")
    return fs


def ct_subjects(data=None, *, size: int = 128, split: str = "all",
                sources: tuple[str, ...] | None = None) -> list[Subject]:
    """The CT cohort (see the module docstring), as :class:`Subject` s with μ slices ``size²``.

    ``split``: ``"train"``, ``"test"`` or ``"all"``; ``sources``: a subset of
    :data:`CT_SOURCES` (default all).
    """
    sources = tuple(sources or CT_SOURCES)
    bad = [s for s in sources if s not in CT_SOURCES]
    if bad:
        raise InputError(f"unknown CT source(s) {bad}; choose from {', '.join(CT_SOURCES)}")
    root = resolve_data_root(data, need=tuple(CT_SOURCES[s] for s in sources))
    subs: list[Subject] = []
    if "tcga_luad" in sources:
        by_pid: dict[str, list] = {}
        for f in _files(root / TCGA, "*.dcm"):
            ds, hu, z = _dicom_hu(f)
            pid = str(getattr(ds, "PatientID", "") or f.stem)
            by_pid.setdefault(pid, []).append((z, _hu_slice(hu, size)))
        keys = {subject_key("tcga_luad", pid): pid for pid in by_pid}
        test = set(sorted(keys)[:N_TCGA_TEST])
        for k in sorted(keys):
            sl = [mu for _, mu in sorted(by_pid[keys[k]], key=lambda t: t[0])]
            subs.append(Subject(k, "tcga_luad", "chest", "test" if k in test else "train", sl))
    if "chest_cta" in sources:
        sl = _axial_slices(root / CHEST_CTA, size)
        subs.append(Subject(subject_key("chest_cta", "1"), "chest_cta", "chest", "train",
                            sl[::6]))
    if "petct" in sources:
        items = sorted((z, _hu_slice(hu, size)) for _, hu, z in
                       (_dicom_hu(f) for f in _files(root / PETCT)))
        subs.append(Subject(subject_key("petct", "1"), "petct", "body", "train",
                            [mu for _, mu in items]))
    if "head_ct" in sources:
        items = sorted((z, _hu_slice(hu, size)) for _, hu, z in
                       (_dicom_hu(f) for f in _files(root / HEAD, "*.dcm")))
        sl = [mu for _, mu in items if _body_fraction(mu) >= 0.1]
        subs.append(Subject(subject_key("head_ct", "1"), "head_ct", "head", "test", sl))
    if "abdomen_ct" in sources:
        subs.append(Subject(subject_key("abdomen_ct", "1"), "abdomen_ct", "abdomen", "test",
                            _axial_slices(root / ABDOMEN, size, min_body=0.2)))
    for s in subs:      # every test subject: up to TEST_SLICES_PER_SUBJECT, evenly spaced
        if s.split == "test":
            s.slices = _spaced(s.slices, TEST_SLICES_PER_SUBJECT)
    return [s for s in subs if split == "all" or s.split == split]


# --------------------------------------------------------------------------- MRI
def mri_subjects(data=None, *, size: int = 128, split: str = "all") -> list[Subject]:
    """The MRI cohort (IXI T1 ×10, stroke T1/T2/FLAIR, MNI152) as :class:`Subject` s with
    slices in ``[0, 1]``."""
    from ..io import read
    from ..report import to_lps_view
    from .pdunet_data import _brain_slices, mri_slices

    root = resolve_data_root(data, need=(IXI, STROKE)) if split != "test" else \
        resolve_data_root(data, need=(IXI,))
    from ..registration.datasets import splits

    sp = splits()["ixi10"]
    which = {sid: s for s in ("train", "test") for sid in sp[s]}
    subs: list[Subject] = []
    for f in _files(root / IXI, "*.nii.gz"):
        sid = f.name.split("-T1")[0]
        sset = which.get(sid)
        if sset is None or (split != "all" and sset != split):
            continue
        arr = to_lps_view(read(f), oblique="nearest").array
        sl = _brain_slices(arr, size)
        if sset == "test":
            sl = _spaced(sl, TEST_SLICES_PER_SUBJECT)
        subs.append(Subject(subject_key("ixi", sid), "ixi", "brain", sset, sl))
    if split in ("train", "all"):
        subs.append(Subject(subject_key("stroke", "1"), "stroke", "brain", "train",
                            mri_slices("train", size, data=root)))
    if split in ("test", "all"):
        subs.append(Subject(subject_key("mni", "1"), "mni", "brain", "test",
                            _spaced(mri_slices("test", size), TEST_SLICES_PER_SUBJECT)))
    return subs


def cohort_slices(subjects: list[Subject]) -> list[np.ndarray]:
    """All slices of ``subjects`` in one list (training pool)."""
    return [s for sub in subjects for s in sub.slices]


def split_table(subjects: list[Subject]) -> str:
    """Markdown table of the split: source, region, split, subjects, slices (no identifiers)."""
    rows: dict[tuple, list[int]] = {}
    for s in subjects:
        r = rows.setdefault((s.source, s.region, s.split), [0, 0])
        r[0] += 1
        r[1] += len(s.slices)
    out = ["| source | region | split | subjects | slices |", "|---|---|---|---|---|"]
    for (src, reg, spl), (n, k) in sorted(rows.items(), key=lambda t: (t[0][2], t[0][0])):
        out.append(f"| {src} | {reg} | {spl} | {n} | {k} |")
    return "\n".join(out)
