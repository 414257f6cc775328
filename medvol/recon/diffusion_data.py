"""Training data and training job of the 2D slice diffusion prior (``medvol train diffusion``).

Slices come from a data root (``--data DIR`` or ``$MEDVOL_DATA``) laid out as::

    DIR/ct/tcga_luad_slices/*.dcm       100 axial chest/abdomen CT slices (54 patients)
    DIR/ct/totalseg/petct_dicom/*       20 axial PET/CT slices (CT part)
    DIR/dicom/ct_head_ge_tilt/*.dcm     28 axial head CT slices
    DIR/ct/totalseg/abdomen_ct.nii.gz   abdomen–pelvis volume, every 2nd axial slice

Every source is optional except that at least one must be present. ``ct/totalseg/chest_cta``
is **never read here**: it is the held-out evaluation volume of ``benchmarks/diffusion3d.py``.

Each slice is resampled to :data:`PIXEL_MM` mm/pixel (linear, anti-aliased) and mapped from
HU through the fixed window :data:`HU_WINDOW` to [0, 1] (air 0, clipped). Training draws random
``crop``² patches (background-padded where a slice is smaller), random flips, a random DDPM
timestep, and minimises the ε-prediction MSE on ``2x − 1``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["HU_WINDOW", "PIXEL_MM", "SOURCES", "hu_to_unit", "unit_to_hu", "load_training_slices",
           "train_diffusion", "denoise_psnr_table"]

log = logging.getLogger("medvol.recon.diffusion")

HU_WINDOW = (-1000.0, 1000.0)
"""HU mapped to 0 and 1 (clipped) for the prior and the diffusion reconstructions."""
PIXEL_MM = 3.0
"""In-plane grid of the prior's training slices (mm/pixel)."""
SOURCES = ("ct/tcga_luad_slices", "ct/totalseg/petct_dicom", "dicom/ct_head_ge_tilt",
           "ct/totalseg/abdomen_ct.nii.gz")
HELD_OUT = "ct/totalseg/chest_cta.nii.gz"


def hu_to_unit(hu):
    """HU → [0, 1] through :data:`HU_WINDOW` (clipped)."""
    lo, hi = HU_WINDOW
    return np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def unit_to_hu(u):
    """Inverse of :func:`hu_to_unit` inside the window."""
    lo, hi = HU_WINDOW
    return np.asarray(u, np.float32) * (hi - lo) + lo


def _resample(hu: np.ndarray, pixel: tuple[float, float]) -> np.ndarray:
    from skimage.transform import rescale

    sy, sx = float(pixel[0]), float(pixel[1])
    out = rescale(hu.astype(np.float32), (sy / PIXEL_MM, sx / PIXEL_MM), order=1,
                  anti_aliasing=True, preserve_range=True, mode="edge")
    return hu_to_unit(out)


def _dicom_slices(folder: Path) -> list[tuple[str, np.ndarray]]:
    import pydicom

    out = []
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(f)
            arr = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # noqa: BLE001 - one unreadable file is skipped with a line
            log.warning("skipping unreadable DICOM file %s (%s)", f.name, type(exc).__name__)
            continue
        if arr.ndim != 2:
            continue
        hu = arr * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
        px = [float(v) for v in getattr(ds, "PixelSpacing", (1.0, 1.0))]
        out.append((f.name, _resample(hu, px)))
    return out


