"""PD-UNet vs Learned Primal-Dual vs tuned classical methods on held-out **patients**, CT ×16
and radial MRI ×16; and the inference time of the paper-size PD-UNet per 256² slice.

Usage::

    .venv/bin/python benchmarks/pdunet.py --tune          # choose classical parameters on the
                                                           # TRAINING patients → pdunet_classical.json
    .venv/bin/python benchmarks/pdunet.py                 # per-patient tables (shipped weights)
    .venv/bin/python benchmarks/pdunet.py --noise 1e5     # + the CT table with Poisson noise
    .venv/bin/python benchmarks/pdunet.py --weights-dir DIR --md out.md --json out.json
    .venv/bin/python benchmarks/pdunet.py --timing        # + paper-size inference timing
    .venv/bin/python benchmarks/pdunet.py --data DIR      # data root (default ../shared/data)

Cohorts and splits: :mod:`medvol.recon.pdunet_cohort` (split by patient; test CT = 12 TCGA-LUAD
chest patients + the head CT + the abdomen CT, up to 6 slices each; test MRI = 3 IXI subjects +
the MNI152 template). No test patient is in the training split of the networks or of the
classical-parameter search.

Classical baselines, parameters chosen on training patients (``--tune``; one slice from each of
8 training subjects, best mean SSIM over a grid), then fixed: CT — FBP (Hann), SIRT and CGLS
(iteration count), TV-PDHG (``lam`` in ``medvol recon --lam`` units, i.e. × the 99.5th percentile
of the FBP image, and iteration count). MRI — gridding (density-compensated NUFFT adjoint), FBP of
the Fourier-slice sinogram, CGLS and TV-PDHG on k-space through :class:`medvol.mri.RadialNUFFT`.

Metrics per slice, averaged per patient; tables give mean ± std **over patients**: SSIM (Gaussian
σ 1.5, data range = max − min of the ground-truth slice), PSNR (same range), RMSE in HU (CT:
``1000·RMSE(μ)/μ_water``), seconds per slice (each slice alone, same thread count for all
methods). Reconstructions are clipped at 0. Paired per-patient wins and Wilcoxon p-values compare
PD-UNet with TV, LPD, and LPD with FBP.

``PD-UNet + TV`` (CT): the network followed by ``refine`` TV-PDHG iterations from its output
(:func:`medvol.recon.pdunet.refine_tv`, the default of ``medvol recon --method pdunet``). Its
λ and iteration count come from ``--tune-refine`` on 16 **training** slices (8 TCGA-LUAD
patients, 4 synthetic heads, 2 chest-CTA and 2 PET/CT slices): among λ ∈ {0.03, 0.1, 0.3} and
≤ 20 iterations, the highest mean PSNR whose mean SSIM is not below the network's.
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
PARAMS = Path(__file__).with_name("pdunet_classical.json")
TV_LAMS = (0.001, 0.003, 0.01, 0.03, 0.1)   # --tv-lams overrides
TV_ITERS = (100, 200, 300, 500)
SIRT_ITERS = (25, 50, 100, 200, 400)
CGLS_ITERS = (3, 5, 8, 12, 20, 30)
LEARNED = (("LPD", "lpd"), ("PD-UNet", "pdunet"))
REFINED = "PD-UNet + TV"      # the network, then medvol.recon.pdunet.refine_tv (recon's default)
REFINE_LAMS = (0.03, 0.1, 0.3)
REFINE_ITERS = (5, 10, 15, 20)  # ≤ 20: the speed budget (≈ the network's own time again)


def _stats(v, fmt="{:.4f}"):
    v = np.asarray(v, dtype=float)
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std())}"


def _weights(weights_dir: Path | None, name: str) -> Path:
    from medvol.learned.weights import _weights_dir

    return (weights_dir or _weights_dir()) / f"{name}.safetensors"


def _ssim(r, g):
    from medvol.metrics import ssim

    return ssim(np.clip(r, 0, None), g, data_range=float(g.max() - g.min()))


def _psnr(r, g):
    from medvol.metrics import psnr

    return psnr(np.clip(r, 0, None), g, data_range=float(g.max() - g.min()))


# --------------------------------------------------------------------------- problems
class _Problem:
    """One task's operators and per-slice simulation (CT: fan beam; MRI: radial NUFFT)."""

    def __init__(self, task_name: str, noise_i0: float | None = None):
        from medvol.recon.pdunet import task_operator
        from medvol.recon.pdunet_data import get_task

        self.task = get_task(task_name)
        self.op = task_operator(self.task)
        self.noise_i0 = noise_i0
        self.nufft = None
        if self.task.modality == "mri":
            from medvol.mri import RadialNUFFT

            self.nufft = RadialNUFFT(self.task.sparse_trajectory(), (self.task.image_size,) * 2,
                                     pixel=self.task.pixel)
            self.nufft_norm = float(self.nufft.norm())
        self.op_norm = float(self.op.norm())

    def simulate(self, gt: np.ndarray, seed: int):
        """→ (sinogram (views, bins), raw data for the classical solvers)."""
        from medvol.recon.pdunet_data import add_poisson_noise, simulate_sparse

        if self.task.modality == "ct":
            y = simulate_sparse(self.task, gt[None], self.op)[0]
            if self.noise_i0:
                y = add_poisson_noise(y, self.noise_i0, np.random.default_rng(seed))
            return y, y
        from medvol.mri.radial import default_n_det, kspace_to_sinogram, nufft_forward

        tr = self.task.sparse_trajectory()
        k = nufft_forward(gt, tr, pixel=self.task.pixel, eps=1e-6)
        y = kspace_to_sinogram(k, n_det=default_n_det(self.task.image_size, tr.n_read),
                               pixel=self.task.pixel).astype(np.float32)
        return y, k

    def classical(self, name: str, y, raw, params: dict, callback=None, n_iter=None):
        import torch

        from medvol.recon.iterative import cgls, sirt, tv_pdhg
        from medvol.recon.registry import tv_lambda

        def fbp():
            with torch.inference_mode():
                return self.op.fbp(torch.from_numpy(y)).numpy()

        if name == "FBP (Hann)":
            return fbp()
        if name == "gridding":
            from medvol.mri.radial import gridding_recon

            return gridding_recon(raw, self.task.sparse_trajectory(),
                                  (self.task.image_size,) * 2, pixel=self.task.pixel)
        A, data, norm = (self.op, y, self.op_norm) if self.nufft is None else \
            (self.nufft, raw, self.nufft_norm)
        if name == "SIRT":
            return sirt(A, data, n_iter or params["sirt_iters"], nonneg=True, progress=False,
                        callback=callback)
        if name == "CGLS":
            return cgls(A, data, n_iter or params["cgls_iters"], progress=False,
                        callback=callback)
        if name == "TV":
            scale_img = fbp() if self.nufft is None else self.classical("gridding", y, raw, params)
            return tv_pdhg(A, data, lam=tv_lambda(params["tv_lam"], scale_img),
                           n_iter=n_iter or params["tv_iters"], nonneg=True, progress=False,
                           op_norm=norm, callback=callback)
        raise KeyError(name)

    def methods(self) -> list[str]:
        if self.nufft is None:
            return ["FBP (Hann)", "SIRT", "CGLS", "TV"]
        return ["gridding", "FBP (Hann)", "CGLS", "TV"]


