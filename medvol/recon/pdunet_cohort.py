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
``synth_head`` ``mri/synthseg_label_maps/``     head      train (20 real subjects' whole-head label
                                                          maps → synthetic head CT, see below)
============== ================================ ========= ============================================

``synth_head`` gives the training set heads (the only real head CT is a test subject): each of the
20 SynthSeg label maps (real subjects' anatomy, 1 mm, incl. skull, scalp, eyes, soft tissue) is
turned into CT numbers by :func:`synth_head_hu` — a plausible HU range per tissue class
(brain, CSF, cortical/diploic bone, fat, muscle, skin, air cavities) drawn once per subject,
plus a smooth random texture — and :data:`SYNTH_HEAD_SLICES` axial slices evenly spaced over
the head are kept. SynthSeg-style domain randomisation, with CT-like intensities instead of
MRI-like ones.

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
           "split_table", "synth_head_hu", "N_TCGA_TEST", "TEST_SLICES_PER_SUBJECT", "CT_SOURCES", "MRI_SOURCES"]

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
SYNTH_HEAD = "mri/synthseg_label_maps"
CT_SOURCES["synth_head"] = SYNTH_HEAD
CT_TRAIN_ONLY = ("chest_cta", "petct", "synth_head")
SYNTH_HEAD_SLICES = 4
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
    if split == "test":         # nothing of a train-only source is read for the test split
        sources = tuple(s for s in sources if s not in CT_TRAIN_ONLY)
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
    if "synth_head" in sources:
        for f in _files(root / SYNTH_HEAD, "*.nii.gz"):
            subs.append(Subject(subject_key("synth_head", f.name.split(".")[0]), "synth_head",
                                "head", "train", _synth_head_slices(f, size)))
    for s in subs:      # every test subject: up to TEST_SLICES_PER_SUBJECT, evenly spaced
        if s.split == "test":
            s.slices = _spaced(s.slices, TEST_SLICES_PER_SUBJECT)
    return [s for s in subs if split == "all" or s.split == split]


# FreeSurfer / SynthSeg label ids → tissue class (labels ≥ 500 are SynthSeg's extra-cerebral
# classes: 511 scalp/skin, 515 skull, 507 soft tissue, 506 eyes, 509 orbital fat; the others are
# small unnamed extra-cerebral classes and get a wide random range)
_TISSUE_LABELS = {
    "wm": (2, 7, 28, 41, 46, 60),
    "cortex": (3, 8, 42, 47),
    "deep_gm": (10, 11, 12, 13, 16, 17, 18, 26, 49, 50, 51, 52, 53, 54, 58),
    "csf": (4, 5, 14, 15, 24, 43, 44, 72),
    "vessel": (25, 30, 31, 57, 62, 63, 85, 136, 137, 163, 164),
    "bone": (515,), "skin": (511,), "soft": (507,), "eye": (506,), "fat": (509,),
    "other": (502, 508, 512, 514, 516, 530),
}
# HU range per class (each subject draws one value per class, per label for "other")
_TISSUE_HU = {"wm": (22, 32), "cortex": (33, 45), "deep_gm": (30, 42), "csf": (0, 15),
              "vessel": (30, 60), "bone": (700, 1600), "skin": (20, 60), "soft": (-90, 60),
              "eye": (5, 20), "fat": (-120, -60), "other": (-150, 200)}


def synth_head_hu(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CT numbers (HU, float32) for a SynthSeg/FreeSurfer label image: background (0) → air
    (−1000 HU), every tissue class → one value drawn from its range in ``_TISSUE_HU`` (per label
    for the unnamed extra-cerebral classes; labels not listed take the soft-tissue value), then a
    smooth random texture (Gaussian field, σ 2 voxels: ±6 HU in soft tissue, ±20 % in bone —
    diploë)."""
    from scipy.ndimage import gaussian_filter

    lab = np.asarray(labels).astype(np.int64)
    lut = np.full(int(max(lab.max(), 530)) + 1, np.nan, np.float32)
    bone = np.zeros_like(lut, bool)
    for cls, ids in _TISSUE_LABELS.items():
        lo, hi = _TISSUE_HU[cls]
        shared = rng.uniform(lo, hi)
        for i in ids:
            lut[i] = rng.uniform(lo, hi) if cls == "other" else shared
        if cls == "bone":
            bone[list(ids)] = True
    lut[np.isnan(lut)] = lut[_TISSUE_LABELS["soft"][0]]
    lut[0] = -1000.0
    hu = lut[np.clip(lab, 0, len(lut) - 1)]
    field = gaussian_filter(rng.standard_normal(lab.shape).astype(np.float32), 2.0)
    field /= max(float(field.std()), 1e-6)
    tissue = hu > -1000
    isbone = bone[np.clip(lab, 0, len(lut) - 1)]
    hu = np.where(isbone, hu * (1 + 0.2 * np.clip(field, -2, 2)),
                  np.where(tissue, hu + 6.0 * field, hu))
    return hu.astype(np.float32)


def _synth_head_slices(path: Path, size: int) -> list[np.ndarray]:
    """:data:`SYNTH_HEAD_SLICES` synthetic head-CT μ slices from one label map (seeded by the
    file name, so the training set is reproducible)."""
    from ..io import read
    from ..report import to_lps_view

    lab = np.rint(to_lps_view(read(path), oblique="nearest").array).astype(np.int16)
    frac = (lab > 0).mean(axis=(1, 2))
    ks = np.flatnonzero(frac >= 0.5 * frac.max())        # axial slices through the cranium
    if ks.size == 0:
        raise InputError(f"label map {path.name} has no head", path=path)
    seed = int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    out = []
    for k in _spaced(list(ks), SYNTH_HEAD_SLICES):
        out.append(_hu_slice(synth_head_hu(lab[k], rng), size))
    return out


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