def load_training_slices(data=None, *, split: str = "train") -> list[np.ndarray]:
    """All training slices on the :data:`PIXEL_MM` grid in [0, 1] (float32, varying sizes).

    ``split``: ``"train"``, ``"val"`` (every 10th TCGA-LUAD slice by sorted file name, 10
    slices, never trained on) or ``"all"``. The held-out chest CTA is never read.
    """
    from ..learned.data import resolve_data_root

    root = resolve_data_root(data)
    present = [s for s in SOURCES if (root / s).exists()]
    if not present:
        raise InputError(f"no diffusion training data under {root}",
                         hint="expected one of " + ", ".join(SOURCES) + " (see `medvol train "
                         "diffusion --help`)")
    slices: list[np.ndarray] = []
    for src in present:
        p = root / src
        if src.endswith(".nii.gz"):
            from ..io import read

            vol = read(p)
            a = vol.numpy().astype(np.float32)
            sx, sy, _ = vol.spacing
            items = [(f"{k}", _resample(a[k], (sy, sx))) for k in range(0, a.shape[0], 2)]
        else:
            items = _dicom_slices(p)
        for i, (_, img) in enumerate(items):
            is_val = src == "ct/tcga_luad_slices" and i % 10 == 0
            if split == "all" or (split == "val") == is_val:
                slices.append(img)
    if not slices and split != "val":
        raise InputError(f"no readable training slices under {root}")
    return slices


def random_crops(slices: list[np.ndarray], rng: np.random.Generator, batch: int,
                 crop: int) -> np.ndarray:
    """``batch`` random ``crop``² patches (zero-padded slices, random flips) → (B, 1, c, c)."""
    out = np.zeros((batch, 1, crop, crop), np.float32)
    for b in range(batch):
        img = slices[int(rng.integers(len(slices)))]
        ny, nx = img.shape
        if ny < crop or nx < crop:
            pad = np.zeros((max(ny, crop), max(nx, crop)), np.float32)
            oy, ox = (pad.shape[0] - ny) // 2, (pad.shape[1] - nx) // 2
            pad[oy:oy + ny, ox:ox + nx] = img
            img = pad
            ny, nx = img.shape
        y0 = int(rng.integers(ny - crop + 1))
        x0 = int(rng.integers(nx - crop + 1))
        p = img[y0:y0 + crop, x0:x0 + crop]
        if rng.random() < 0.5:
            p = p[:, ::-1]
        if rng.random() < 0.5:
            p = p[::-1, :]
        out[b, 0] = p
    return out


@dataclass
class TrainConfig:
    steps: int = 4000
    batch: int = 8
    crop: int = 64
    lr: float = 2e-4
    seed: int = 0


def train_diffusion(data=None, *, runs: Path, steps: int = 4000, batch: int = 8, crop: int = 64,
                    lr: float = 2e-4, seed: int = 0, config: dict | None = None,
                    time_limit_s: float | None = None, export: Path | None = None,
                    progress=True, ckpt_every: int = 100, init: Path | str | None = None):
    """Train (or resume) the ε-network in ``runs/diffusion`` with :func:`medvol.learned.train_loop`.

    ``config`` is the :class:`models.diffusion.DiffusionConfig` as a dict (defaults if None).
    ``init``: a ``diffusion`` weights file to continue from (its config is used; a fresh Adam
    state; its own step count is added to this run's in the exported ``steps``) — the way to
    train the shipped prior further once its checkpoint is gone. With ``export`` (a folder),
    writes ``diffusion_ct.safetensors`` and ``diffusion_ct_loss.png`` there when the run ends.
    Returns the :class:`~medvol.learned.trainer.TrainResult`.
    """
    import torch

    from ..learned.registry import build_model, config_to_dict
    from ..learned.trainer import save_loss_curve, train_loop
    from ..models.diffusion import alphas_cumprod

    if steps < 1 or not 1 <= batch <= 256 or not 16 <= crop <= 512 or crop % 8:
        raise InputError("need steps >= 1, 1 <= batch <= 256 and a crop in [16, 512] that is a "
                         "multiple of 8")
    slices = load_training_slices(data, split="train")
    torch.manual_seed(seed)
    init_info = None
    if init is not None:       # the init file's network and config (validated by the loader)
        from ..learned.registry import make_config
        from ..learned.weights import load_weights
        from ..models.diffusion import DiffusionConfig

        model, init_info = load_weights(init, arch="diffusion")
        cfg = make_config(DiffusionConfig, init_info.config)
        if config is not None and make_config(DiffusionConfig, config) != cfg:
            raise InputError("config differs from the config of the --init weights",
                             path=Path(init), hint="drop the config or pick matching weights")
    else:
        model, cfg = build_model("diffusion", config)
    abar = alphas_cumprod(cfg).float()
    T = int(cfg.n_train_timesteps)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    run_cfg = {"model": config_to_dict(cfg), "batch": batch, "crop": crop, "lr": lr, "seed": seed,
               "n_slices": len(slices), "pixel_mm": PIXEL_MM, "hu_window": list(HU_WINDOW)}
    if init_info is not None:
        run_cfg["init"] = {"file": Path(init).name,
                           "steps": int(init_info.extra.get("steps", 0) or 0),
                           "train_s": float(init_info.extra.get("train_s", 0.0) or 0.0)}

    def step_fn(step, rng):
        x0 = torch.from_numpy(random_crops(slices, rng, batch, crop)) * 2.0 - 1.0
        t = torch.from_numpy(rng.integers(0, T, size=batch))
        eps = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = torch.mean((model(xt, timesteps=t) - eps) ** 2)
        return {"loss": loss}

    run_dir = Path(runs) / "diffusion"
    res = train_loop(run_dir, model=model, optimizer=opt, step_fn=step_fn, steps=steps, seed=seed,
                     checkpoint_every=ckpt_every, time_limit_s=time_limit_s, log_every=50,
                     grad_clip=1.0, progress=progress, config=run_cfg)
    if export is not None:
        export_run(run_dir, export, data=data, history=res.history, train_s=res.train_s)
    return res


