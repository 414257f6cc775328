"""VoCo pre-training speed and peak memory per config and device (issue 17's speed point).

Usage::

    .venv/bin/python benchmarks/voco_gpu.py --device cpu --configs cpu --json cpu.json
    python benchmarks/voco_gpu.py --device cuda --configs cpu,gpu --json gpu.json   # on a GPU

Configs: ``cpu`` = the shipped default (``voco_cnn``, region 32×48×32, 2×2 grid, batch 2);
``gpu`` = the documented GPU config (``voco_swin``: SwinUNETR v2 encoder, feature size 48,
region 64×256×256, 4×4 grid of 64³ bases, batch 2 volumes × (16 bases + 2 crops)).
Each runs through :func:`medvol.pretrain.voco.pretrain_voco` itself (EMA teacher, losses,
checkpointing) on a synthetic pool of smooth random volumes at the config's region: steps/s
and memory do not depend on image content, and the pool is generated so the run needs no data
folder (a GPU machine here has none). Steps/s is measured after ``--warmup`` steps (CUDA kernel
selection, allocator growth) over ``--steps`` more steps, checkpoint writes included (one per
run). Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, peak RSS on the CPU.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = {
    "cpu": dict(arch="voco_cnn", settings=dict(region=(32, 48, 32), grid=2, n_crops=2, batch=2,
                                               lr=5e-4)),
    "gpu": dict(arch="voco_swin", settings=None),      # medvol.pretrain.voco.GPU_SETTINGS, lr 1e-4
}


def synthetic_pool(n: int, region, seed: int = 0) -> np.ndarray:
    """``n`` volumes of smoothed noise plus an ellipsoid, scaled to [0, 1] (float32)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, r) for r in region), indexing="ij")
    out = np.empty((n, *region), np.float32)
    for i in range(n):
        v = gaussian_filter(rng.standard_normal(region).astype(np.float32), 2.0)
        r = rng.uniform(0.4, 0.8, 3)
        v += 2.0 * ((z / r[0]) ** 2 + (y / r[1]) ** 2 + (x / r[2]) ** 2 < 1)
        out[i] = (v - v.min()) / (v.max() - v.min())
    return out


def measure(name: str, device: str, steps: int, warmup: int, n_vols: int, lr: float | None):
    import torch

    from medvol.pretrain.voco import GPU_SETTINGS, pretrain_voco

    cfg = CONFIGS[name]
    s = dict(cfg["settings"] or {**GPU_SETTINGS, "lr": 1e-4})
    if lr is not None:
        s["lr"] = lr
    pool = synthetic_pool(n_vols, s["region"])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as run:
        common = dict(arch=cfg["arch"], settings=s, run_dir=run, device=device, volumes=pool,
                      progress=False, checkpoint_every=10 ** 9)
        a = pretrain_voco(None, steps=warmup, **common)
        b = pretrain_voco(None, steps=warmup + steps, **common)
    rate = (b["steps"] - a["steps"]) / max(b["train_s"] - a["train_s"], 1e-9)
    rec = {"config": name, "arch": cfg["arch"], "device": b["device"],
           "region": list(s["region"]), "grid": s["grid"], "batch": s["batch"],
           "steps_timed": b["steps"] - a["steps"], "steps_per_s": round(rate, 3),
           "final_loss": b["final_loss"], "torch": torch.__version__,
           "threads": torch.get_num_threads()}
    if "peak_gpu_mib" in b:
        rec["peak_gpu_mib"] = b["peak_gpu_mib"]
        rec["gpu"] = torch.cuda.get_device_name(b["device"])
    rec["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return rec


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--configs", default="cpu", help="comma-separated: cpu, gpu")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per config")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--volumes", type=int, default=8, help="synthetic pool size")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    from medvol.errors import MedvolError
    from medvol.learned.trainer import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        dev = resolve_device(args.device)
    except MedvolError as e:
        raise SystemExit(f"voco_gpu: {e}") from None
    recs = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            raise SystemExit(f"unknown config {name!r}: use {', '.join(CONFIGS)}")
        t = time.perf_counter()
        r = measure(name, dev, args.steps, args.warmup, args.volumes, args.lr)
        r["wall_s"] = round(time.perf_counter() - t, 1)
        recs.append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
