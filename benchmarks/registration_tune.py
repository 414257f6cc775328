"""Choose the demons / B-spline settings on TRAINING pairs (never a held-out pair).

    python benchmarks/registration_tune.py [--dataset hippocampus|ixi] [--pairs 3] [--data ../shared/data]

``hippocampus``: the first ``--pairs`` ordered pairs of the hippocampus training subjects (the
defaults of :class:`medvol.registration.demons.DemonsSettings` / ``BSplineSettings`` are the
winners there). ``ixi``: the 6 pairs ``(t[i], t[i+3 mod 7])`` of the IXI training subjects,
affinely pre-aligned exactly as in ``benchmarks/registration.py --dataset ixi`` (the pairs the
``--task ixi`` refinement budget was chosen on), Dice over the parcellation labels; a wider demons
grid (field σ × iterations per level), since whole 2 mm brains move more than hippocampus crops.
Prints per-setting mean Dice and seconds per pair (the deformable step alone).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def _grid(what: str, dataset: str, sigmas=None, iterations=None):
    from medvol.registration.demons import BSplineSettings, DemonsSettings

    if what != "demons":
        return [BSplineSettings(mesh=m) for m in (4, 6, 8)]
    sig, its = (1.0, 1.5, 2.0), ((40, 20, 10), (80, 40, 20))
    if dataset == "ixi":
        sig, its = (0.75, 1.0, 1.5, 2.0), ((40, 20, 10), (80, 40, 20), (160, 80, 40))
    sig = sigmas or sig
    its = iterations or its
    return [DemonsSettings(field_sigma=s, iterations=it) for s in sig for it in its]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="hippocampus", choices=("hippocampus", "ixi"))
    ap.add_argument("--pairs", type=int, default=None, help="default 3 (hippocampus) / 6 (ixi)")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--what", default="demons", choices=("demons", "bspline"))
    ap.add_argument("--threads", type=int, default=2, help="SimpleITK threads of every run")
    ap.add_argument("--sigmas", default=None,
                    help="demons field σ values (voxels), comma-separated (default: the grid above)")
    ap.add_argument("--iterations", default=None,
                    help="demons iterations per level, e.g. 160/80/40,320/160/80")
    a = ap.parse_args()
    sig = tuple(float(v) for v in a.sigmas.split(",")) if a.sigmas else None
    its = (tuple(tuple(int(n) for n in g.split("/")) for g in a.iterations.split(","))
           if a.iterations else None)
    a.pairs = a.pairs or (6 if a.dataset == "ixi" else 3)
    import SimpleITK as sitk

    from medvol.registration.demons import register_bspline_fast, register_demons
    from medvol.registration.run import warp_volume

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from registration_sets import _dice, hippocampus_pairs, ixi_pairs, present_labels

    if a.dataset == "ixi":       # pre-aligned as in the benchmark; Dice over the parcellation
        pairs, _ = ixi_pairs(a.data, a.pairs, split="train")
        labels, pre = present_labels(pairs), True
    else:
        pairs, labels, pre = hippocampus_pairs(a.data, a.pairs, split="train"), [1, 2], False
    ident = sitk.AffineTransform(3)
    print(f"{len(pairs)} {a.dataset} TRAINING pairs, {len(labels)} labels", flush=True)
    for st in _grid(a.what, a.dataset, sig, its):
        st.threads = a.threads
        d, t = [], []
        for p in pairs:
            f, m, lm = p["fixed"], p["moving"], p["moving_labels"]
            t0 = time.perf_counter()
            u = (register_demons(f, m, settings=st, initial=ident if pre else None)
                 if a.what == "demons" else
                 register_bspline_fast(f, m, settings=st, initial=ident if pre else None))[0]
            t.append(time.perf_counter() - t0)
            w = warp_volume(lm, u, f, interp="nearest").array
            d.append(_dice(w, np.asarray(p["fixed_labels"].array), labels))
        print(f"{st}: Dice {np.mean(d):.4f} ± {np.std(d):.4f} s/pair {np.mean(t):.2f}", flush=True)


if __name__ == "__main__":
    main()
