"""Registration data sets by subject, with fixed splits (issue 15).

Three data sets below the training-data root (``--data DIR`` / ``$MEDVOL_DATA``, resolved by
:func:`medvol.learned.data.resolve_data_root`); the splits are fixed in
``medvol/registration/splits.json`` (:func:`splits`) and no subject is in two splits.

``hippocampus`` (``<data>/mri/hippocampus/{images,labels}/hippocampus_NNN.nii.gz``)
    The Learn2Reg 2020 task 4 / MSD Task04 hippocampus T1 crops (≈35×50×35 at 1 mm), each
    zero-padded/cropped about its centre to 64³ (L2R convention), intensities clipped at the
    0.01/99.99 % quantiles of the non-zero voxels and scaled to [0, 1]; labels 1 = anterior,
    2 = posterior hippocampus. Split: 152 train / 10 validation / 30 test subjects (a seeded
    permutation, see the JSON). Inter-patient pairs; the 30 held-out test pairs are
    ``(test[i], test[i + 1 mod 30])`` (:func:`hippocampus_test_pairs`). The learned nets run on
    the central ``HIPPO_CROP`` = 32×48×48 box at offset ``HIPPO_OFFSET`` of the 64³ volume, which
    contains every label voxel of the data set but one plane of one subject (a CPU-sized
    choice: the 64³ box is ≈ 70 % padding).
``ixi10`` (``<data>/mri/ixi10/{t1,labels}/IXI*``)
    Ten IXI subjects' T1 (2 mm, native space) with a 148-region DLMUSE parcellation. Split:
    7 train / 3 test (sorted ids). Pairs are affinely pre-aligned (SimpleITK, correlation) before
    any deformable method; Dice is over the parcellation labels.
``synthseg_label_maps`` (``<data>/mri/synthseg_label_maps/training_seg_NN.nii.gz``)
    Twenty whole-head label maps (256³, 1 mm, FreeSurfer ids). Split: 18 train / 2 validation.
    :class:`LabelMapSynth` generates SynthMorph-style image pairs from them (Hoffmann et al.
    2021, "SynthMorph: learning contrast-invariant registration without acquired images",
    written from the paper): each map is first resampled (nearest) onto the training grid
    ``SYNTH_GRID`` (48×64×48 at 3.2 mm, centred on the label centroid — downsampling first keeps
    the generator fast on 2 cores), then per image: a random smooth diffeomorphism (smoothed
    Gaussian velocity, scaling and squaring) applied to the labels, a random intensity per label
    (uniform mean, per-label Gaussian texture), Gaussian blur, a smooth multiplicative bias
    field, Gaussian noise, min–max to [0, 1]. Seeded (``torch.Generator``).
    Labels are grouped into ``SYNTH_GROUPS`` structures for the Dice loss.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume

__all__ = ["splits", "HIPPO_DATA", "IXI_DATA", "SYNTH_DATA", "HIPPO_SHAPE", "HIPPO_CROP",
           "HIPPO_OFFSET", "hippocampus_intensity", "load_hippocampus", "hippocampus_test_pairs",
           "HippocampusPairs",
           "load_ixi", "ixi_test_pairs", "ixi_training_pairs", "IXIPairs", "IXI_GRID",
           "IXI_SPACING", "IXI_DICE_LABELS", "SYNTH_GRID", "SYNTH_SPACING", "SYNTH_GROUPS",
           "load_label_maps", "LabelMapSynth", "SynthParams", "one_hot", "dice_loss",
           "pad_crop", "hippo_crop", "hippo_uncrop_ddf", "hippo_box_ddf"]

HIPPO_DATA = "mri/hippocampus"
IXI_DATA = "mri/ixi10"
SYNTH_DATA = "mri/synthseg_label_maps"
HIPPO_SHAPE = (64, 64, 64)
HIPPO_CROP = (32, 48, 48)
HIPPO_OFFSET = (16, 8, 8)
SYNTH_GRID = (48, 64, 48)
SYNTH_SPACING = 3.2
# FreeSurfer label ids -> structure groups for the label-supervised loss (0 = background)
SYNTH_GROUPS = {1: (2, 41), 2: (3, 42), 3: (4, 5, 14, 15, 24, 43, 44), 4: (7, 46), 5: (8, 47),
                6: (10, 49), 7: (11, 50), 8: (12, 51), 9: (13, 52), 10: (16,), 11: (17, 53),
                12: (18, 54), 13: (26, 58, 28, 60)}


def splits() -> dict:
    """The fixed subject splits (``splits.json`` next to this module)."""
    return json.loads((Path(__file__).with_name("splits.json")).read_text())


def _root(data, need: str) -> Path:
    from ..learned.data import resolve_data_root

    return resolve_data_root(data, need=(need,)) / need


def pad_crop(a: np.ndarray, shape=HIPPO_SHAPE) -> np.ndarray:
    """Zero-pad / crop ``a`` about its centre to ``shape``."""
    out = np.zeros(shape, a.dtype)
    src, dst = [], []
    for n, m in zip(a.shape, shape):
        if n >= m:
            s = (n - m) // 2
            src.append(slice(s, s + m)); dst.append(slice(0, m))
        else:
            s = (m - n) // 2
            src.append(slice(0, n)); dst.append(slice(s, s + n))
    out[tuple(dst)] = a[tuple(src)]
    return out


def hippocampus_intensity(a: np.ndarray) -> np.ndarray:
    """The hippocampus nets' intensity scaling: the 0.01–99.99th percentiles of the voxels > 0
    to [0, 1], zero where the image is ≤ 0 (training and the Volume path of
    :func:`medvol.registration.learned.register_learned`): :func:`normalize_intensity` with the
    mask ``a > 0`` (bit-identical to the formula the shipped nets were trained with: checked on
    all 193 subjects and on near-constant images)."""
    from .data import normalize_intensity

    a = np.asarray(a, np.float32)
    return normalize_intensity(a, mask=a > 0)


def load_hippocampus(data=None, split: str = "train") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{subject: (image 64³ float32 in [0, 1], labels 64³ uint8)}`` of one split
    (``train``/``val``/``test``); arrays in the files' own axis order (1 mm isotropic)."""
    import nibabel as nib

    root = _root(data, HIPPO_DATA)
    ids = splits()["hippocampus"].get(split)
    if ids is None:
        raise InputError(f"unknown hippocampus split {split!r}", hint="use train, val or test")
    out = {}
    for s in ids:
        fi, fl = root / "images" / f"{s}.nii.gz", root / "labels" / f"{s}.nii.gz"
        if not fi.is_file() or not fl.is_file():
            raise InputError(f"hippocampus subject {s} missing", path=fi,
                             hint="see the data layout in `medvol train micdir --help`")
        img = np.asarray(nib.load(str(fi)).dataobj, np.float32)
        lab = np.rint(np.asarray(nib.load(str(fl)).dataobj)).astype(np.uint8)
        out[s] = (pad_crop(hippocampus_intensity(img)), pad_crop(lab))
    return out