def steps_done(run_dir) -> int:
    """Steps of the checkpoint in ``run_dir`` (0 when there is none)."""
    from ..learned.trainer import read_checkpoint_info

    info = read_checkpoint_info(run_dir)
    return int(info["step"]) if info else 0


def export_run(run_dir, export, *, data=None, history=None, train_s=None) -> Path:
    """Write ``diffusion_ct.safetensors`` (weights + data/split/steps/metrics metadata) and
    ``diffusion_ct_loss.png`` from the checkpoint in ``run_dir`` into the folder ``export``."""
    import json

    from ..learned.registry import build_model
    from ..learned.trainer import read_checkpoint_info, save_loss_curve
    from ..learned.weights import read_safetensors, save_weights

    run_dir, export = Path(run_dir), Path(export)
    info = read_checkpoint_info(run_dir)
    if info is None:
        raise InputError(f"no training checkpoint in {run_dir}")
    cfg_run = info["config"]
    model, cfg = build_model("diffusion", cfg_run["model"])
    _, tensors = read_safetensors(run_dir / "checkpoint.safetensors")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    export.mkdir(parents=True, exist_ok=True)
    val = load_training_slices(data, split="val")
    val_note = "every 10th TCGA-LUAD slice by file name (10), not trained on"
    if not val:
        val, val_note = load_training_slices(data, split="train")[:8], "no TCGA-LUAD: 8 training slices"
    table = denoise_psnr_table(model, cfg, val, seed=0)
    history = history if history is not None else info.get("history", [])
    train_s = train_s if train_s is not None else info.get("train_seconds", 0.0)
    n_train = cfg_run.get("n_slices")
    run_steps = int(info["step"])
    init_steps = int((cfg_run.get("init") or {}).get("steps", 0))
    init_s = float((cfg_run.get("init") or {}).get("train_s", 0.0))
    out = save_weights(export / "diffusion_ct.safetensors", model, arch="diffusion", config=cfg,
                       task="ct-slice-prior",
                       data={"sources": list(SOURCES), "held_out": HELD_OUT,
                             "pixel_mm": PIXEL_MM, "hu_window": list(HU_WINDOW),
                             "n_train_slices": n_train,
                             "val": val_note},
                       metrics={"denoise_psnr_val": table},
                       extra={"steps": run_steps + init_steps,
                              "train_s": round(float(train_s) + init_s, 1),
                              "steps_this_run": run_steps, "init_steps": init_steps,
                              "batch": cfg_run.get("batch"), "crop": cfg_run.get("crop"),
                              "lr": cfg_run.get("lr")},
                       overwrite=True)
    if history:
        save_loss_curve(history, export / "diffusion_ct_loss.png", smooth=200, log_y=True,
                        title="diffusion prior eps-MSE (moving average 200)")
    save_samples_png(model, cfg, export / "diffusion_ct_samples.png")
    (export / "diffusion_ct_metrics.json").write_text(json.dumps(
        {"step": run_steps + init_steps, "steps_this_run": run_steps, "train_s": train_s,
         "denoise_psnr_val": table}, indent=1))
    return out