def _tuning_slices(task, data) -> list[np.ndarray]:
    from medvol.recon.pdunet_cohort import ct_subjects, mri_subjects

    subs = (ct_subjects if task.modality == "ct" else mri_subjects)(data, split="train")
    picked, seen = [], set()
    for s in sorted(subs, key=lambda s: (s.source != "tcga_luad" and s.source != "ixi", s.key)):
        if len(picked) >= 8 or not s.slices:
            continue
        if s.source in seen and s.source not in ("tcga_luad", "ixi"):
            continue
        seen.add(s.source)
        picked.append(s.slices[len(s.slices) // 2])
    return picked


def tune(task_name: str, data: Path, noise_i0: float | None = None, *, lams=TV_LAMS,
         n_slices: int = 8, tv_iters=TV_ITERS) -> dict:
    """Grid search of the classical parameters on training patients (best mean SSIM)."""
    prob = _Problem(task_name, noise_i0)
    gts = _tuning_slices(prob.task, data)[:n_slices]
    sims = [prob.simulate(g, 1000 + i) for i, g in enumerate(gts)]
    out: dict = {"n_slices": len(gts), "grid": {}}

    def sweep(name, iters, **kw):
        scores = {n: [] for n in iters}
        for (y, raw), g in zip(sims, gts):
            def cb(it, x, g=g):
                if it in scores:
                    scores[it].append(_ssim(np.asarray(x), g))
            prob.classical(name, y, raw, kw, callback=cb, n_iter=max(iters))
        return {n: float(np.mean(v)) for n, v in scores.items()}

    if prob.nufft is None:
        g = sweep("SIRT", SIRT_ITERS)
        out["grid"]["SIRT"] = g
        out["sirt_iters"] = max(g, key=g.get)
    g = sweep("CGLS", CGLS_ITERS)
    out["grid"]["CGLS"] = g
    out["cgls_iters"] = max(g, key=g.get)
    best = (-1.0, None, None)
    out["grid"]["TV"] = {}
    for lam in lams:
        g = sweep("TV", tuple(tv_iters), tv_lam=lam)
        out["grid"]["TV"][str(lam)] = g
        for n, v in g.items():
            if v > best[0]:
                best = (v, lam, n)
        print(f"  TV lam {lam}: " + ", ".join(f"{n} it {v:.4f}" for n, v in g.items()),
              flush=True)
    out["tv_lam"], out["tv_iters"] = float(best[1]), int(best[2])
    print(f"  {task_name}{'' if not noise_i0 else f' I0={noise_i0:g}'}: chosen "
          + ", ".join(f"{k}={out[k]}" for k in ("sirt_iters", "cgls_iters", "tv_lam", "tv_iters")
                      if k in out), flush=True)
    return out


def _refine_slices(data) -> list[tuple[str, np.ndarray]]:
    """16 CT training slices for ``--tune-refine``: the middle slice of 8 TCGA-LUAD and 4
    synthetic-head training subjects, 2 seeded slices each of the chest CTA and the PET/CT."""
    from medvol.recon.pdunet_cohort import ct_subjects

    by: dict[str, list] = {}
    for s in ct_subjects(data, split="train"):
        by.setdefault(s.source, []).append(s)
    rng = np.random.default_rng(5)
    out = []
    for src, q in (("tcga_luad", 8), ("synth_head", 4), ("chest_cta", 2), ("petct", 2)):
        subs = by.get(src, [])
        for s in (subs[:q] if len(subs) >= q else subs):
            n = len(s.slices)
            ks = [n // 2] if len(subs) >= q else rng.choice(n, size=min(q, n), replace=False)
            out += [(src, s.slices[int(k)]) for k in ks]
    return out


def tune_refine(data: Path, weights_dir: Path | None = None, *, lams=REFINE_LAMS,
                iters=REFINE_ITERS) -> dict:
    """The TV refinement's λ and iterations on training slices (rule in the module doc)."""
    import torch

    from medvol.learned.weights import load_weights
    from medvol.recon.pdunet import refine_tv

    prob = _Problem("ct_x16")
    model = load_weights(_weights(weights_dir, "pdunet_ct_x16"), arch="pdunet")[0].eval()
    base, grid = [], {f"{lam}@{n}": [] for lam in lams for n in iters}
    for i, (_, gt) in enumerate(_refine_slices(data)):
        y, _ = prob.simulate(gt, 1000 + i)
        yt = torch.from_numpy(y)
        with torch.inference_mode():
            x0 = model(yt[None], prob.op)[0]
            base.append((_ssim(x0.numpy(), gt), _psnr(x0.numpy(), gt)))
            for lam in lams:        # one refine_tv run per λ, scored at every count
                def cb(it, x, g=gt, lam=lam):
                    if it in iters:
                        grid[f"{lam}@{it}"].append((_ssim(np.asarray(x), g),
                                                    _psnr(np.asarray(x), g)))
                refine_tv(prob.op, yt, x0, n_iter=max(iters), lam=lam, callback=cb)
    b = np.mean(base, axis=0)
    res = {"n_slices": len(base), "network": {"ssim": float(b[0]), "psnr": float(b[1])},
           "grid": {k: {"ssim": float(np.mean([v[0] for v in g])),
                        "psnr": float(np.mean([v[1] for v in g]))} for k, g in grid.items()}}
    ok = [(v["psnr"], k) for k, v in res["grid"].items() if v["ssim"] >= b[0]]
    if not ok:
        res.update(refine_lam=0.1, refine_iters=0)
    else:
        k = max(ok)[1]
        res["refine_lam"], res["refine_iters"] = float(k.split("@")[0]), int(k.split("@")[1])
    for k, v in res["grid"].items():
        print(f"  refine {k}: SSIM {v['ssim']:.4f} ({v['ssim'] - b[0]:+.4f}), PSNR "
              f"{v['psnr']:.2f} ({v['psnr'] - b[1]:+.2f} dB)", flush=True)
    print(f"  network alone: SSIM {b[0]:.4f}, PSNR {b[1]:.2f}; chosen lam "
          f"{res['refine_lam']}, {res['refine_iters']} it.", flush=True)
    return res


def _key(task_name, noise_i0):
    return task_name if not noise_i0 else f"{task_name}@I0={noise_i0:g}"


# --------------------------------------------------------------------------- evaluation
def evaluate(task_name: str, weights_dir: Path | None, params: dict, data: Path = DEFAULT_DATA,
             noise_i0: float | None = None, cache: Path | None = None) -> dict:
    """Every method on every held-out slice; metrics per slice and per patient.

    ``cache``: a JSON file of classical-method rows (keyed by task, noise and parameters), so
    re-scoring new weights does not re-run TV/SIRT/CGLS."""
    import torch

    from medvol.learned.weights import load_weights
    from medvol.recon.pdunet_cohort import ct_subjects, mri_subjects
    from medvol.simulate import MU_WATER_70KEV

    prob = _Problem(task_name, noise_i0)
    subs = (ct_subjects if prob.task.modality == "ct" else mri_subjects)(data, split="test")
    models = {}
    for label, arch in LEARNED:
        p = _weights(weights_dir, f"{arch}_{task_name}")
        if p.exists():
            models[label] = load_weights(p, arch=arch)[0].eval()
        else:
            print(f"  (no weights {p}; skipping {label})")
    names = prob.methods() + list(models)
    refine = None
    if prob.task.modality == "ct" and "PD-UNet" in models:
        from medvol.recon.pdunet import default_refine, refine_tv

        refine = default_refine("pdunet_ct_x16")       # what medvol recon runs by default
        if refine[0]:
            names.append(REFINED)
            models[REFINED] = None
    ckey = json.dumps([task_name, noise_i0, {k: v for k, v in params.items()
                                             if k not in ("grid", "refine")}], sort_keys=True)
    cached = {}
    if cache is not None and cache.exists():
        cached = json.loads(cache.read_text())
    done = {(r["subject"], r["slice"], r["method"]): r for r in cached.get(ckey, [])}
    rows = []
    for si, sub in enumerate(subs):
        for k, gt in enumerate(sub.slices):
            y, raw = prob.simulate(gt, 10_000 * si + k)
            for name in names:
                if (sub.key, k, name) in done and name not in models:
                    rows.append(done[(sub.key, k, name)])
                    continue
                t0 = time.perf_counter()
                if name == REFINED:       # PD-UNet's output (timed above) + the refinement
                    with torch.inference_mode():
                        rec = refine_tv(prob.op, torch.from_numpy(y), pd_out, n_iter=refine[0],
                                        lam=refine[1]).numpy()
                    t0 -= pd_seconds
                elif name in models:
                    with torch.inference_mode():
                        out_t = models[name](torch.from_numpy(y[None]), prob.op)[0]
                    rec = out_t.numpy()
                    if name == "PD-UNet":
                        pd_out, pd_seconds = out_t, time.perf_counter() - t0
                else:
                    rec = np.asarray(prob.classical(name, y, raw, params))
                dt = time.perf_counter() - t0
                rec = np.clip(np.asarray(rec, np.float64), 0, None)
                r = dict(subject=sub.key, region=sub.region, source=sub.source, slice=k,
                         method=name, ssim=_ssim(rec, gt), psnr=_psnr(rec, gt), seconds=dt)
                if prob.task.modality == "ct":
                    r["rmse_hu"] = float(np.sqrt(np.mean((rec - gt) ** 2)) / MU_WATER_70KEV
                                         * 1000.0)
                rows.append(r)
        print(f"  {task_name}: patient {si + 1}/{len(subs)} ({sub.region}) done", flush=True)
        if cache is not None:
            cached = json.loads(cache.read_text()) if cache.exists() else {}
            cached[ckey] = [r for r in rows if r["method"] not in models]
            cache.write_text(json.dumps(cached))
    return {"task": task_name, "noise_i0": noise_i0, "params": params, "methods": names,
            "rows": rows}


def speed_pair(task_name: str, params: dict, weights_dir: Path | None, data: Path = DEFAULT_DATA,
               n: int = 8) -> str:
    """Seconds per slice of the tuned TV and of PD-UNet measured **interleaved** (TV, PD-UNet,
    TV, …) on ``n`` test slices from different patients, so both see the same machine load."""
    import torch

    from medvol.learned.weights import load_weights
    from medvol.recon.pdunet_cohort import ct_subjects, mri_subjects

    prob = _Problem(task_name)
    p = _weights(weights_dir, f"pdunet_{task_name}")
    if not p.exists():
        return f"- interleaved timing: no weights {p.name}"
    model = load_weights(p, arch="pdunet")[0].eval()
    subs = (ct_subjects if prob.task.modality == "ct" else mri_subjects)(data, split="test")
    slices = [s.slices[0] for s in subs][:n]
    from medvol.recon.pdunet import default_refine, refine_tv

    n_ref, lam_ref = default_refine(f"pdunet_{task_name}")
    t_tv, t_pd, t_ref = [], [], []
    for gt in slices:
        y, raw = prob.simulate(gt, 0)
        t0 = time.perf_counter()
        prob.classical("TV", y, raw, params)
        t_tv.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.inference_mode():
            x0 = model(torch.from_numpy(y[None]), prob.op)[0]
        t_pd.append(time.perf_counter() - t0)
        if n_ref:
            refine_tv(prob.op, torch.from_numpy(y), x0, n_iter=n_ref, lam=lam_ref)
            t_ref.append(time.perf_counter() - t0)
    tv, pd = float(np.median(t_tv)), float(np.median(t_pd))
    txt = (f"- interleaved timing ({len(slices)} slices, {torch.get_num_threads()} threads): "
           f"TV (lam {params['tv_lam']:g}, {params['tv_iters']} it.) median {tv:.2f} s/slice, "
           f"PD-UNet {pd:.3f} s/slice → PD-UNet is **{tv / pd:.0f}× faster**")
    if t_ref:
        rf = float(np.median(t_ref))
        txt += (f"; {REFINED} ({n_ref} it.) {rf:.3f} s/slice → **{tv / rf:.0f}× faster** "
                "than TV")
    return txt


def _per_subject(rows, method, metric, region=None):
    by: dict[str, list] = {}
    for r in rows:
        if r["method"] == method and (region is None or r["region"] == region):
            by.setdefault(r["subject"], []).append(r[metric])
    keys = sorted(by)
    return keys, np.array([np.mean(by[k]) for k in keys])


def _paired(rows, a, b, metric, region=None):
    from scipy.stats import wilcoxon

    _, va = _per_subject(rows, a, metric, region)
    _, vb = _per_subject(rows, b, metric, region)
    d = va - vb
    try:
        p = wilcoxon(va, vb).pvalue if d.size >= 2 and np.any(d != 0) else float("nan")
    except ValueError:
        p = float("nan")
    return d, p


def table(res: dict, region: str | None = None) -> str:
    rows = res["rows"]
    subj = {r["subject"] for r in rows if region is None or r["region"] == region}
    nsl = len({(r["subject"], r["slice"]) for r in rows
               if region is None or r["region"] == region})
    ct = res["task"].startswith("ct")
    noise = f", Poisson noise I₀ = {res['noise_i0']:g}" if res["noise_i0"] else ", noise-free"
    p = res["params"]
    head = (f"\n#### {res['task']}{noise} — {region or 'all regions'}: {len(subj)} held-out "
            f"patients, {nsl} slices (mean ± std over patients)\n")
    cols = ["method", "SSIM", "PSNR dB"] + (["RMSE HU"] if ct else []) + ["s / slice"]
    out = [head, "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m in res["methods"]:
        label = m
        if m == "TV":
            label = f"TV (lam {p['tv_lam']:g}, {p['tv_iters']} it.)"
        elif m == "SIRT":
            label = f"SIRT ({p['sirt_iters']} it.)"
        elif m == "CGLS":
            label = f"CGLS ({p['cgls_iters']} it.)"
        elif m == REFINED:
            from medvol.recon.pdunet import default_refine

            n, lr = default_refine("pdunet_ct_x16")
            label = f"PD-UNet + TV (lam {lr:g}, {n} it.)"
        cells = [label, _stats(_per_subject(rows, m, "ssim", region)[1]),
                 _stats(_per_subject(rows, m, "psnr", region)[1], "{:.2f}")]
        if ct:
            cells.append(_stats(_per_subject(rows, m, "rmse_hu", region)[1], "{:.1f}"))
        cells.append(f"{np.mean(_per_subject(rows, m, 'seconds', region)[1]):.3f}")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for a, b in (("PD-UNet", "TV"), (REFINED, "TV"), (REFINED, "PD-UNet"), ("PD-UNet", "LPD"),
                 ("LPD", "FBP (Hann)"), ("LPD", "gridding")):
        if a not in res["methods"] or b not in res["methods"]:
            continue
        ds, ps = _paired(rows, a, b, "ssim", region)
        dp, pp = _paired(rows, a, b, "psnr", region)
        out.append(f"- {a} − {b}: ΔSSIM {ds.mean():+.4f} (patients won {int((ds > 0).sum())}/"
                   f"{ds.size}, Wilcoxon p = {ps:.2g}); ΔPSNR {dp.mean():+.2f} dB (won "
                   f"{int((dp > 0).sum())}/{dp.size}, p = {pp:.2g})")
    for m in ("PD-UNet", REFINED):
        if m in res["methods"] and "TV" in res["methods"]:
            tv = np.mean(_per_subject(rows, "TV", "seconds", region)[1])
            pd = np.mean(_per_subject(rows, m, "seconds", region)[1])
            out.append(f"- time per slice: TV / {m} = {tv / pd:.1f}×")
    return "\n".join(out)


def report(res: dict) -> str:
    regions = sorted({r["region"] for r in res["rows"]})
    parts = [table(res)]
    if len(regions) > 1:
        parts += [table(res, reg) for reg in regions]
    return "\n".join(parts)


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

    from medvol.learned.weights import load_weights
    from medvol.metrics import ssim
    from medvol.recon.pdunet import task_operator
    from medvol.recon.pdunet_cohort import cohort_slices, ct_subjects
    from medvol.recon.pdunet_data import get_task, simulate_sparse

    task = get_task("ct_x16")
    gt = np.stack(cohort_slices(ct_subjects(data, split="test")))
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
    ap.add_argument("--tune", action="store_true",
                    help="choose the classical parameters on training patients and write "
                         f"{PARAMS.name}")
    ap.add_argument("--noise", type=float, default=None,
                    help="also evaluate CT with Poisson noise at this I0 (e.g. 1e5)")
    ap.add_argument("--timing", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None, help="write the tables here (Markdown)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tv-lams", type=float, nargs="+", default=list(TV_LAMS),
                    help="TV lam grid of --tune")
    ap.add_argument("--tv-iters", type=int, nargs="+", default=list(TV_ITERS),
                    help="TV iteration counts of --tune")
    ap.add_argument("--tune-slices", type=int, default=8,
                    help="training slices (one per training subject) of --tune")
    ap.add_argument("--tune-refine", action="store_true",
                    help="choose the PD-UNet + TV refinement (λ, iterations) on training "
                         f"patients and write it to {PARAMS.name} (ct_x16 → refine)")
    ap.add_argument("--no-eval", action="store_true", help="only --tune / --tune-refine")
    ap.add_argument("--noise-only", action="store_true", help="only the --noise CT run")
    ap.add_argument("--cache", type=Path, default=None,
                    help="JSON cache of the classical methods' per-slice results")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="training/test data root (default ../shared/data)")
    a = ap.parse_args(argv)
    import torch
    from medvol._threads import set_threads

    set_threads(a.threads)          # torch and the numba projectors of the classical methods
    runs = [(t, None) for t in a.tasks]
    if a.noise and "ct_x16" in a.tasks:
        runs.append(("ct_x16", a.noise))
    if a.noise_only:
        runs = [r for r in runs if r[1]]
    params = json.loads(PARAMS.read_text()) if PARAMS.exists() else {}
    if a.tune:
        for t, i0 in runs:
            res = tune(t, a.data, i0, lams=tuple(a.tv_lams), n_slices=a.tune_slices,
                       tv_iters=tuple(a.tv_iters))
            # re-read before writing: several --tune runs (one per task) may share the file
            params = json.loads(PARAMS.read_text()) if PARAMS.exists() else {}
            old = params.get(_key(t, i0))
            if old and old.get("n_slices") == res["n_slices"]:
                # a grid extension: keep the TV weights tried before, choose over all of them
                grid = {lam: {str(n): v for n, v in g.items()}
                        for lam, g in old["grid"].get("TV", {}).items()}
                for lam, g in res["grid"]["TV"].items():
                    grid[lam] = {**grid.get(lam, {}), **{str(n): v for n, v in g.items()}}
                res["grid"]["TV"] = grid
                best = max(((float(v), float(lam), int(n)) for lam, g in grid.items()
                            for n, v in g.items()))
                res["tv_lam"], res["tv_iters"] = best[1], best[2]
                print(f"  over all TV weights tried: tv_lam={best[1]}, tv_iters={best[2]}")
            params[_key(t, i0)] = res
            PARAMS.write_text(json.dumps(params, indent=1) + "\n")
            print(f"wrote {_key(t, i0)} to {PARAMS}", flush=True)
    if a.tune_refine:
        from medvol.recon.pdunet import default_refine

        res = tune_refine(a.data, a.weights_dir)
        params = json.loads(PARAMS.read_text()) if PARAMS.exists() else {}
        params.setdefault("ct_x16", {})["refine"] = res
        PARAMS.write_text(json.dumps(params, indent=1) + "\n")
        shipped = default_refine("pdunet_ct_x16")
        if (res["refine_iters"], res["refine_lam"]) != shipped:
            print(f"  NOTE: medvol's default refinement is {shipped}; the tables use it")
    if a.no_eval:
        return 0
    out = {"quality": []}
    md = []
    for t, i0 in runs:
        if _key(t, i0) not in params:
            print(f"no classical parameters for {_key(t, i0)}: run with --tune first")
            return 2
        r = evaluate(t, a.weights_dir, params[_key(t, i0)], a.data, i0, a.cache)
        txt = report(r)
        if not i0:
            txt += "\n" + speed_pair(t, params[_key(t, i0)], a.weights_dir, a.data)
        print(txt, flush=True)
        md.append(txt)
        out["quality"].append(r)
    if a.timing:
        out["timing"] = timing()
        out["fast_path_accuracy"] = accuracy_of_fast_paths(a.weights_dir, a.data)
    if a.md:
        a.md.write_text("\n\n".join(md) + "\n")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