def hippocampus_test_pairs(subjects: dict, offsets=(1,)) -> list[tuple[str, str]]:
    """Held-out pairs ``(fixed, moving) = (test[i], test[i+k mod n])`` of the sorted ids, for
    each ``k`` of ``offsets`` in turn (default ``k = 1``: one pair per subject, the issue-15
    test table)."""
    ids = sorted(subjects)
    return [(ids[i], ids[(i + int(k)) % len(ids)]) for k in offsets for i in range(len(ids))]


def hippo_crop(a):
    """The learned nets' box of a 64³ array (numpy or torch, spatial axes last)."""
    z, y, x = HIPPO_OFFSET
    dz, dy, dx = HIPPO_CROP
    return a[..., z:z + dz, y:y + dy, x:x + dx]


def hippo_uncrop_ddf(ddf: np.ndarray) -> np.ndarray:
    """A ``(3, *HIPPO_CROP)`` voxel DDF of the box → ``(3, 64, 64, 64)``, edge-replicated outside
    the box (continuous: no artificial folding at the box border)."""
    z, y, x = HIPPO_OFFSET
    pad = [(0, 0)] + [(o, n - o - c) for o, c, n in zip(HIPPO_OFFSET, HIPPO_CROP, HIPPO_SHAPE)]
    return np.pad(ddf, pad, mode="edge")