def save_samples_png(model, cfg, path, *, n: int = 8, size: int = 64, steps: int = 50,
                     seed: int = 0) -> Path:
    """Unconditional DDIM samples (η = 0) of the prior as one Pillow PNG row (2× zoom)."""
    import torch
    from PIL import Image

    from ..models.diffusion import alphas_cumprod
    from .diffusion import DiffusionPrior, unconditional_samples

    prior = DiffusionPrior(model.eval(), cfg, alphas_cumprod(cfg), torch.device("cpu"), 16)
    x = unconditional_samples(prior, n, size, steps=steps, seed=seed).numpy()
    row = (np.concatenate(list(np.clip(x, 0, 1)), 1) * 255).astype(np.uint8)
    img = Image.fromarray(row).resize((row.shape[1] * 2, row.shape[0] * 2), Image.NEAREST)
    img.save(path)
    return Path(path)


def denoise_psnr_table(model, cfg, slices: list[np.ndarray], *, seed: int = 0,
                       timesteps=(50, 100, 200, 400, 700), size: int = 64) -> dict:
    """PSNR (dB, data range 1) of the one-step Tweedie denoiser x̂₀ on centre crops of
    ``slices`` at several DDPM timesteps, with the noisy input's PSNR for reference."""
    import torch
    from skimage.metrics import peak_signal_noise_ratio as psnr

    from ..models.diffusion import alphas_cumprod

    abar = alphas_cumprod(cfg).float()
    g = torch.Generator().manual_seed(seed)
    imgs = []
    for s in slices:
        ny, nx = s.shape
        pad = np.zeros((max(ny, size), max(nx, size)), np.float32)
        pad[(pad.shape[0] - ny) // 2:(pad.shape[0] - ny) // 2 + ny,
            (pad.shape[1] - nx) // 2:(pad.shape[1] - nx) // 2 + nx] = s
        cy, cx = pad.shape[0] // 2, pad.shape[1] // 2
        imgs.append(pad[cy - size // 2:cy + size // 2, cx - size // 2:cx + size // 2])
    x0 = torch.from_numpy(np.stack(imgs)[:, None])
    out = {}
    model.eval()
    with torch.no_grad():
        for t in timesteps:
            a = abar[t]
            eps = torch.randn(x0.shape, generator=g)
            xt = a.sqrt() * (2 * x0 - 1) + (1 - a).sqrt() * eps
            e = model(xt, timesteps=torch.full((len(x0),), t, dtype=torch.long))
            xh = ((xt - (1 - a).sqrt() * e) / a.sqrt()).clamp(-1, 1) * 0.5 + 0.5
            noisy = (xt / a.sqrt()).clamp(-1, 1) * 0.5 + 0.5
            p_den = float(np.mean([psnr(x0[i, 0].numpy(), xh[i, 0].numpy(), data_range=1.0)
                                   for i in range(len(x0))]))
            p_in = float(np.mean([psnr(x0[i, 0].numpy(), noisy[i, 0].numpy(), data_range=1.0)
                                  for i in range(len(x0))]))
            out[str(t)] = {"sigma": round(float(((1 - a) / a).sqrt() * 0.5), 4),
                           "psnr_noisy": round(p_in, 2), "psnr_denoised": round(p_den, 2)}
    return out
