"""PD-UNet/LPD training data: real CT and MRI slices, the ×16 tasks, augmentation.

Tasks (128² images, the CPU-sized version of the paper's 256² setup)
--------------------------------------------------------------------
``ct_x16``
    Real CT slices of many patients (:mod:`medvol.recon.pdunet_cohort`: TCGA-LUAD chest, chest
    CTA, PET/CT, head CT, abdomen CT; split by patient; synthetic head CT from real subjects'
    label maps for training), HU → μ (1/mm,
    :func:`medvol.simulate.hu_to_mu`), each scan's field of view resampled onto 128² pixels of
    a nominal 1.953 mm. Fan beam from :func:`medvol.simulate.default_fan_geometry` with 360
    views over 2π; sparsity 16 keeps every 16th view (23 views). The sparse sinogram is the
    projection of the ground truth (as in the paper), optionally with Poisson noise at a stated
    I₀ (:func:`add_poisson_noise`).
``mri_x16``
    Real brain MRI of several subjects (IXI T1 ×10 with the fixed 7/3 subject split, the stroke
    patient's T1/T2/FLAIR for training, nilearn's MNI152 template for testing). Axial slices with
    brain content, each volume divided by its maximum, zero-padded square and resized to 128².
    Radial acquisition: 256 spokes (2N) over π, 256 readout samples (2× oversampled), forward
    NUFFT (finufft); every 16th spoke kept (16 spokes); each spoke → centred inverse FFT →
    magnitude → centre crop to 182 bins (:func:`medvol.mri.kspace_to_sinogram`). Ground truth is
    the image itself (the reference used an iradon of the full sinogram instead).

:func:`ct_slices` / :func:`mri_slices` keep the single-subject sets of the first weights (the
GE head CT split by slab; stroke vs MNI152) for tests on the bundled sample data.

Augmentation (training only, :data:`AUGMENT`): a seeded parameter sampler (rotation U[0, 2π),
left–right and up–down flips, field-of-view scale 0.85–1.15, intensity scale 0.9–1.1) and a
deterministic transform; the sparse data are re-simulated from the transformed image
(re-projection / re-NUFFT) every step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..learned.data import resolve_data_root

__all__ = ["CT_DATA", "MRI_DATA", "task_images", "TASKS", "Task", "get_task", "ct_slices",
           "mri_slices", "sample_augmentation", "apply_augmentation", "simulate_sparse",
           "make_batch", "image_scale", "volume_slices", "add_poisson_noise", "AUGMENT"]

CT_DATA = "dicom/ct_head_ge_tilt"      # below the training-data root
MRI_DATA = "mri/stroke"
CT_TEST_INSTANCES = (16, 17, 18, 19, 20, 21)


@dataclass(frozen=True)
class Task:
    """A reconstruction task: image grid, full geometry and sparsity."""

    name: str
    modality: str              # "ct" | "mri"
    image_size: int
    pixel: float               # mm (CT) / pixel units (MRI)
    sparsity: int

    def full_geometry(self):
        if self.modality == "ct":
            from ..simulate import default_fan_geometry

            return default_fan_geometry((self.image_size,) * 2, (self.pixel,) * 2, 360)
        from ..mri.radial import default_n_det, sinogram_geometry

        tr = self.trajectory()
        return sinogram_geometry(tr, default_n_det(self.image_size, tr.n_read), self.pixel)

    def geometry(self):
        """The sparse geometry the model sees."""
        return self.full_geometry().subsample(self.sparsity)

    def trajectory(self):
        from ..mri.radial import uniform_trajectory

        n = self.image_size
        return uniform_trajectory(2 * n, 2 * n)

    def sparse_trajectory(self):
        return self.trajectory().subsample(self.sparsity)

    def projector(self):
        """The sparse-geometry :class:`medvol.kernels.Projector` (torch backend) on the task
        grid. (The operator PD-UNet calls, with its FBP hook, is
        :func:`medvol.recon.pdunet.task_operator`.)"""
        from medvol.kernels import Projector

        return Projector(self.geometry(), (self.image_size,) * 2, (self.pixel,) * 2,
                         backend="torch", check_finite=False)

    @property
    def data_needs(self) -> tuple[str, ...]:
        """Paths below the training-data root this task's cohort reads
        (:mod:`medvol.recon.pdunet_cohort`)."""
        from .pdunet_cohort import CT_SOURCES, MRI_SOURCES

        src = CT_SOURCES if self.modality == "ct" else MRI_SOURCES
        return tuple(v for v in src.values() if not v.startswith("nilearn:"))

    def to_dict(self) -> dict:
        return dict(name=self.name, modality=self.modality, image_size=self.image_size,
                    pixel=self.pixel, sparsity=self.sparsity)


TASKS = {
    "ct_x16": Task("ct_x16", "ct", 128, 0.48828125 * 4, 16),
    "mri_x16": Task("mri_x16", "mri", 128, 1.0, 16),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise InputError(f"unknown PD-UNet task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def ct_slices(split: str = "train", size: int = 128, *, data=None) -> list[np.ndarray]:
    """Acquired axial slices of the GE head CT as μ (1/mm), ``(size, size)`` each.

    Read slice by slice (the stack is gantry-tilted with uneven gaps; resampling would create
    interpolated slices), sorted by table position. ``split``: "train" | "test" | "all".
    ``data``: the training-data root (:func:`resolve_data_root`: else ``$MEDVOL_DATA``) holding
    ``dicom/ct_head_ge_tilt/*.dcm``.
    """
    import pydicom

    from ..simulate import hu_to_mu

    d = resolve_data_root(data, need=(CT_DATA,)) / CT_DATA
    items = []
    files = sorted(d.glob("*.dcm"))
    if not files:
        raise InputError(f"no .dcm files in {d}", path=d,
                         hint="see `medvol train pdunet --help` for the data layout")
    for f in files:
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        items.append((float(ds.ImagePositionPatient[2]), int(ds.InstanceNumber), hu))
    items.sort(key=lambda t: t[0])
    out = []
    for _, inst, hu in items:
        is_test = inst in CT_TEST_INSTANCES
        if split == "all" or (split == "test") == is_test:
            f = hu.shape[0] // size
            hu = hu[:f * size, :f * size].reshape(size, f, size, f).mean(axis=(1, 3))
            out.append(np.asarray(hu_to_mu(hu), dtype=np.float32))
    return out


def _square_resize(sl: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    ny, nx = sl.shape
    n = max(ny, nx)
    pad = np.zeros((n, n), np.float32)
    oy, ox = (n - ny) // 2, (n - nx) // 2
    pad[oy:oy + ny, ox:ox + nx] = sl
    return resize(pad, (size, size), order=1, anti_aliasing=True,
                  preserve_range=True).astype(np.float32)


def _brain_slices(arr: np.ndarray, size: int, min_frac: float = 0.2) -> list[np.ndarray]:
    arr = np.asarray(arr, dtype=np.float32)
    arr = np.clip(arr, 0, None) / float(arr.max())
    out = []
    for sl in arr:
        if (sl > 0.05).mean() >= min_frac:
            out.append(np.clip(_square_resize(sl, size), 0, None))
    return out


def mri_slices(split: str = "train", size: int = 128, *, data=None) -> list[np.ndarray]:
    """Axial brain MRI slices in ``[0, 1]``: "train" = stroke T1/T2/FLAIR
    (``<data>/mri/stroke/{T1,T2,FLAIR}.nii.gz``), "test" = nilearn's MNI152 template (no data
    folder needed)."""
    out: list[np.ndarray] = []
    if split in ("train", "all"):
        from ..io import read

        d = resolve_data_root(data, need=(MRI_DATA,)) / MRI_DATA
        for c in ("T1", "T2", "FLAIR"):
            out += _brain_slices(read(d / f"{c}.nii.gz").array, size)
    if split in ("test", "all"):
        from nilearn import datasets

        img = datasets.load_mni152_template(resolution=1)
        arr = np.asarray(img.get_fdata(), dtype=np.float32).transpose(2, 1, 0)  # (z, y, x)
        out += _brain_slices(arr[:, ::-1, :], size)
    if not out:
        raise InputError(f"no MRI slices for split {split!r}")
    return out


def volume_slices(vol, size: int = 128, *, modality: str = "mri", min_frac: float = 0.2
                  ) -> list[np.ndarray]:
    """Axial training slices from any :class:`~medvol.Volume` (``array`` ``(z, y, x)``).

    ``modality="ct"``: HU → μ (1/mm), each slice padded square and resized to ``size²``;
    ``"mri"``: divided by the volume maximum, slices with < ``min_frac`` foreground dropped.
    """
    arr = np.asarray(vol.array if hasattr(vol, "array") else vol, dtype=np.float32)
    if arr.ndim != 3:
        raise InputError(f"volume_slices needs a 3D (z, y, x) volume, got shape {arr.shape}")
    if modality == "ct":
        from ..simulate import hu_to_mu

        return [np.clip(_square_resize(np.asarray(hu_to_mu(sl), np.float32), size), 0, None)
                for sl in arr]
    return _brain_slices(arr, size, min_frac)


#: Augmentation ranges (training only): rotation angle drawn with probability ``p_rotate``;
#: ``zoom`` field-of-view scale (image content scaled about the centre, zero-padded / cropped);
#: ``intensity`` multiplicative contrast jitter of the whole slice (window/scanner calibration).
AUGMENT = dict(p_rotate=0.5, p_flip=0.5, p_flip_ud=0.25, zoom=(0.85, 1.15), p_zoom=0.5,
               intensity=(0.9, 1.1), p_intensity=0.5)


def sample_augmentation(rng: np.random.Generator, ranges: dict | None = None) -> dict:
    """Random augmentation parameters (recorded; applied by :func:`apply_augmentation`):
    rotation U[0°, 360°), left–right and up–down flips, field-of-view scale and intensity
    jitter, each with the probability of :data:`AUGMENT` (or ``ranges``)."""
    r = {**AUGMENT, **(ranges or {})}
    rot = bool(rng.random() < r["p_rotate"])
    p = dict(angle_deg=float(rng.uniform(0.0, 360.0)) if rot else 0.0,
             flip=bool(rng.random() < r["p_flip"]))
    p["flip_ud"] = bool(rng.random() < r["p_flip_ud"])
    p["zoom"] = float(rng.uniform(*r["zoom"])) if rng.random() < r["p_zoom"] else 1.0
    p["intensity"] = (float(rng.uniform(*r["intensity"])) if rng.random() < r["p_intensity"]
                      else 1.0)
    return p


def apply_augmentation(img: np.ndarray, params: dict) -> np.ndarray:
    """Apply :func:`sample_augmentation`'s parameters (flips, zoom about the centre, rotation,
    intensity scale); the result is clipped at 0 and keeps the input's shape."""
    from scipy.ndimage import affine_transform, rotate

    out = img
    if params.get("flip"):
        out = out[:, ::-1]
    if params.get("flip_ud"):
        out = out[::-1, :]
    z = float(params.get("zoom", 1.0))
    if z != 1.0:
        c = (np.asarray(out.shape, float) - 1) / 2
        out = affine_transform(np.ascontiguousarray(out), np.eye(2) / z, offset=c - c / z,
                               order=1, mode="constant", cval=0.0)
    if params.get("angle_deg", 0.0):
        out = rotate(out, params["angle_deg"], reshape=False, order=1, mode="constant", cval=0.0)
    out = np.clip(out, 0, None) * float(params.get("intensity", 1.0))
    return np.ascontiguousarray(out, dtype=np.float32)


def add_poisson_noise(sino: np.ndarray, i0: float, rng: np.random.Generator) -> np.ndarray:
    """Transmission noise on line integrals: ``−ln(Poisson(I₀·e^{−y}) / I₀)`` (counts < 1 are
    set to 1, as a scanner's log step does)."""
    if not (i0 > 0):
        raise InputError(f"i0 must be a positive photon count, got {i0}")
    counts = rng.poisson(float(i0) * np.exp(-np.asarray(sino, np.float64)))
    return (-np.log(np.maximum(counts, 1) / float(i0))).astype(np.float32)


def simulate_sparse(task: Task, images: np.ndarray, op=None) -> np.ndarray:
    """Sparse sinograms ``(B, views, n_det)`` float32 of ``images`` ``(B, N, N)``."""
    images = np.asarray(images, dtype=np.float32)
    if task.modality == "ct":
        op = op or task.projector()
        return np.asarray(op(images), dtype=np.float32)
    from ..mri.radial import default_n_det, kspace_to_sinogram, nufft_forward

    tr = task.sparse_trajectory()
    n_det = default_n_det(task.image_size, tr.n_read)
    sinos = [kspace_to_sinogram(nufft_forward(im, tr, pixel=task.pixel, eps=1e-6),
                                n_det=n_det, pixel=task.pixel) for im in images]
    return np.stack(sinos).astype(np.float32)


def make_batch(task: Task, images: list[np.ndarray], rng: np.random.Generator, batch: int,
               op=None, augment: bool = True, *, noise_i0: float | None = None,
               p_noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``batch`` slices (with augmentation) → ``(sinograms, ground_truth)``.

    CT only: with probability ``p_noise`` a sinogram gets Poisson transmission noise at
    ``noise_i0`` photons per ray (:func:`add_poisson_noise`)."""
    idx = rng.integers(0, len(images), size=batch)
    gts = []
    for i in idx:
        im = images[int(i)]
        if augment:
            im = apply_augmentation(im, sample_augmentation(rng))
        gts.append(im)
    gt = np.stack(gts)
    y = simulate_sparse(task, gt, op)
    if noise_i0 and p_noise > 0 and task.modality == "ct":
        for b in range(len(y)):
            if rng.random() < p_noise:
                y[b] = add_poisson_noise(y[b], noise_i0, rng)
    return y, gt


def task_images(task: Task, split: str = "train", *, data=None) -> list[np.ndarray]:
    """The real slices of ``task``'s many-patient cohort for ``split``
    (:func:`medvol.recon.pdunet_cohort.ct_subjects` / :func:`~medvol.recon.pdunet_cohort.mri_subjects`;
    split by patient/subject)."""
    from .pdunet_cohort import cohort_slices, ct_subjects, mri_subjects

    subs = (ct_subjects if task.modality == "ct" else mri_subjects)(
        data, size=task.image_size, split=split)
    return cohort_slices(subs)


def image_scale(images: list[np.ndarray]) -> float:
    """99th percentile of all training pixels (the p99 normalisation constant)."""
    return float(np.percentile(np.concatenate([im.ravel() for im in images]), 99))