def hippo_box_ddf(model, fixed: np.ndarray, moving: np.ndarray, *, steps: int = 0,
                  full_steps: int | None = None, settings=None) -> np.ndarray:
    """Register two 64³ hippocampus arrays with a ``*_hippocampus`` net on its own box (no
    resampling), refined on the pair for ``steps`` LNCC steps (:func:`medvol.registration.refine.
    refine_pair`; 0 = the net alone); returns the voxel DDF ``(3, 64, 64, 64)``, edge-replicated
    outside the box (:func:`hippo_uncrop_ddf`). ``settings``: a ``RefineSettings``; default the
    hippocampus task's for its own budget, else the general ones (as ``medvol register --task
    hippocampus``: :func:`medvol.registration.refine.default_refine_settings`)."""
    import torch

    from .refine import default_refine_settings, refine_pair

    settings = default_refine_settings("hippocampus", steps, full_steps, settings)

    def box(a):
        return torch.from_numpy(np.ascontiguousarray(hippo_crop(np.asarray(a, np.float32))))[None, None]

    ddf, _ = refine_pair(model, box(fixed), box(moving), steps=steps, similarity="lncc",
                         full_steps=full_steps, settings=settings)
    return hippo_uncrop_ddf(ddf[0].numpy())


def one_hot(labels, n: int):
    """``(B, 1, ...)`` integer labels → ``(B, n, ...)`` float one-hot (torch)."""
    import torch.nn.functional as F

    return F.one_hot(labels[:, 0].long().clamp(0, n - 1), n).movedim(-1, 1).float()


def dice_loss(warped_onehot, fixed_onehot):
    """Label-supervised loss: MONAI ``DiceLoss`` (foreground channels) on warped one-hot labels."""
    from monai.losses import DiceLoss

    return DiceLoss(include_background=False, reduction="mean")(warped_onehot, fixed_onehot)


class HippocampusPairs:
    """Seeded training pairs of two different training subjects (box of the 64³ volumes):
    ``sample(batch) -> (fixed, moving, fixed_labels, moving_labels)`` tensors ``(B, 1, *box)``."""

    def __init__(self, subjects: dict, seed: int = 0, device="cpu"):
        import torch

        self.ids = sorted(subjects)
        if len(self.ids) < 2:
            raise InputError("need at least two hippocampus training subjects")
        self.img = torch.stack([torch.from_numpy(np.ascontiguousarray(hippo_crop(subjects[s][0])))
                                for s in self.ids])[:, None].to(device)
        self.lab = torch.stack([torch.from_numpy(np.ascontiguousarray(
            hippo_crop(subjects[s][1]).astype(np.int64))) for s in self.ids])[:, None].to(device)
        self.gen = torch.Generator().manual_seed(int(seed))

    def sample(self, batch: int = 1):
        import torch

        n = len(self.ids)
        a = torch.randint(0, n, (batch,), generator=self.gen)
        b = (a + torch.randint(1, n, (batch,), generator=self.gen)) % n
        return self.img[a], self.img[b], self.lab[a], self.lab[b]


# --------------------------------------------------------------------------- IXI
def load_ixi(data=None, split: str = "test") -> dict[str, tuple[Volume, Volume]]:
    """``{subject: (T1 Volume, parcellation Volume)}`` of one split (``train``/``test``)."""
    from .. import io as mio

    root = _root(data, IXI_DATA)
    ids = splits()["ixi10"].get(split)
    if ids is None:
        raise InputError(f"unknown ixi10 split {split!r}", hint="use train or test")
    out = {}
    for s in ids:
        ft = sorted((root / "t1").glob(f"{s}-*.nii.gz"))
        fl = sorted((root / "labels").glob(f"{s}-*.nii.gz"))
        if not ft or not fl:
            raise InputError(f"IXI subject {s} missing", path=root / "t1")
        out[s] = (mio.read(ft[0]), mio.read(fl[0]))
    return out


