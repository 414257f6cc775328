"""Issue-15 registration benchmark: one table per data set, run via
``python benchmarks/registration.py --dataset hippocampus|ixi|intermodal``.

Data sets (splits in ``medvol/registration/splits.json``; data root ``--data``, default
``../shared/data``):

``hippocampus``  held-out test pairs ``(test[i], test[i+1])`` of the L2R-style 64³ crops, Dice of
                 labels 1/2 (``--pair-offsets 1,2,..``: also ``(test[i], test[i+k])``, and the
                 paired CIs are also given resampling subjects, see ``paired_bootstrap_ci``).
                 Classical methods start from their own affine; the learned nets
                 (``*_hippocampus`` weights) see the pair as it lies (the crops are roughly
                 aligned).
``ixi``          ordered pairs of the 3 held-out IXI subjects; every pair is first affinely
                 pre-aligned (SimpleITK, correlation; its time is added to every method), then
                 each deformable method registers the pre-aligned pair; Dice over the 148 DLMUSE
                 labels (≥ 20 voxels in the fixed image). Learned nets: ``*_synth`` weights
                 (trained on label-map synthesis only).
``intermodal``   the stroke subject at 2 mm: fixed T1, moving T2 or FLAIR resampled through a known
                 smooth deformation (seeded), tissue labels (3-class k-means of T1) moved along;
                 MI for affine/B-spline/refinement; demons is intramodal only (not run).

Columns: Dice mean ± std over pairs (per-pair mean over labels), HD95 mm (mean over labels and
pairs), % folding (det J ≤ 0 inside the fixed foreground), SD of log det J, inverse consistency
mm (both directions registered; ``--no-ic`` skips), seconds per pair (one direction; for
``ixi`` also "own s/pair": the deformable method alone, without the shared affine pre-alignment
every row includes). Paired differences of per-pair Dice with 95 % bootstrap CIs, and per-pair
wins.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def hd95(pred, target, labels, spacing_zyx) -> float:
    """Mean over ``labels`` of the symmetric 95th-percentile surface distance (mm), each label
    cropped to its bounding box (scipy EDT; written here because MONAI's version on 148 full
    one-hot channels is too slow for this CPU)."""
    from scipy.ndimage import binary_erosion, distance_transform_edt

    out = []
    for k in labels:
        a, b = pred == k, target == k
        if not a.any() or not b.any():
            continue
        idx = np.argwhere(a | b)
        lo, hi = np.maximum(idx.min(0) - 2, 0), idx.max(0) + 3
        sl = tuple(slice(int(l_), int(h_)) for l_, h_ in zip(lo, hi))
        a, b = a[sl], b[sl]
        sa, sb = a & ~binary_erosion(a), b & ~binary_erosion(b)
        da = distance_transform_edt(~sb, sampling=spacing_zyx)[sa]
        db = distance_transform_edt(~sa, sampling=spacing_zyx)[sb]
        out.append(np.percentile(np.concatenate([da, db]), 95))
    return float(np.mean(out)) if out else float("nan")


def _dice(pred, target, labels) -> float:
    from medvol.registration.metrics import mean_dice

    return mean_dice(pred, target, labels=labels)


class Table:
    def __init__(self, name, groups=None):
        # groups: (fixed, moving) subject of each pair when subjects repeat across pairs
        self.name, self.rows, self.groups = name, {}, groups

    def add(self, method, **kw):
        r = self.rows.setdefault(method, {k: [] for k in
                                          ("dice", "hd95", "fold", "sdlogj", "ic", "sec",
                                           "own")})
        for k, v in kw.items():
            if v is not None:
                r[k].append(float(v))

    def print(self, pairs_desc: str, pairs_ci=()):
        from registration import paired_bootstrap_ci  # noqa: E402 (sibling benchmark module)

        print(f"\n## {self.name}: {pairs_desc}")
        own = any(r.get("own") and r["own"] != r["sec"] for r in self.rows.values())
        print("| method | Dice mean ± std | HD95 mm | % folding | SD log|J| | IC mm | s/pair | "
              + ("own s/pair | " if own else "") + "n |")
        print("|---|---|---|---|---|---|---|---|" + ("---|" if own else ""))

        def m(v):
            return f"{np.mean(v):.3f}" if v else "–"

        for k, r in self.rows.items():
            print(f"| {k} | {np.mean(r['dice']):.3f} ± {np.std(r['dice']):.3f} | {m(r['hd95'])} | "
                  f"{m(r['fold'])} | {m(r['sdlogj'])} | {m(r['ic'])} | "
                  f"{np.mean(r['sec']) if r['sec'] else 0:.2f} | "
                  + (f"{np.mean(r['own']) if r.get('own') else 0:.2f} | " if own else "")
                  + f"{len(r['dice'])} |")
        print("\nPaired per-pair Dice differences (mean, 95 % bootstrap CI over pairs):")
        for x, y in pairs_ci:
            if x in self.rows and y in self.rows and len(self.rows[x]["dice"]) == len(
                    self.rows[y]["dice"]):
                dx, dy = self.rows[x]["dice"], self.rows[y]["dice"]
                md, lo, hi = paired_bootstrap_ci(dx, dy)
                wins = int(sum(a > b for a, b in zip(dx, dy)))
                clu = ""
                if self.groups is not None and len(self.groups) == len(dx):
                    _, glo, ghi = paired_bootstrap_ci(dx, dy, groups=self.groups)
                    clu = f"; resampling subjects [{glo:+.4f}, {ghi:+.4f}]"
                print(f"  {x} − {y}: {md:+.4f} [{lo:+.4f}, {hi:+.4f}]{clu}, "
                      f"wins {wins}/{len(dx)}")

    def to_json(self):
        return {k: {m: list(v) for m, v in r.items()} for k, r in self.rows.items()}


def _field_metrics(u_mm, ref, mask):
    from medvol.registration.metrics import jacobian_stats

    sp = tuple(reversed(ref.spacing))
    st = jacobian_stats(u_mm, sp, ref.direction, mask=mask)
    return st["folding_percent"], st["log_jac_std"]


def _ic(u_ab, u_ba, ref, mask):
    from medvol.registration.learned import lps_mm_to_voxel_ddf
    from medvol.registration.metrics import inverse_consistency_error

    return inverse_consistency_error(lps_mm_to_voxel_ddf(u_ab, ref), lps_mm_to_voxel_ddf(u_ba, ref),
                                     tuple(reversed(ref.spacing)), mask=mask)


def _classical(name, metric, settings):
    import SimpleITK as sitk

    from medvol.registration.classical import register_affine
    from medvol.registration.demons import register_bspline_fast, register_demons

    ident = sitk.AffineTransform(3)
    if name == "affine":
        return lambda f, m, pre: register_affine(f, m, metric=metric)
    if name == "demons":
        return lambda f, m, pre: register_demons(
            f, m, settings=settings.get("demons"), initial=ident if pre else None)[0]
    if name == "bspline":
        return lambda f, m, pre: register_bspline_fast(
            f, m, metric=metric, settings=settings.get("bspline"),
            initial=ident if pre else None)[0]
    raise ValueError(name)


def run_pairs(table, pairs, methods, *, labels, metric, ic=True, prealign=False, extra_sec=None):
    """``pairs``: list of dicts with fixed, moving (Volumes), fixed_labels, moving_labels
    (Volumes), mask (fixed foreground). ``methods``: {name: fn(f, m) -> field}."""
    from medvol.registration.run import warp_volume

    for i, p in enumerate(pairs):
        f, m, fl, ml = p["fixed"], p["moving"], p["fixed_labels"], p["moving_labels"]
        sp = tuple(reversed(f.spacing))
        tl = np.asarray(fl.array)
        zero = np.zeros(f.shape + (3,))
        w0 = warp_volume(ml, zero, f, interp="nearest").array
        table.add("before", dice=_dice(w0, tl, labels), hd95=hd95(w0, tl, labels, sp),
                  fold=0.0, sdlogj=0.0, ic=0.0, sec=0.0, own=0.0)
        for name, fn in methods.items():
            t0 = time.perf_counter()
            u = fn(f, m)
            own = time.perf_counter() - t0           # the method alone (no shared pre-alignment)
            sec = own + (extra_sec[i] if extra_sec else 0.0)
            wl = warp_volume(ml, u, f, interp="nearest").array
            fold, sdl = _field_metrics(u, f, p["mask"])
            icv = None
            if ic and name != "affine":
                ub = fn(m, f)
                icv = _ic(u, ub, f, p["mask"])
            d = _dice(wl, tl, labels)
            table.add(name, dice=d, hd95=hd95(wl, tl, labels, sp), fold=fold, sdlogj=sdl, ic=icv,
                      sec=sec, own=own)
            print(f"  pair {i} {name:18s} dice {d:.3f} fold {fold:.3f}% {sec:.1f}s"
                  + (f" ic {icv:.2f}mm" if icv is not None else ""), flush=True)


# --------------------------------------------------------------------------- data sets
def present_labels(pairs, min_voxels: int = 20) -> list[int]:
    """Labels scored on IXI: every label with ≥ ``min_voxels`` voxels in some fixed image."""
    ls = set()
    for p in pairs:
        v, c = np.unique(np.asarray(p["fixed_labels"].array), return_counts=True)
        ls |= {int(k) for k, n in zip(v, c) if k > 0 and n >= min_voxels}
    return sorted(ls)


def hippocampus_pairs(data, n, split="test", offsets=(1,)):
    """The first ``n`` ordered pairs ``(s[i], s[i+k])`` of ``split``'s sorted subjects ``s``
    for each ``k`` in ``offsets`` in turn (``val``: for choosing settings); each pair dict also
    names its subjects' indices (``group``: (fixed, moving)). Offsets must be distinct and in
    ``1 .. len(s) - 1`` (no subject paired with itself, no pair twice)."""
    from medvol import Volume
    from medvol.registration.datasets import hippocampus_test_pairs, load_hippocampus

    subs = load_hippocampus(data, split)
    ids = sorted(subs)
    if len(set(offsets)) != len(offsets) or not all(1 <= int(k) < len(ids) for k in offsets):
        raise SystemExit(f"--pair-offsets must be distinct, each in 1..{len(ids) - 1}; got "
                         f"{','.join(map(str, offsets))}")
    if len(offsets) > 1 and n < len(ids) * len(offsets):
        raise SystemExit(f"--pair-offsets {','.join(map(str, offsets))} gives "
                         f"{len(ids) * len(offsets)} pairs but --pairs is {n}: give --pairs "
                         f"{len(ids) * len(offsets)} (pairs run offset by offset)")
    out = []
    for a, b in hippocampus_test_pairs(subs, offsets)[:n]:
        v = lambda x: Volume(np.asarray(x, np.float32), spacing=(1.0, 1.0, 1.0))  # noqa: E731
        out.append({"fixed": v(subs[a][0]), "moving": v(subs[b][0]),
                    "fixed_labels": v(subs[a][1]), "moving_labels": v(subs[b][1]),
                    "mask": subs[a][0] > 0, "group": (ids.index(a), ids.index(b))})
    return out


def _hippo_learned(method, refine, weights=None, task="hippocampus", full=None, settings=None):
    """Learned net on the hippocampus box (no resampling: the box of the 64³ volume);
    ``settings``: ``RefineSettings`` (``None``: the task's for its own budget, as ``medvol
    register``)."""
    from medvol.io.formats import voxel_ddf_to_lps_mm
    from medvol.registration.datasets import hippo_box_ddf
    from medvol.registration.learned import load_model

    model, _ = load_model(method, task, path=weights)

    def run(f, m):
        ddf = hippo_box_ddf(model, f.array, m.array, steps=refine, full_steps=full,
                            settings=settings)
        return voxel_ddf_to_lps_mm(ddf, f)

    return run


def ixi_pairs(data, n=6, split="test"):
    """Affinely pre-aligned IXI pairs and the seconds of each pre-alignment. ``test``: every
    ordered pair of the held-out subjects; ``train``: the 6 pairs ``(t[i], t[i+3 mod 7])`` of the
    training subjects on which settings are chosen (IXI has no validation subject)."""
    import SimpleITK as sitk

    from medvol.registration.classical import affine_transform
    from medvol.registration.data import normalize_intensity
    from medvol.registration.datasets import ixi_test_pairs, load_ixi

    subs = load_ixi(data, split)
    ids = sorted(subs)
    plist = (ixi_test_pairs(subs) if split == "test" else
             [(ids[i], ids[(i + 3) % len(ids)]) for i in range(min(6, len(ids)))])
    out, secs = [], []
    for a, b in plist[:n]:
        f, fl = subs[a]
        m, ml = subs[b]
        f = f.with_array(normalize_intensity(np.asarray(f.array)))
        m = m.with_array(normalize_intensity(np.asarray(m.array)))
        t0 = time.perf_counter()
        aff = affine_transform(f, m, metric="ncc")
        secs.append(time.perf_counter() - t0)
        rs = lambda v, it: f.with_array(sitk.GetArrayFromImage(sitk.Resample(  # noqa: E731
            sitk.Cast(v.to_sitk(), sitk.sitkFloat32), f.to_sitk(), aff, it, 0.0,
            sitk.sitkFloat32)))
        mv = rs(m, sitk.sitkLinear)
        mlv = rs(ml.with_array(np.asarray(ml.array, np.float32)), sitk.sitkNearestNeighbor)
        mlv = mlv.with_array(np.rint(np.asarray(mlv.array)).astype(np.int16))
        out.append({"fixed": f, "moving": mv, "fixed_labels": fl, "moving_labels": mlv,
                    "mask": np.asarray(fl.array) > 0, "ids": (a, b)})
    return out, secs


def intermodal_pairs(data, n_seeds=2, amp_mm=10.0, split="test"):
    """The stroke subject's T1 (fixed) vs its T2 / FLAIR through known smooth fields: field
    seeds 1000, 1001 are the held-out ``test`` pairs, 1002, 1003 the ``val`` pairs (settings are
    chosen on those; the subject is the same: a different deformation, not a different person)."""
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter

    from medvol import io as mio
    from medvol.learned.data import resolve_data_root
    from medvol.registration.data import _kmeans_tissue, normalize_intensity
    from medvol.registration.run import warp_volume

    d = resolve_data_root(data, need=("mri/stroke",)) / "mri" / "stroke"
    from medvol import Volume

    vols = {}
    for c in ("T1", "T2", "FLAIR"):
        v = mio.read(d / f"{c}.nii.gz")
        vols[c] = Volume.from_sitk(sitk.Cast(sitk.Shrink(v.to_sitk(), [2, 2, 2]), sitk.sitkFloat32))
    t1 = vols["T1"]
    mask = np.asarray(t1.array) > 0.05 * float(np.asarray(t1.array).max())
    lab = t1.with_array(_kmeans_tissue(normalize_intensity(np.asarray(t1.array), mask),
                                       mask).astype(np.int16))
    out = []
    for s in range(n_seeds):
        for c in ("T2", "FLAIR"):
            rng = np.random.default_rng((1002 if split == "val" else 1000) + s)
            u = np.stack([gaussian_filter(rng.standard_normal(t1.shape), 6) for _ in range(3)], -1)
            u = u / np.abs(u).max() * amp_mm
            mv = warp_volume(vols[c], u, t1)
            ml = warp_volume(lab, u, t1, interp="nearest")
            out.append({"fixed": t1, "moving": mv, "fixed_labels": lab, "moving_labels": ml,
                        "mask": mask, "ids": (c, s)})
    return out


def main(argv=None, *, paired_ci=None):
    import argparse

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, choices=("hippocampus", "ixi", "intermodal"))
    ap.add_argument("--merge", nargs="+", default=None,
                    help="print one table from --json files of runs on the same pairs (e.g. the "
                         "classical and the learned methods run separately)")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--pairs", type=int, default=10, help="held-out pairs (the first N)")
    ap.add_argument("--pair-offsets", default="1",
                    help="hippocampus: pairs (s[i], s[i+k]) for each k of this comma list, in turn "
                         "(default 1: the issue-15 test pairs; give --pairs n_subjects x "
                         "n_offsets); with more than one k the CIs are also given resampling "
                         "subjects")
    ap.add_argument("--refine", type=int, default=40)
    ap.add_argument("--refine-fast", default="0",
                    help="also fast budgets: N refinement steps all at half resolution "
                         "(medvol register --refine N --refine-full 0); a comma list gives one "
                         "row per N; 0 = no such rows")
    ap.add_argument("--refine-task", action="store_true",
                    help="also the task's own default budget and settings (what `medvol register "
                         "--task T` runs without --refine; medvol.registration.refine.TASK_REFINE "
                         "/ TASK_SETTINGS); the other rows keep the general settings")
    ap.add_argument("--split", default="test", choices=("test", "val"),
                    help="hippocampus / intermodal: the held-out test pairs (default) or the "
                         "validation pairs (to choose a budget without touching test)")
    ap.add_argument("--amp", type=float, default=10.0,
                    help="intermodal: max |known displacement| in mm")
    ap.add_argument("--methods", default="affine,demons,bspline,voxelmorph,micdir")
    ap.add_argument("--no-ic", action="store_true")
    ap.add_argument("--weights", default=None, help="folder with <method>_<task>.safetensors")
    ap.add_argument("--task", default=None,
                    help="learned weights <method>_<task> (default: hippocampus for hippocampus, "
                         "ixi for ixi, synth for intermodal; the shipped intra/inter weights "
                         "also work)")
    ap.add_argument("--json", default=None, help="write the per-pair values here")
    a = ap.parse_args(argv)
    fast = [int(n) for n in str(a.refine_fast).split(",") if int(n) > 0]
    r = f"refine {a.refine}"
    cis = [(f"micdir + {r}", f"voxelmorph + {r}"), ("micdir", "voxelmorph"),
           (f"micdir + {r}", "bspline"), (f"micdir + {r}", "demons"), (f"micdir + {r}", "micdir"),
           (f"voxelmorph + {r}", "voxelmorph"), ("bspline", "demons"), ("micdir", "demons")]
    for nf in fast:
        rf = f"refine {nf} (half-res)"
        cis += [(f"micdir + {rf}", f"voxelmorph + {rf}"), (f"micdir + {rf}", "demons"),
                (f"micdir + {rf}", "bspline"), (f"micdir + {rf}", "micdir")]
    tasks = {"hippocampus": "hippocampus", "ixi": "ixi", "intermodal": "synth"}
    task = a.task or tasks[a.dataset]
    task_budget = None
    if a.refine_task:
        from medvol.registration.refine import default_refine, full_res_steps

        task_budget = default_refine(task)
        if a.refine and task_budget == (a.refine, full_res_steps(a.refine)):
            task_budget = None                    # the same run as the "refine N" row
    if task_budget:
        rt = f"refine {task_budget[0]} ({task} default)"
        cis += [(f"micdir + {rt}", f"voxelmorph + {rt}"), (f"micdir + {rt}", "demons"),
                (f"micdir + {rt}", "micdir")]
    if a.merge:
        t, groups = Table(a.dataset), []
        for fj in a.merge:
            d = json.loads(Path(fj).read_text())
            groups.append(d.get("groups"))
            if groups[-1] != groups[0]:
                raise SystemExit(f"--merge: {fj} was run on other pairs than {a.merge[0]}")
            for k, v in d["table"].items():
                if k not in t.rows:
                    t.rows[k] = v
        t.groups = groups[0]
        n = len(t.rows["before"]["dice"])
        t.print(f"{n} held-out pairs, {len(d['labels'])} labels (merged: {', '.join(a.merge)})", cis)
        return
    import os

    # 1 thread by default: 2 OpenMP threads on an oversubscribed 2-core CPU stall badly
    torch.set_num_threads(int(os.environ.get("MEDVOL_BENCH_THREADS", "1")))
    methods = a.methods.split(",")
    wpath = (lambda m: Path(a.weights) / f"{m}_{task}.safetensors") if a.weights else (lambda m: None)
    fns, extra = {}, None
    if a.dataset == "hippocampus":
        offsets = tuple(int(k) for k in str(a.pair_offsets).split(","))
        pairs = hippocampus_pairs(a.data, a.pairs, a.split, offsets)
        labels, metric, pre = [1, 2], "ncc", False
    elif a.dataset == "ixi":
        pairs, extra = ixi_pairs(a.data, a.pairs)
        labels, metric, pre = None, "ncc", True
    else:
        pairs = intermodal_pairs(a.data, amp_mm=a.amp, split=a.split)[:a.pairs]
        labels, metric, pre = [1, 2, 3], "mi", False
    sim = "lncc" if metric == "ncc" else "mi"
    from medvol.registration.demons import demons_settings

    for m in methods:
        if m in ("affine", "bspline") or (m == "demons" and metric == "ncc"):
            c = _classical(m, metric, {"demons": demons_settings(task)})
            fns[m] = (lambda c: (lambda f, mv: c(f, mv, pre)))(c)
        elif m in ("voxelmorph", "micdir"):
            budgets = {m: (0, None)}                      # row name: (steps, full-res steps)
            if a.refine:
                budgets[f"{m} + refine {a.refine}"] = (a.refine, None)
            for nf in fast:
                budgets[f"{m} + refine {nf} (half-res)"] = (nf, 0)
            if task_budget:
                budgets[f"{m} + refine {task_budget[0]} ({task} default)"] = task_budget
            from medvol.registration.refine import RefineSettings

            for key, (n, full) in budgets.items():
                # "refine N (half-res)" rows run the general settings even where the budget is
                # the task's own (--refine-fast 1 on hippocampus); the others what `medvol
                # register` would (default_refine_settings: the task's for its own budget)
                st = RefineSettings() if key.endswith("(half-res)") else None
                if a.dataset == "hippocampus":
                    fns[key] = _hippo_learned(m, n, wpath(m), task, full, st)
                else:
                    fns[key] = _learned_with(m, task, n, sim, wpath(m), full, st)
    if labels is None:
        labels = present_labels(pairs)
    groups = [list(p["group"]) for p in pairs] if all("group" in p for p in pairs) else None
    repeats = groups and len({g[0] for g in groups}) < len(groups)   # a subject in several pairs
    t = Table(a.dataset, groups if repeats else None)
    run_pairs(t, pairs, fns, labels=labels, metric=metric, ic=not a.no_ic, extra_sec=extra)
    which = "validation" if a.dataset != "ixi" and a.split == "val" else "held-out"
    t.print(f"{len(pairs)} {which} pairs, {len(labels)} labels", cis)
    if a.json:
        Path(a.json).write_text(json.dumps({"dataset": a.dataset, "table": t.to_json(),
                                            "labels": labels, "args": vars(a),
                                            "groups": t.groups}))


def _learned_with(method, task, refine, sim, weights, full=None, settings=None):
    from medvol.registration.learned import load_model, register_learned

    model, info = load_model(method, task, path=weights)

    def run(f, m):
        # task: the task's validated grid (synth: 2 mm); the modality's refinement similarity
        return register_learned(f, m, method=method, modality="intra" if sim == "lncc" else "inter",
                                model=model, meta=info, refine=refine, task=task,
                                refine_full=full, refine_settings=settings).disp_mm

    return run


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
