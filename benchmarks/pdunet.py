"""PD-UNet vs Learned Primal-Dual vs FBP on held-out real slices, CT ×16 and MRI ×16; and the
inference time of the paper-size PD-UNet per 256² slice with its FLOPs.

Usage::

    .venv/bin/python benchmarks/pdunet.py                 # quality table (shipped weights)
    .venv/bin/python benchmarks/pdunet.py --timing        # + paper-size inference timing
    .venv/bin/python benchmarks/pdunet.py --weights-dir .cache/pdunet/export --json out.json
    .venv/bin/python benchmarks/pdunet.py --data DIR      # data root (default ../shared/data)

Test data (never used in training; see medvol/learned/data.py; CT from --data DIR):
  CT ×16 — 6 acquired slices (instances 16–21, z = 69…106 mm) of the GE head CT, 128², fan beam,
           23 of 360 views; the other 22 slices of that (only) CT subject trained the networks.
  MRI ×16 — axial slices of nilearn's MNI152 T1 template (another subject/volume than the stroke
           T1/T2/FLAIR training volumes), 128², 16 of 256 radial spokes via NUFFT → sinogram.

SSIM: Gaussian window σ = 1.5 (11 px), K1 0.01, K2 0.03, **data_range = max − min of the
ground-truth slice** (the dival/standard rule). The reference repository's rule (max − min of the
*prediction*) is printed as a second column for comparison. PSNR uses the same GT range.
All reconstructions are clipped at 0 (attenuation / magnitude cannot be negative).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data"     # passed explicitly to the library


def _stats(v):
    v = np.asarray(v, dtype=float)
    return f"{v.mean():.4f} ± {v.std():.4f}"


def _weights(weights_dir: Path | None, name: str) -> Path:
    from medvol.learned.weights import _weights_dir

    return (weights_dir or _weights_dir()) / f"{name}.safetensors"


def evaluate(task_name: str, weights_dir: Path | None, batch: int = 8,
             data: Path = DEFAULT_DATA) -> dict:
    import torch

    from medvol.learned.data import get_task, simulate_sparse, task_images
    from medvol.learned.weights import load_weights
    from medvol.metrics import psnr, ssim
    from medvol.recon.pdunet import task_operator

    task = get_task(task_name)
    gt = np.stack(task_images(task, "test", data=data))
    op = task_operator(task)
    y = simulate_sparse(task, gt, op)
    yt = torch.from_numpy(y)
    recs = {}
    with torch.inference_mode():
        recs["FBP (Hann)"] = op.fbp(yt).numpy()
        for label, arch in (("LPD", "lpd"), ("PD-UNet", "pdunet")):
            p = _weights(weights_dir, f"{arch}_{task_name}")
            if not p.exists():
                print(f"  (no weights {p}; skipping {label})")
                continue
            model, meta = load_weights(p, arch=arch)
            outs = []
            t0 = time.perf_counter()
            for i in range(0, len(y), batch):
                outs.append(model(yt[i:i + batch], op).numpy())
            recs[label] = np.concatenate(outs)
            recs[label + "_s"] = (time.perf_counter() - t0) / len(y)
    res = {"task": task_name, "n_test": int(len(gt)), "methods": {}}
    for name, rec in recs.items():
        if name.endswith("_s"):
            continue
        rec = np.clip(rec, 0, None)
        s_gt, s_pred, ps = [], [], []
        for r, g in zip(rec, gt):
            rng = float(g.max() - g.min())
            s_gt.append(ssim(r, g, data_range=rng))
            s_pred.append(ssim(r, g, data_range=max(float(r.max() - r.min()), 1e-12)))
            ps.append(psnr(r, g, data_range=rng))
        res["methods"][name] = dict(ssim=s_gt, ssim_predrange=s_pred, psnr=ps,
                                    sec_per_slice=recs.get(name + "_s"))
    return res


def print_table(res: dict) -> None:
    from scipy.stats import wilcoxon

    m = res["methods"]
    print(f"\n### {res['task']}  (n = {res['n_test']} held-out slices, 128²)")
    print(f"{'method':<12} {'SSIM (GT range)':>18} {'SSIM (pred range)':>18} {'PSNR dB':>16} "
          f"{'s/slice':>8}")
    for name, v in m.items():
        t = v["sec_per_slice"]
        print(f"{name:<12} {_stats(v['ssim']):>18} {_stats(v['ssim_predrange']):>18} "
              f"{np.mean(v['psnr']):7.2f} ± {np.std(v['psnr']):5.2f} "
              f"{'' if t is None else f'{t:8.3f}'}")
    order = [k for k in ("PD-UNet", "LPD", "FBP (Hann)") if k in m]
    for a, b in zip(order, order[1:]):
        d = np.array(m[a]["ssim"]) - np.array(m[b]["ssim"])
        dp = np.array(m[a]["psnr"]) - np.array(m[b]["psnr"])
        try:
            p = wilcoxon(m[a]["ssim"], m[b]["ssim"]).pvalue
        except ValueError:
            p = float("nan")
        print(f"  {a} − {b}: ΔSSIM {d.mean():+.4f} (wins {int((d > 0).sum())}/{d.size}, "
              f"Wilcoxon p = {p:.2g}), ΔPSNR {dp.mean():+.2f} dB")


def _compiled_copy(model):
    """Copy of ``model`` with its UNet and dual CNNs compiled by torch.compile (inductor,
    freezing: BatchNorm folded, oneDNN weight prepacking); the projector/FBP stay eager."""
    import copy

    import torch
    import torch._inductor.config as ic

    ic.freezing = True
    m = copy.deepcopy(model).eval()
    for blocks in (m.primal, m.dual):
        for k in range(len(blocks)):
            blocks[k] = torch.compile(blocks[k])
    return m


def timing(threads_list=(2, 1), reps: int = 5) -> list[dict]:
    """Paper-size PD-UNet (width 32, depth 4) on a 256² CT ×16 fan-beam slice."""
    import torch

    from medvol.models.pdunet import PDUNet, count_parameters, unet_flops
    from medvol.recon.pdunet import pdunet_operator
    from medvol.simulate import default_fan_geometry

    g = default_fan_geometry((256, 256), (0.9765625,) * 2, 360).subsample(16)
    op = pdunet_operator(g, (256, 256), (0.9765625,) * 2)
    torch.manual_seed(0)
    model = PDUNet(image_scale=0.04).eval()
    with torch.no_grad():
        model.gate_primal.fill_(0.1)
    x = torch.rand(1, 256, 256) * 0.03
    y = op(x)
    V, K = g.sino_shape
    dual = 2 * 9 * V * K * (7 * 32 + 32 * 32 + 32 * 5)
    flops = 2 * unet_flops(32, 4, 256) + 2 * dual
    rows = []
    ref = _infer(model, y, op)

    def run(label, fn, threads):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        out = fn()                                    # warm-up (and compile)
        warm = time.perf_counter() - t0
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        err = float((out.float() - ref).abs().max() / ref.abs().max())
        rows.append(dict(variant=label, threads=threads, median_s=float(np.median(ts)),
                         min_s=float(np.min(ts)), first_call_s=warm, max_rel_dev=err))
        print(f"  {label:<44} threads={threads}  median {np.median(ts):.3f} s  "
              f"min {np.min(ts):.3f} s  (first call {warm:.1f} s; max |Δ|/max vs fp32 eager "
              f"{err:.1e})", flush=True)

    print(f"\n### inference time, paper-size PD-UNet ({count_parameters(model) / 1e6:.2f} M "
          f"params), one 256² slice, fan beam {V} views × {K} bins")
    print(f"  FLOPs per slice (convolutions): {flops / 1e9:.1f} GFLOP "
          f"(one UNet pass {unet_flops(32, 4, 256) / 1e9:.2f} GFLOP; projector/FBP not counted)")
    ml = PDUNet(image_scale=0.04).eval()
    ml.load_state_dict(model.state_dict())
    ml = ml.to(memory_format=torch.channels_last)
    mc = None
    for th in threads_list:
        run("eager fp32, no_grad", lambda: _nograd(model, y, op), th)
        run("eager fp32, inference_mode", lambda: _infer(model, y, op), th)
        run("inference_mode + channels_last", lambda: _infer(ml, y, op), th)
        run("inference_mode + bf16 autocast + channels_last", lambda: _infer_bf16(ml, y, op), th)
        if mc is None:
            mc = _compiled_copy(model)
        run("torch.compile (inductor, freezing) fp32", lambda: _infer(mc, y, op), th)
    return rows


def accuracy_of_fast_paths(weights_dir=None, data: Path = DEFAULT_DATA) -> dict:
    """SSIM of the shipped CT PD-UNet on the held-out slices: fp32 eager vs bf16 vs compiled."""
    import torch

    from medvol.learned.data import ct_slices, get_task, simulate_sparse
    from medvol.learned.weights import load_weights
    from medvol.metrics import ssim
    from medvol.recon.pdunet import task_operator

    task = get_task("ct_x16")
    gt = np.stack(ct_slices("test", data=data))
    op = task_operator(task)
    y = torch.from_numpy(simulate_sparse(task, gt, op))
    model, _ = load_weights(_weights(weights_dir, "pdunet_ct_x16"))
    outs = {"fp32 eager": _infer(model, y, op),
            "bf16 autocast + channels_last": _infer_bf16(
                model.to(memory_format=torch.channels_last), y, op),
            "torch.compile fp32": _infer(_compiled_copy(model), y, op)}
    res = {}
    print("\n### fast paths on the trained CT ×16 PD-UNet (held-out slices, SSIM GT range)")
    for k, o in outs.items():
        o = np.clip(o.float().numpy(), 0, None)
        s = [ssim(r, g, data_range=float(g.max() - g.min())) for r, g in zip(o, gt)]
        res[k] = float(np.mean(s))
        print(f"  {k:<32} SSIM {np.mean(s):.4f}")
    return res


def _nograd(m, y, op):
    import torch
    with torch.no_grad():
        return m(y, op)


def _infer(m, y, op):
    import torch
    with torch.inference_mode():
        return m(y, op)


def _infer_bf16(m, y, op):
    import torch
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return m(y, op)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["ct_x16", "mri_x16"])
    ap.add_argument("--weights-dir", type=Path, default=None)
    ap.add_argument("--timing", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="training/test data root (default ../shared/data)")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(2)
    print("SSIM data range = max − min of the ground-truth slice (standard); "
          "'pred range' = the reference repo's rule. PSNR with the GT range.")
    out = {"quality": []}
    for t in a.tasks:
        r = evaluate(t, a.weights_dir, data=a.data)
        print_table(r)
        out["quality"].append(r)
    if a.timing:
        out["timing"] = timing()
        out["fast_path_accuracy"] = accuracy_of_fast_paths(a.weights_dir, a.data)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