def ixi_test_pairs(subjects: dict) -> list[tuple[str, str]]:
    """All ordered pairs of distinct held-out subjects (3 subjects → 6 pairs)."""
    ids = sorted(subjects)
    return [(a, b) for a in ids for b in ids if a != b]


IXI_GRID = (64, 80, 64)     # the intramodal weights' model grid (z, y, x) ...
IXI_SPACING = 2.5          # ... at this spacing (mm): the IXI nets are fine-tuned from them
IXI_DICE_LABELS = 32       # parcellation labels drawn per training step for the Dice loss


def ixi_training_pairs(data=None, cache=None, shape=IXI_GRID, spacing=IXI_SPACING,
                       progress=None) -> dict:
    """Every ordered pair of the IXI TRAINING subjects (7 → 42) as a learned method sees it at
    inference (:func:`medvol.registration.learned.register_learned` with ``prealign``): the
    moving image affinely pre-aligned to the fixed one (SimpleITK, correlation, seed 0), both
    resampled onto the model grid centred on the fixed image's intensity centroid, intensities
    clipped/scaled to [0, 1]; labels resampled nearest. Returns ``{"fixed", "moving"}`` float32
    ``(P, *shape)``, ``{"fixed_labels", "moving_labels"}`` int16 and ``"pairs"`` (subject-id
    pairs). ``cache``: optional ``.npz`` written once and reused (≈ 2 min of affine
    registrations on 2 cores)."""
    from .classical import affine_transform
    from .data import normalize_intensity, resample_to
    from .learned import _centroid_grid

    if cache is not None and Path(cache).is_file():
        z = np.load(cache)
        return {k: z[k] for k in z.files}
    subs = load_ixi(data, "train")
    ids = sorted(subs)
    out = {"fixed": [], "moving": [], "fixed_labels": [], "moving_labels": [], "pairs": []}
    for i, (a, b) in enumerate((a, b) for a in ids for b in ids if a != b):
        (f, fl), (m, ml) = subs[a], subs[b]
        f = f.with_array(normalize_intensity(np.asarray(f.array)))
        m = m.with_array(normalize_intensity(np.asarray(m.array)))
        aff = affine_transform(f, m, metric="ncc", seed=0)
        grid = _centroid_grid(f, shape, spacing)
        out["fixed"].append(normalize_intensity(resample_to(f, grid)))
        out["moving"].append(normalize_intensity(resample_to(m, grid, transform=aff)))
        out["fixed_labels"].append(np.rint(resample_to(fl, grid, interp="nearest")).astype(np.int16))
        out["moving_labels"].append(np.rint(resample_to(ml, grid, interp="nearest",
                                                        transform=aff)).astype(np.int16))
        out["pairs"].append((a, b))
        if progress:
            progress(f"IXI training pair {i + 1}/{len(ids) * (len(ids) - 1)} pre-aligned")
    arr = {k: (np.asarray(v) if k == "pairs" else np.stack(v)) for k, v in out.items()}
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **arr)
    return arr


