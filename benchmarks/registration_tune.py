"""Choose the demons / B-spline settings on TRAINING pairs (hippocampus training subjects).

    python benchmarks/registration_tune.py [--pairs 3] [--data ../shared/data]

Prints per-setting mean Dice and seconds; the defaults of
:class:`medvol.registration.demons.DemonsSettings` / ``BSplineSettings`` are the winners.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--what", default="demons")
    a = ap.parse_args()
    from medvol import Volume
    from medvol.registration.datasets import hippocampus_test_pairs, load_hippocampus
    from medvol.registration.demons import (BSplineSettings, DemonsSettings, register_bspline_fast,
                                            register_demons)
    from medvol.registration.run import warp_volume

    subs = load_hippocampus(a.data, "train")
    pairs = hippocampus_test_pairs(subs)[:a.pairs]
    v = lambda x: Volume(np.asarray(x, np.float32), spacing=(1.0, 1.0, 1.0))  # noqa: E731
    grid = ([DemonsSettings(field_sigma=s, iterations=it) for s in (1.0, 1.5, 2.0)
             for it in ((40, 20, 10), (80, 40, 20))] if a.what == "demons" else
            [BSplineSettings(mesh=m) for m in (4, 6, 8)])
    for st in grid:
        d, t = [], []
        for fa, mb in pairs:
            f, m, lm = v(subs[fa][0]), v(subs[mb][0]), v(subs[mb][1])
            t0 = time.perf_counter()
            u = (register_demons(f, m, settings=st) if a.what == "demons"
                 else register_bspline_fast(f, m, settings=st))[0]
            t.append(time.perf_counter() - t0)
            w = warp_volume(lm, u, f, interp="nearest").array
            lf = subs[fa][1]
            d.append(np.mean([2 * ((w == k) & (lf == k)).sum() / ((w == k).sum() + (lf == k).sum())
                              for k in (1, 2)]))
        print(f"{st}: Dice {np.mean(d):.4f} s/pair {np.mean(t):.1f}", flush=True)


if __name__ == "__main__":
    main()
