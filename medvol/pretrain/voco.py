"""VoCo volume-contrastive pre-training — the **v1 repository recipe** (``Luffy03/VoCo``).

Wu, Zhuang, Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D
Medical Image Analysis", CVPR 2024. Written from the method description (no code copied); the v1
recipe is followed throughout (not the CVPR text, not the v2/TPAMI recipe):

* **Base crops**: the (foreground-cropped, resized) volume of shape ``region = (z, y, x)`` is cut
  into an ``n × n`` grid of non-overlapping crops in the x–y plane (the last two axes), each
  spanning the full z; index ``k = i·n + j`` with ``i`` along y (major) and ``j`` along x.
* **Random crops** of the base-crop size, ``n_crops`` per volume, placed uniformly with the crop
  inside the grid; label ``y_k`` = x–y overlap area with base ``k`` / the crop's own area (sums to
  1; z plays no part).
* **Logits** ``l_k = ReLU(cos(f_crop, f_base_k))``; v1 averages the two cross terms
  ``½[assign(student crops, teacher bases) + assign(teacher crops, student bases)]``.
* **Losses** (weights 1, batch-averaged): ``pos = −Σ_k y_k log(1 − |y_k − l_k| + 1e-6) / Σ_k y_k``;
  ``neg`` = mean of ``l_k²`` over bases with ``y_k = 0``; ``reg`` = mean over base pairs
  ``i < j`` of ``ReLU(cos(b_i, sg(b_j)))²`` on the student's base embeddings.
* **EMA teacher**: a full copy of backbone + projector, ``θ_t ← 0.9 θ_t + 0.1 θ_s`` every step.
* Augmentation, independently on crops and bases: flip p 0.2 per axis, in-plane rot90 p 0.2
  (rotation by 180° only when the in-plane crop is not square, so the shape never reveals it),
  intensity shift ±0.1 p 0.1.

Deviations for a 2-core CPU (stated once): crops are used at their own size (v1 resizes 96³
crops to 64³); default grid 2 × 2 over ``region = (32, 48, 32)`` (bases ``32 × 24 × 16``); default
backbone the BasicUNet encoder (``voco_cnn``), SwinUNETR (``voco_swin``) being the GPU config
(region ``(64, 256, 256)``, grid 4, 64³ crops, feature_size 48 — every crop size divisible by 32).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["VoCoSettings", "base_boxes", "overlap_labels", "crop_views", "assign_logits",
           "voco_losses", "ema_update", "VoCoPair", "pretext_error", "pretrain_voco",
           "check_shape", "encoder_state_dict", "GPU_SETTINGS"]

_MAX_REGION = 512
_MAX_BATCH = 64


@dataclass
class VoCoSettings:
    """Pre-training settings (bounded by :meth:`validate`).

    ``region`` ``(z, y, x)`` voxels each volume is resized to; ``grid`` n (n × n bases); ``n_crops``
    random crops per volume; ``batch`` volumes per step; ``lr`` AdamW (amsgrad) learning rate,
    ``weight_decay``; ``momentum`` of the EMA teacher; ``p_flip``, ``p_rot``, ``p_shift``,
    ``shift`` augmentation.
    """

    region: tuple = (32, 48, 32)
    grid: int = 2
    n_crops: int = 2
    batch: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-5
    momentum: float = 0.9
    p_flip: float = 0.2
    p_rot: float = 0.2
    p_shift: float = 0.1
    shift: float = 0.1

    def validate(self) -> None:
        if len(self.region) != 3 or any(not 8 <= int(r) <= _MAX_REGION for r in self.region):
            raise InputError(f"region must be 3 sizes in [8, {_MAX_REGION}], got {self.region}")
        if not 2 <= self.grid <= 8:
            raise InputError(f"grid must be in [2, 8], got {self.grid}")
        if self.region[1] % self.grid or self.region[2] % self.grid:
            raise InputError(f"region y/x sizes {self.region[1:]} must be divisible by grid "
                             f"{self.grid}")
        if not 1 <= self.n_crops <= 16 or not 1 <= self.batch <= _MAX_BATCH:
            raise InputError(f"n_crops must be in [1, 16] and batch in [1, {_MAX_BATCH}]")
        if self.n_crops * self.batch < 2:
            raise InputError("batch × n_crops must be at least 2: the projector's batch norm "
                             "needs two random crops per step", hint="raise --crops or --batch")
        if not 0 < self.lr <= 1 or not 0 <= self.momentum < 1:
            raise InputError(f"lr must be in (0, 1] and momentum in [0, 1), got {self.lr}, "
                             f"{self.momentum}")
        for p in (self.p_flip, self.p_rot, self.p_shift):
            if not 0 <= p <= 1:
                raise InputError(f"augmentation probabilities must be in [0, 1], got {p}")

    @property
    def crop(self) -> tuple[int, int, int]:
        """Base (and random) crop size ``(z, y, x)``."""
        z, y, x = (int(v) for v in self.region)
        return z, y // self.grid, x // self.grid


GPU_SETTINGS = dict(region=(64, 256, 256), grid=4, n_crops=2, batch=2)


# --------------------------------------------------------------------------- geometry
def base_boxes(region_yx: Sequence[int], n: int) -> list[tuple[int, int, int, int]]:
    """The ``n × n`` base crops of an x–y region as ``(y0, y1, x0, x1)`` half-open boxes,
    ``k = i·n + j`` (i along y). Raises ``ValueError`` if the region is not divisible by ``n``."""
    hy, wx = int(region_yx[0]), int(region_yx[1])
    if n < 1 or hy % n or wx % n:
        raise ValueError(f"region {hy}×{wx} is not divisible into a {n}×{n} grid")
    ch, cw = hy // n, wx // n
    return [(i * ch, (i + 1) * ch, j * cw, (j + 1) * cw) for i in range(n) for j in range(n)]


def overlap_labels(origin_yx: Sequence[float], crop_yx: Sequence[int], region_yx: Sequence[int],
                   n: int) -> np.ndarray:
    """VoCo position label of a crop: x–y overlap area with each base / the crop's area.

    ``origin_yx`` is the crop's lower corner (voxels, may be fractional), ``crop_yx`` its size.
    The crop must lie inside the region (then the labels sum to 1). Returns ``(n·n,)`` float64.
    """
    y0, x0 = float(origin_yx[0]), float(origin_yx[1])
    h, w = float(crop_yx[0]), float(crop_yx[1])
    if y0 < 0 or x0 < 0 or y0 + h > region_yx[0] + 1e-9 or x0 + w > region_yx[1] + 1e-9:
        raise ValueError(f"crop at {origin_yx} of size {crop_yx} leaves the region {region_yx}")
    out = []
    for by0, by1, bx0, bx1 in base_boxes(region_yx, n):
        oy = max(0.0, min(y0 + h, by1) - max(y0, by0))
        ox = max(0.0, min(x0 + w, bx1) - max(x0, bx0))
        out.append(oy * ox / (h * w))
    return np.asarray(out)


def _augment(x, rng: np.random.Generator, s: VoCoSettings):
    """One crop ``(1, z, y, x)`` augmented as v1 (flips, in-plane rot90, intensity shift)."""
    import torch

    for ax in (1, 2, 3):
        if rng.random() < s.p_flip:
            x = torch.flip(x, (ax,))
    if rng.random() < s.p_rot:
        k = int(rng.integers(1, 4)) if x.shape[2] == x.shape[3] else 2
        x = torch.rot90(x, k, (2, 3))
    if rng.random() < s.p_shift:
        x = x + float(rng.uniform(-s.shift, s.shift))
    return x


def crop_views(volume, rng: np.random.Generator, s: VoCoSettings, *, augment: bool = True):
    """Bases, random crops and labels of one volume ``(1, z, y, x)`` of shape ``s.region``.

    Returns ``(crops (n_crops, 1, *crop), bases (K, 1, *crop), labels (n_crops, K))`` tensors.
    """
    import torch

    region = tuple(int(v) for v in s.region)
    if tuple(volume.shape[1:]) != region:
        raise InputError(f"volume shape {tuple(volume.shape[1:])} is not the region {region}")
    _, ch, cw = s.crop
    bases = [volume[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in base_boxes(region[1:], s.grid)]
    crops, labels = [], []
    for _ in range(s.n_crops):
        y0 = int(rng.integers(0, region[1] - ch + 1))
        x0 = int(rng.integers(0, region[2] - cw + 1))
        crops.append(volume[:, :, y0:y0 + ch, x0:x0 + cw])
        labels.append(overlap_labels((y0, x0), (ch, cw), region[1:], s.grid))
    if augment:
        bases = [_augment(b, rng, s) for b in bases]
        crops = [_augment(c, rng, s) for c in crops]
    return (torch.stack(crops), torch.stack(bases),
            torch.as_tensor(np.stack(labels), dtype=torch.float32))


# --------------------------------------------------------------------------- losses
def assign_logits(crops, bases):
    """``ReLU(cos(crop_m, base_k))``: ``(B, M, E) × (B, K, E) → (B, M, K)``."""
    import torch
    import torch.nn.functional as F

    return torch.relu(torch.einsum("bme,bke->bmk", F.normalize(crops, dim=-1),
                                   F.normalize(bases, dim=-1)))


def voco_losses(logits, labels, student_bases) -> dict:
    """v1 losses: ``pos`` (overlap prediction), ``neg`` (non-overlapped bases to 0), ``reg``
    (different bases apart, stop-gradient on the second of each pair) and ``loss`` = their sum.

    ``logits``, ``labels``: ``(B, M, K)``; ``student_bases``: ``(B, K, E)`` embeddings.
    """
    import torch
    import torch.nn.functional as F

    pos = -(labels * torch.log(1 - (labels - logits).abs() + 1e-6)).sum(-1) / labels.sum(-1)
    pos = pos.mean()
    zero = labels <= 0
    neg = (logits[zero] ** 2).mean() if bool(zero.any()) else logits.sum() * 0
    b = F.normalize(student_bases, dim=-1)
    sim = torch.einsum("bie,bje->bij", b, b.detach())
    k = sim.shape[-1]
    iu = torch.triu_indices(k, k, offset=1)
    reg = (torch.relu(sim[:, iu[0], iu[1]]) ** 2).mean()
    return {"loss": pos + neg + reg, "pos": pos, "neg": neg, "reg": reg}


def ema_update(teacher, student, momentum: float) -> None:
    """``θ_t ← m θ_t + (1 − m) θ_s`` for every parameter; buffers are copied."""
    import torch

    with torch.no_grad():
        for pt, ps in zip(teacher.parameters(), student.parameters()):
            pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
        for bt, bs in zip(teacher.buffers(), student.buffers()):
            bt.copy_(bs)


def _pair_cls():
    import torch.nn as nn

    class VoCoPair(nn.Module):
        """Student + EMA teacher (v1: two full backbones + projectors); the teacher never
        receives gradients. Both live in one module so the trainer checkpoints both."""

        def __init__(self, student: nn.Module):
            super().__init__()
            self.student = student
            self.teacher = copy.deepcopy(student)
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    return VoCoPair


def VoCoPair(student):  # noqa: N802 - a factory that reads like the class it builds
    """Student + EMA teacher module (see :func:`_pair_cls`)."""
    return _pair_cls()(student)


def check_shape(arch: str, s: VoCoSettings) -> None:
    """SwinUNETR needs every crop size divisible by 32 (checked before MONAI raises);
    the CNN needs at least 16 voxels per axis and 32 along one (four poolings)."""
    crop = s.crop
    if arch == "voco_swin" and any(c % 32 for c in crop):
        raise InputError(f"voco_swin needs crop sizes divisible by 32, got {crop} (region "
                         f"{tuple(s.region)} / grid {s.grid})",
                         hint="choose region and grid so that region/grid is a multiple of 32")
    step = 32 if arch == "voco_swin" else 16
    if any(c < step for c in crop) or int(np.prod([c // step for c in crop])) < 2:
        raise InputError(f"crop {crop} (region {tuple(s.region)} / grid {s.grid}) is too small: "
                         f"at least {step} voxels per axis and {2 * step} along one (instance "
                         "norm needs more than one voxel at the deepest level)")


# --------------------------------------------------------------------------- training step
def _batch(vols, idx, rng, s):
    import torch

    cs, bs, ls = zip(*(crop_views(torch.from_numpy(vols[i])[None], rng, s) for i in idx))
    return torch.stack(cs), torch.stack(bs), torch.stack(ls)


def voco_step(pair, crops, bases, labels) -> dict:
    """Losses of one batch: ``crops (B, M, 1, …)``, ``bases (B, K, 1, …)``, ``labels (B, M, K)``."""
    import torch

    b, m, k = labels.shape
    flat_c, flat_b = crops.flatten(0, 1), bases.flatten(0, 1)
    sc = pair.student(flat_c).view(b, m, -1)
    sb = pair.student(flat_b).view(b, k, -1)
    with torch.no_grad():
        tc = pair.teacher(flat_c).view(b, m, -1)
        tb = pair.teacher(flat_b).view(b, k, -1)
    logits = 0.5 * (assign_logits(sc, tb) + assign_logits(tc, sb))
    return voco_losses(logits, labels, sb)


def pretext_error(model, vols: np.ndarray, s: VoCoSettings, *, crops_per_volume: int = 8,
                  seed: int = 0) -> dict:
    """Overlap-prediction error on (held-out) volumes: mean |l_k − y_k| of the model's own
    logits ``ReLU(cos(crop, base_k))`` vs the uniform guess ``1/K`` (no augmentation)."""
    import torch

    rng = np.random.default_rng(seed)
    s2 = VoCoSettings(**{**asdict(s), "n_crops": crops_per_volume})
    errs, uni = [], []
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        for v in vols:
            c, b, y = crop_views(torch.from_numpy(v)[None], rng, s2, augment=False)
            emb = model(torch.cat([c, b]).to(dev)).cpu()
            lg = assign_logits(emb[None, :len(c)], emb[None, len(c):])[0]
            errs.append((lg - y).abs().mean().item())
            uni.append((y - 1.0 / y.shape[1]).abs().mean().item())
    return {"pretext_mae": float(np.mean(errs)), "uniform_mae": float(np.mean(uni)),
            "heldout_volumes": int(len(vols))}


def encoder_state_dict(path) -> dict:
    """The encoder tensors of a ``voco_cnn``/``voco_swin`` (or ``mvr_cnn``) weights file, named as
    in the MONAI network (``conv_0.…`` / ``swinViT.…``): load with ``strict=False``."""
    from ..learned.weights import read_safetensors

    _, tensors = read_safetensors(path)
    from medvol.models.voco import CNN_ENCODER_KEYS, SWIN_ENCODER_KEYS

    keys = CNN_ENCODER_KEYS + SWIN_ENCODER_KEYS
    out = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
    if not out:
        out = {k: v for k, v in tensors.items() if k.split(".")[0] in keys}
    return out


# --------------------------------------------------------------------------- job
def pretrain_voco(data=None, *, sources: Sequence[str] = ("hippocampus",), arch: str = "voco_cnn",
                  model_config: dict | None = None, settings: dict | VoCoSettings | None = None,
                  steps: int = 3000, run_dir="runs/voco", time_limit_s: float | None = None,
                  export=None, overwrite: bool = False, seed: int = 0, threads: int | None = None,
                  progress=True, checkpoint_every: int = 100, device: str = "cpu",
                  volumes: np.ndarray | None = None) -> dict:
    """Pre-train a VoCo backbone (resumable from ``run_dir``); returns a summary dict.

    ``device``: ``cpu``, ``cuda`` or ``auto`` (crops are cut on the CPU, the networks run on
    the device; the summary holds ``peak_gpu_mib`` on CUDA). ``volumes``: an already loaded pool
    ``(N, z, y, x)`` at ``settings.region`` used instead of reading ``data`` (speed benchmarks).

    ``export``: write the student (encoder + projector) as safetensors with the data provenance,
    the held-out pretext error and the loss curve next to it (``<export>_loss.png``).
    Held-out volumes for the pretext error are the hippocampus test subjects' images (never
    trained on).
    """
    import torch

    from ..learned.registry import build_model, config_to_dict
    from ..learned.trainer import peak_gpu_mib, resolve_device, save_loss_curve, train_loop
    from ..learned.weights import save_weights
    from . import models as _models  # noqa: F401 - registers voco_cnn / voco_swin
    from .data import heldout_images, unlabelled_pool

    if arch not in ("voco_cnn", "voco_swin"):
        raise InputError(f"arch must be voco_cnn or voco_swin, got {arch!r}")
    s = settings if isinstance(settings, VoCoSettings) else VoCoSettings(**(settings or {}))
    s.region, s.grid = tuple(int(v) for v in s.region), int(s.grid)
    s.validate()
    check_shape(arch, s)
    if export is not None and Path(export).exists() and not overwrite:
        from ..errors import OutputExistsError

        raise OutputExistsError("output weights exist", path=export, hint="pass --overwrite")
    if threads:
        from .._threads import set_threads

        set_threads(int(threads))
    device = resolve_device(device)
    if volumes is None:
        vols, _ = unlabelled_pool(data, sources, region=s.region)
    else:
        vols = np.asarray(volumes, np.float32)
        if vols.ndim != 4 or tuple(vols.shape[1:]) != tuple(s.region) or not len(vols):
            raise InputError(f"volumes must be (N, {', '.join(map(str, s.region))}), got "
                             f"{vols.shape}")
    student, cfg = build_model(arch, model_config)
    pair = VoCoPair(student.to(device))
    opt = torch.optim.AdamW(pair.student.parameters(), lr=s.lr, weight_decay=s.weight_decay,
                            amsgrad=True)
    run_cfg = {"arch": arch, "model": config_to_dict(cfg), "settings": config_to_dict(s),
               "sources": list(sources), "volumes": len(vols), "recipe": "voco-v1"}

    def step_fn(step, rng):
        if step > 0:
            ema_update(pair.teacher, pair.student, s.momentum)
        idx = rng.integers(0, len(vols), s.batch)
        return voco_step(pair, *(t.to(device) for t in _batch(vols, idx, rng, s)))

    t0 = time.perf_counter()
    res = train_loop(run_dir, model=pair, optimizer=opt, step_fn=step_fn, steps=steps, seed=seed,
                     checkpoint_every=checkpoint_every, time_limit_s=time_limit_s,
                     progress=progress, config=run_cfg)
    out = {"steps": res.steps_done, "finished": res.finished, "train_s": round(res.train_s, 1),
           "wall_s": round(time.perf_counter() - t0, 1), "volumes": len(vols),
           "final_loss": float(np.mean([h["loss"] for h in res.history[-50:]]))
           if res.history else None, "device": device}
    if (peak := peak_gpu_mib(device)) is not None:
        out["peak_gpu_mib"] = peak
    if export is not None:
        held = (heldout_images(data, s.region) if "hippocampus" in sources and volumes is None
                else vols[:0])
        if len(held):
            out.update(pretext_error(pair.student, held, s, seed=seed))
        save_weights(export, pair.student, arch=arch, config=cfg, task="voco-pretrain",
                     data={"sources": list(sources), "volumes": len(vols),
                           "excluded": "hippocampus test split (medvol/pretrain/splits.json)"},
                     metrics={k: out[k] for k in ("pretext_mae", "uniform_mae") if k in out},
                     extra={"recipe": "voco-v1", "settings": config_to_dict(s),
                            "steps": res.steps_done, "train_s": out["train_s"]},
                     overwrite=overwrite)
        save_loss_curve(res.history, Path(str(export)).with_suffix("").as_posix() + "_loss.png",
                        keys=("loss", "pos", "neg", "reg"), title=f"VoCo v1 ({arch})",
                        smooth=25)
        out["export"] = str(export)
    return out