class IXIPairs:
    """Seeded IXI training pairs: ``sample(batch) -> (fixed, moving, fixed_labels,
    moving_labels)``, images ``(B, 1, *grid)``; per step :data:`IXI_DICE_LABELS` parcellation
    labels present in the pair are drawn and renumbered 1…K (all others 0), so the label Dice
    covers every region over the run at a fraction of the cost of 148 one-hot channels. Both
    images and labels of a pair are flipped left–right together with probability ``p_flip``."""

    def __init__(self, pairs: dict, seed: int = 0, n_labels: int = IXI_DICE_LABELS,
                 p_flip: float = 0.5):
        import torch

        self.img_f = torch.from_numpy(np.ascontiguousarray(pairs["fixed"], np.float32))
        self.img_m = torch.from_numpy(np.ascontiguousarray(pairs["moving"], np.float32))
        self.lab_f = torch.from_numpy(np.asarray(pairs["fixed_labels"], np.int64))
        self.lab_m = torch.from_numpy(np.asarray(pairs["moving_labels"], np.int64))
        if self.img_f.shape[0] < 1:
            raise InputError("no IXI training pairs")
        self.k, self.p_flip = int(n_labels), float(p_flip)
        self.gen = torch.Generator().manual_seed(int(seed))

    def sample(self, batch: int = 1):
        import torch

        fs, ms, fl, ml = [], [], [], []
        for _ in range(int(batch)):
            i = int(torch.randint(0, self.img_f.shape[0], (1,), generator=self.gen))
            f, m, lf, lm = self.img_f[i], self.img_m[i], self.lab_f[i], self.lab_m[i]
            present = torch.unique(lf)
            present = present[present > 0]
            pick = present[torch.randperm(present.numel(), generator=self.gen)[:self.k]]
            lut = torch.zeros(int(max(lf.max(), lm.max())) + 1, dtype=torch.int64)
            lut[pick] = torch.arange(1, pick.numel() + 1)
            lf, lm = lut[lf], lut[lm]
            if float(torch.rand(1, generator=self.gen)) < self.p_flip:
                f, m, lf, lm = (t.flip(-1) for t in (f, m, lf, lm))
            fs.append(f); ms.append(m); fl.append(lf); ml.append(lm)
        st = lambda xs: torch.stack(xs)[:, None]  # noqa: E731
        return st(fs), st(ms), st(fl), st(ml)


# --------------------------------------------------------------------------- label-map synthesis
def load_label_maps(data=None, split: str = "train", cache=None) -> np.ndarray:
    """The label maps of one split resampled (nearest) onto ``SYNTH_GRID`` at ``SYNTH_SPACING``
    mm, each centred on its own label centroid: ``(N, *SYNTH_GRID)`` int16. ``cache``: optional
    ``.npy`` path (written once, reused)."""
    import nibabel as nib

    from .data import model_grid, resample_to

    if cache is not None and Path(cache).is_file():
        return np.load(cache)
    root = _root(data, SYNTH_DATA)
    ids = splits()["synthseg_label_maps"].get(split)
    if ids is None:
        raise InputError(f"unknown label-map split {split!r}", hint="use train or val")
    out = []
    for s in ids:
        f = root / f"{s}.nii.gz"
        if not f.is_file():
            raise InputError(f"label map {s} missing", path=f)
        v = Volume.from_nibabel(nib.load(str(f)))
        a = np.asarray(v.array)
        idx = np.argwhere(a > 0).mean(0)[::-1]
        grid = model_grid(v.index_to_world(idx), None, shape=SYNTH_GRID, spacing=SYNTH_SPACING)
        out.append(np.rint(resample_to(v.with_array(a.astype(np.float32)), grid,
                                       interp="nearest")).astype(np.int16))
    arr = np.stack(out)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, arr)
    return arr


@dataclass
class SynthParams:
    """Generator settings (recorded in the weights' metadata)."""

    svf_std_vox: float = 2.0      # max std of the smoothed random velocity (voxels)
    svf_control: int = 6          # velocity noise control points per axis
    texture_std: float = 0.05     # max per-label intensity std
    blur_max_vox: float = 1.0     # max Gaussian blur sigma (voxels)
    bias_std: float = 0.3         # std of the log bias field
    noise_max: float = 0.05       # max Gaussian noise std
    int_steps: int = 5


class LabelMapSynth:
    """SynthMorph-style pairs from label maps ``(N, *grid)``: ``sample(batch) -> (fixed, moving,
    fixed_groups, moving_groups)`` with images ``(B, 1, *grid)`` in [0, 1] and group labels
    ``(B, 1, *grid)`` (``SYNTH_GROUPS``, 0 = background). Fixed and moving come from two
    different maps, each with its own deformation and contrast."""

    def __init__(self, maps: np.ndarray, seed: int = 0, params: SynthParams = SynthParams(),
                 device="cpu"):
        import torch

        self.maps = torch.from_numpy(np.asarray(maps, np.int64)).to(device)
        self.params = params
        self.gen = torch.Generator().manual_seed(int(seed))
        lut = np.zeros(int(self.maps.max()) + 1, np.int64)
        for g, ids in SYNTH_GROUPS.items():
            for i in ids:
                if i < lut.size:
                    lut[i] = g
        self.group_lut = torch.from_numpy(lut).to(device)
        self.n_groups = len(SYNTH_GROUPS) + 1

    def _u(self, lo, hi):
        import torch

        return float(lo + (hi - lo) * torch.rand(1, generator=self.gen))

    def _one(self, k: int):
        import torch
        import torch.nn.functional as F

        from ..models.micdir import integrate_svf, warp

        p, dev = self.params, self.maps.device
        lab = self.maps[k][None, None].float()
        shape = lab.shape[2:]
        c = p.svf_control
        v = torch.randn((1, 3, c, c, c), generator=self.gen).to(dev)
        v = F.interpolate(v, size=tuple(shape), mode="trilinear", align_corners=True)
        v = v / (v.std() + 1e-8) * p.svf_std_vox * self._u(0.0, 1.0)
        lab = warp(lab, integrate_svf(v, p.int_steps), mode="nearest").long()
        n = int(self.group_lut.numel())
        mean = torch.rand(n, generator=self.gen).to(dev)
        std = torch.rand(n, generator=self.gen).to(dev) * p.texture_std
        img = mean[lab] + std[lab] * torch.randn(lab.shape, generator=self.gen).to(dev)
        s = self._u(0.0, p.blur_max_vox)
        if s > 0.1:
            r = max(1, int(round(2 * s)))
            x = torch.arange(-r, r + 1, dtype=torch.float32, device=dev)
            w = torch.exp(-0.5 * (x / s) ** 2)
            w = w / w.sum()
            for ax in range(3):
                ks = [1, 1, 1]
                ks[ax] = w.numel()
                pad = [0, 0, 0, 0, 0, 0]
                pad[2 * (2 - ax)] = pad[2 * (2 - ax) + 1] = r
                img = F.conv3d(F.pad(img, pad, mode="replicate"), w.view(1, 1, *ks))
        b = torch.randn((1, 1, 4, 4, 4), generator=self.gen).to(dev) * p.bias_std
        img = img * torch.exp(F.interpolate(b, size=tuple(shape), mode="trilinear",
                                            align_corners=True))
        img = img + self._u(0, p.noise_max) * torch.randn(img.shape, generator=self.gen).to(dev)
        lo, hi = img.amin(), img.amax()
        img = (img - lo) / (hi - lo + 1e-6)
        return img, self.group_lut[lab.clamp(0, n - 1)]

    def sample(self, batch: int = 1):
        import torch

        n = self.maps.shape[0]
        fs, ms, fl, ml = [], [], [], []
        for _ in range(int(batch)):
            a = int(torch.randint(0, n, (1,), generator=self.gen))
            b = (a + int(torch.randint(1, n, (1,), generator=self.gen))) % n if n > 1 else a
            fi, fg = self._one(a)
            mi, mg = self._one(b)
            fs.append(fi); ms.append(mi); fl.append(fg); ml.append(mg)
        return torch.cat(fs), torch.cat(ms), torch.cat(fl), torch.cat(ml)

    def describe(self) -> dict:
        return {"grid_shape": list(SYNTH_GRID), "grid_spacing_mm": SYNTH_SPACING,
                "groups": {str(k): list(v) for k, v in SYNTH_GROUPS.items()},
                **asdict(self.params)}
