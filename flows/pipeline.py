"""medvol's Prefect flows: one study end to end, many studies in a batch, and the single steps.

Flows (deployment entrypoints ``flows/pipeline.py:<flow>``):

* :func:`study_pipeline` — ingest → reconstruct (every series) → register to a reference/atlas
  (optional) → study report, for one study. Output layout::

      OUT/ingest/<label>/volume.nrrd, OUT/ingest/manifest.json
      OUT/recon/<label>/{recon.nrrd, fbp.nrrd, *.png, report.html, manifest.json}
      OUT/register/<label>/{warped.nrrd, displacement.nrrd, ...}      (register=True)
      OUT/report/{report.html, summary.json}
      OUT/.medvol-cache/                                               (Prefect result records)

  Every step folder carries ``.medvol-step.json`` (its key); a rerun skips finished steps.
* :func:`batch_pipeline` — :func:`study_pipeline`'s steps for many studies, one study per task
  on a local thread pool, a Dask cluster or Ray (``runner``); a failed study does not stop the
  others; writes ``OUT/batch_summary.json`` and a summary artifact.
* :func:`ingest`, :func:`reconstruct`, :func:`register` — single steps;
  :func:`train_micdir` (:func:`medvol.registration.train_registration`) and
  :func:`train_pdunet` (:func:`medvol.recon.pdunet.train_pdunet`) — resumable training runs.

Everything runs without a Prefect server (Prefect starts its temporary local API); set
``PREFECT_SERVER_ANALYTICS_ENABLED=false`` on air-gapped machines. Imports are absolute so that
Prefect can load this file by path (``flows/pipeline.py:study_pipeline``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from medvol.errors import InputError
from medvol.flows import tasks as T
from medvol.flows.runners import gpu_request, make_task_runner
from medvol.registration.run import METHODS as _REGISTER_METHODS

__all__ = ["recon_params", "run_study", "study_pipeline", "batch_pipeline", "ingest",
           "reconstruct", "register", "train_micdir", "train_pdunet", "list_studies"]

log = logging.getLogger("medvol.flows")

#: registration methods: the one list of :mod:`medvol.registration.run`
REGISTER_METHODS = _REGISTER_METHODS


# --------------------------------------------------------------------------- parameters
def recon_params(*, geometry: str = "fan", views: int = 16, full_views: int = 360,
                 method: str = "tv", filter: str = "hann", n_iter: int | None = None,
                 lam: float | None = None, I0: float | None = None, seed: int = 0,
                 slices: str | None = None, downsample: int = 1,
                 backend: str = "auto") -> dict[str, Any]:
    """Validated keyword arguments of :func:`medvol.recon.reconstruct_from_volume`."""
    from medvol.recon import get_method
    from medvol.simulate import GEOMETRIES

    get_method(method)          # the registry's choice list
    if geometry not in GEOMETRIES:
        raise InputError(f"unknown geometry {geometry!r}", hint=f"use {', '.join(GEOMETRIES)}")
    if views < 1 or full_views < views:
        raise InputError(f"views {views} must be between 1 and full_views {full_views}")
    if downsample < 1:
        raise InputError(f"downsample must be at least 1, got {downsample}")
    return dict(geometry=geometry, views=int(views), full_views=int(full_views), method=method,
                filter=filter, n_iter=n_iter, lam=lam, I0=I0, seed=int(seed), slices=slices,
                downsample=int(downsample), backend=backend)


def list_studies(root: str | os.PathLike) -> list[Path]:
    """The study folders directly below ``root`` (hidden folders skipped), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("studies folder not found", path=root)
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


# --------------------------------------------------------------------------- one study
def _call(t, **kw) -> dict:
    """Run task ``t`` (in a flow or nested in a task); its record with ``status`` = ``cached`` when
    Prefect served it from the cache. A failed task re-raises its exception."""
    state = t(**kw, return_state=True)
    rec = state.result()  # raises the task's exception on failure
    if state.name == "Cached":
        rec = {**rec, "status": "cached"}
    return rec


def _sha(path: Path) -> str:
    from medvol.manifest import sha256_file

    return sha256_file(path)


def run_study(study_dir: str | os.PathLike, out: str | os.PathLike, *, recon: dict,
              register: bool = False, reference: str | os.PathLike | None = None,
              register_method: str = "affine", modality: str = "intra", resample: str = "auto",
              threads: int | None = None, overwrite: bool = False,
              cache_dir: str | os.PathLike | None = None, artifacts: bool = True) -> dict:
    """The study pipeline's steps as Prefect tasks (called from a flow, or nested in a task).

    Returns a JSON-able summary: ``study``, ``out``, ``status``, ``report``, ``steps`` (step,
    label, status ``computed`` | ``reused`` | ``cached``, key, folder, computed_at) and
    ``metrics`` per series.
    """
    study, out = Path(study_dir).resolve(), Path(out).resolve()
    if register:
        if reference is None:
            raise InputError("register=True needs a reference/atlas volume",
                             hint="pass reference=<volume.nrrd> (--reference)")
        reference = Path(reference).resolve()
        if not reference.is_file():
            raise InputError("reference volume not found", path=reference)
        if register_method not in REGISTER_METHODS:
            raise InputError(f"unknown registration method {register_method!r}",
                             hint=f"use one of {', '.join(REGISTER_METHODS)}")
    cache = Path(cache_dir) if cache_dir else out / T.CACHE_DIRNAME
    t0 = time.perf_counter()
    steps: list[dict] = []

    ing = _call(T.with_cache(T.ingest_task, cache), study_dir=str(study),
                folder=str(out / "ingest"), key=T.ingest_key(study, resample=resample),
                resample=resample, overwrite=overwrite)
    steps.append({**ing, "label": ""})

    recon_t = T.with_cache(T.recon_task, cache)
    recs = []
    for s in ing["series"]:
        vol_path = Path(ing["folder"]) / s["path"]
        r = _call(recon_t, volume_path=str(vol_path), folder=str(out / "recon" / s["label"]),
                  key=T.recon_key(s, recon), params=recon, threads=threads, overwrite=overwrite)
        r = {**r, "label": s["label"]}
        recs.append(r)
        steps.append(r)

    if register:
        reg_t = T.with_cache(T.register_task, cache)
        fixed_sha = _sha(reference)
        for r in recs:
            moving = Path(r["folder"]) / "recon.nrrd"
            key = T.register_key(fixed_sha, _sha(moving),
                                 {"method": register_method, "modality": modality})
            g = _call(reg_t, fixed_path=str(reference), moving_path=str(moving),
                      folder=str(out / "register" / r["label"]), key=key,
                      method=register_method, modality=modality, threads=threads,
                      overwrite=overwrite)
            steps.append({**g, "label": r["label"]})

    slim = [{k: v for k, v in s.items() if k != "status"} for s in steps]
    rep = _call(T.with_cache(T.report_task, cache), study_out=str(out),
                folder=str(out / "report"), key=T.report_key([s["key"] for s in steps]),
                steps=slim, overwrite=True)  # derived from the steps: regenerated when they change
    steps.append({**rep, "label": ""})

    summary = {
        "study": study.name, "out": str(out), "status": "completed",
        "report": str(out / "report" / "report.html"),
        "seconds": round(time.perf_counter() - t0, 3),
        "steps": [{k: s.get(k) for k in ("step", "label", "status", "key", "folder",
                                         "computed_at")} for s in steps],
        "metrics": {r["label"]: r.get("metrics", {}) for r in recs},
        "figures": [str(Path(r["folder"]) / f) for r in recs for f in r.get("files", [])
                    if f.endswith(".png")],
    }
    if artifacts:
        _artifact(f"medvol-study-{_short(out)}", study_markdown(summary),
                  "medvol study pipeline: metrics and outputs (no patient identifiers)")
    return summary


def _short(path: Path | str) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def study_markdown(summary: dict) -> str:
    """Markdown for a study's artifact: metric table, step states, links to report and PNGs."""
    lines = [f"### medvol study `{summary['study']}` — {summary['status']}", "",
             "| series | method | PSNR dB | SSIM | RMSE |", "|---|---|---|---|---|"]
    for label, ms in summary.get("metrics", {}).items():
        for name, m in ms.items():
            lines.append(f"| {label} | {name} | {_fmt(m.get('psnr_db'))} | {_fmt(m.get('ssim'))} "
                         f"| {_fmt(m.get('rmse'))} |")
    lines += ["", "| step | series | state |", "|---|---|---|"]
    lines += [f"| {s['step']} | {s['label'] or '—'} | {s['status']} |" for s in summary["steps"]]
    lines += ["", f"- [report.html]({Path(summary['report']).as_uri()})"]
    lines += [f"- [{Path(p).parent.name}/{Path(p).name}]({Path(p).as_uri()})"
              for p in summary.get("figures", [])]
    return "\n".join(lines) + "\n"


def _artifact(key: str, markdown: str, description: str) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=markdown, key=key, description=description)
    except Exception as e:  # artifacts are a convenience; never fail a run on them
        log.warning("could not create Prefect artifact %s: %s", key, e)


@flow(name="medvol-study", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def study_pipeline(study_dir: str, out: str, *, method: str = "tv", views: int = 16,
                   full_views: int = 360, geometry: str = "fan", n_iter: int | None = None,
                   lam: float | None = None, slices: str | None = None, downsample: int = 1,
                   noise_i0: float | None = None, seed: int = 0, backend: str = "auto",
                   resample: str = "auto", register: bool = False, reference: str | None = None,
                   register_method: str = "affine", modality: str = "intra",
                   threads: int | None = None, overwrite: bool = False) -> dict:
    """Ingest → reconstruct → (register) → report for one DICOM study into ``out``.

    Reconstruction options are those of ``medvol recon`` (sparse-view evaluation on the ingested
    CT: ``views``-fold fewer of ``full_views`` views, ``method`` fbp|sirt|cgls|tv, ``slices``
    ``"START:STOP"`` and ``downsample`` for quick runs). ``register=True`` registers every
    reconstruction to ``reference`` (a volume file, e.g. an atlas) with ``register_method``.
    Rerunning with the same inputs and parameters recomputes nothing (states ``Cached``).
    """
    params = recon_params(geometry=geometry, views=views, full_views=full_views, method=method,
                          n_iter=n_iter, lam=lam, I0=noise_i0, seed=seed, slices=slices,
                          downsample=downsample, backend=backend)
    return run_study(study_dir, out, recon=params, register=register, reference=reference,
                     register_method=register_method, modality=modality, resample=resample,
                     threads=threads, overwrite=overwrite)


# --------------------------------------------------------------------------- many studies
@task(name="study", cache_policy=NO_CACHE)
def study_task(study_dir: str, out: str, cfg: dict) -> dict:
    """One study (all its steps, as nested tasks) — the unit a Dask/Ray worker runs."""
    return run_study(study_dir, out, **cfg)


@flow(name="medvol-batch-map")
def _map_studies(studies: list[str], outs: list[str], cfg: dict, runner: str = "local",
                 gpus_per_study: float = 0) -> list[dict]:
    with gpu_request(runner, gpus_per_study):
        futs = [study_task.submit(s, o, cfg) for s, o in zip(studies, outs)]
    results = []
    for s, o, f in zip(studies, outs, futs):
        f.wait()
        st = f.state
        if st.is_completed():
            results.append(st.result())
            continue
        exc = st.result(raise_on_failure=False)
        err = (f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException)
               else str(st.message))
        results.append({"study": Path(s).name, "out": o, "status": "failed", "error": err})
    return results


@flow(name="medvol-batch", log_prints=True)
def batch_pipeline(study_dirs: list[str] | None = None, out: str = "medvol_out", *,
                   studies_root: str | None = None, study_outs: list[str] | None = None,
                   runner: str = "local", scheduler: str | None = None,
                   workers: int | None = None, gpus_per_study: float = 0, threads: int = 1,
                   method: str = "tv", views: int = 16, full_views: int = 360,
                   geometry: str = "fan", n_iter: int | None = None, lam: float | None = None,
                   slices: str | None = None, downsample: int = 1,
                   noise_i0: float | None = None, seed: int = 0, backend: str = "auto",
                   resample: str = "auto", register: bool = False, reference: str | None = None,
                   register_method: str = "affine", modality: str = "intra",
                   overwrite: bool = False) -> dict:
    """:func:`study_pipeline` over many studies, one study per task.

    Studies are ``study_dirs`` and/or the subfolders of ``studies_root``; each writes to
    ``out/<study folder name>`` (or ``study_outs``). ``runner`` local | dask | ray with
    ``scheduler`` (an existing cluster's address) or ``workers`` (a temporary local cluster); see
    :mod:`medvol.flows.runners`. ``threads`` pins torch/numba threads per study (1 by default so
    results are bit-identical whatever the runner). A failed study is recorded and the rest go
    on. Returns the summary also written to ``out/batch_summary.json``.
    """
    from medvol._atomic import atomic_write_text

    studies = [Path(s).resolve() for s in (study_dirs or [])]
    if studies_root:
        studies += [p.resolve() for p in list_studies(studies_root)]
    if not studies:
        raise InputError("no studies given", hint="pass study_dirs or studies_root")
    out_p = Path(out).resolve()
    if study_outs:
        if len(study_outs) != len(studies):
            raise InputError("study_outs must have one entry per study")
        outs = [Path(o).resolve() for o in study_outs]
    else:
        names = [s.name for s in studies]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"several studies are named {', '.join(dup)}",
                             hint="study folder names must be unique within a batch")
        outs = [out_p / s.name for s in studies]
    params = recon_params(geometry=geometry, views=views, full_views=full_views, method=method,
                          n_iter=n_iter, lam=lam, I0=noise_i0, seed=seed, slices=slices,
                          downsample=downsample, backend=backend)
    cfg = dict(recon=params, register=register, reference=reference,
               register_method=register_method, modality=modality, resample=resample,
               threads=threads, overwrite=overwrite, cache_dir=str(out_p / T.CACHE_DIRNAME))
    tr = make_task_runner(runner, address=scheduler, workers=workers,
                          gpus_per_worker=gpus_per_study)
    t0 = time.perf_counter()
    results = _map_studies.with_options(task_runner=tr)(
        [str(s) for s in studies], [str(o) for o in outs], cfg, runner=runner,
        gpus_per_study=gpus_per_study)
    summary = {"n_studies": len(results),
               "n_completed": sum(r["status"] == "completed" for r in results),
               "n_failed": sum(r["status"] == "failed" for r in results),
               "runner": runner, "seconds": round(time.perf_counter() - t0, 3),
               "studies": results}
    out_p.mkdir(parents=True, exist_ok=True)
    # the latest run's summary (a run log, replaced on every run)
    atomic_write_text(out_p / "batch_summary.json",
                      json.dumps(summary, indent=2, default=str) + "\n", overwrite=True)
    _artifact(f"medvol-batch-{_short(out_p)}", batch_markdown(summary),
              "medvol batch: per-study status, metrics and reports")
    for r in results:
        if r["status"] == "failed":
            print(f"study {r['study']} FAILED: {r['error']}")
    return summary


def batch_markdown(summary: dict) -> str:
    lines = [f"### medvol batch — {summary['n_completed']}/{summary['n_studies']} completed, "
             f"{summary['n_failed']} failed ({summary['runner']}, {summary['seconds']:.1f} s)", "",
             "| study | status | PSNR dB (recon) | SSIM (recon) | steps computed | report / error |",
             "|---|---|---|---|---|---|"]
    for r in summary["studies"]:
        if r["status"] != "completed":
            err = str(r.get("error", "")).replace("|", "\\|")
            lines.append(f"| {r['study']} | **failed** | | | | {err} |")
            continue
        ms = [m.get("recon", {}) for m in r.get("metrics", {}).values()]
        ps = ", ".join(_fmt(m.get("psnr_db")) for m in ms)
        ss = ", ".join(_fmt(m.get("ssim")) for m in ms)
        n = sum(s["status"] == "computed" for s in r["steps"])
        lines.append(f"| {r['study']} | completed | {ps} | {ss} | {n}/{len(r['steps'])} "
                     f"| [report]({Path(r['report']).as_uri()}) |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- single steps
@flow(name="medvol-ingest")
def ingest(study_dir: str, out: str, *, resample: str = "auto", overwrite: bool = False) -> dict:
    """DICOM study → ``out/<label>/volume.nrrd`` + ``out/manifest.json`` (cached by content)."""
    out_p = Path(out).resolve()
    return _call(T.with_cache(T.ingest_task, out_p.parent / T.CACHE_DIRNAME),
                 study_dir=str(Path(study_dir).resolve()), folder=str(out_p),
                 key=T.ingest_key(study_dir, resample=resample), resample=resample,
                 overwrite=overwrite)


@flow(name="medvol-reconstruct")
def reconstruct(volume: str, out: str, *, method: str = "tv", views: int = 16,
                full_views: int = 360, geometry: str = "fan", n_iter: int | None = None,
                lam: float | None = None, slices: str | None = None, downsample: int = 1,
                noise_i0: float | None = None, seed: int = 0, backend: str = "auto",
                threads: int | None = None, overwrite: bool = False) -> dict:
    """Sparse-view evaluation reconstruction of one volume file into ``out`` (as ``medvol recon``)."""
    params = recon_params(geometry=geometry, views=views, full_views=full_views, method=method,
                          n_iter=n_iter, lam=lam, I0=noise_i0, seed=seed, slices=slices,
                          downsample=downsample, backend=backend)
    vol, out_p = Path(volume).resolve(), Path(out).resolve()
    if not vol.is_file():
        raise InputError("volume not found", path=vol)
    series = {"series_uid_hash": None, "sha256": _sha(vol)}
    return _call(T.with_cache(T.recon_task, out_p.parent / T.CACHE_DIRNAME),
                 volume_path=str(vol), folder=str(out_p), key=T.recon_key(series, params),
                 params=params, threads=threads, overwrite=overwrite)


@flow(name="medvol-register")
def register(fixed: str, moving: str, out: str, *, method: str = "affine",
             modality: str = "intra", threads: int | None = None,
             overwrite: bool = False) -> dict:
    """Register ``moving`` to ``fixed`` (:func:`medvol.registration.run.run_register`): warped
    image, displacement field (NRRD + ITK .h5), Jacobian and report into ``out``."""
    if method not in REGISTER_METHODS:
        raise InputError(f"unknown registration method {method!r}",
                         hint=f"use one of {', '.join(REGISTER_METHODS)}")
    f, m, out_p = Path(fixed).resolve(), Path(moving).resolve(), Path(out).resolve()
    for p in (f, m):
        if not p.is_file():
            raise InputError("volume not found", path=p)
    key = T.register_key(_sha(f), _sha(m), {"method": method, "modality": modality})
    return _call(T.with_cache(T.register_task, out_p.parent / T.CACHE_DIRNAME),
                 fixed_path=str(f), moving_path=str(m), folder=str(out_p), key=key,
                 method=method, modality=modality, threads=threads, overwrite=overwrite)


@task(name="train-micdir", retries=1, retry_delay_seconds=[30],
      retry_condition_fn=T.retry_on_transient, cache_policy=NO_CACHE)
def _train_micdir_task(runs: str, models: list[str], modalities: list[str], steps: int,
                       batch: int, lr: float, seed: int, w_cycle: float,
                       time_limit: float | None, export: str | None, device: str,
                       init: str | None = None, data: str | None = None) -> dict:
    from medvol.registration.train import train_registration

    res = train_registration(data=data, models=models, modalities=modalities, steps=steps,
                             batch=batch, lr=lr, w_cycle=w_cycle, seed=seed, init=init, runs=runs,
                             time_limit_s=time_limit, export=export, device=device)
    return {k: v for k, v in res.items() if k != "runs"}


@flow(name="medvol-train-micdir", log_prints=True)
def train_micdir(runs: str = ".cache/registration/runs", *,
                 models: list[str] = ("micdir", "voxelmorph"), modalities: list[str] = ("intra",),
                 steps: int = 2000, batch: int = 1, lr: float = 1e-4, seed: int = 0,
                 w_cycle: float = 0.0, time_limit: float | None = None,
                 export: str | None = None, device: str = "auto", init: str | None = None,
                 data: str | None = None) -> dict:
    """Train (or resume from checkpoints in ``runs``) MICDIR and/or VoxelMorph on the
    known-deformation MRI pairs (:func:`medvol.registration.train_registration`, the job of
    ``medvol train micdir``, same defaults); export ``<model>_<modality>.safetensors`` into
    ``export``. ``data``: training-data root (else ``$MEDVOL_DATA``). ``init``: a folder of
    ``<model>_<modality>.safetensors`` to warm-start from (fresh optimiser)."""
    from medvol.registration.train import check_choices

    check_choices(list(models), list(modalities))
    res = _train_micdir_task(runs, list(models), list(modalities), steps, batch, lr, seed,
                             w_cycle, time_limit, export, device, init, data)
    rows = "\n".join(f"| {r['model']} | {r['modality']} | {r['steps']} | {r['seconds']} | "
                     f"{_fmt(r['last_loss'])} |" for r in res["models"])
    _artifact(f"medvol-train-micdir-{_short(Path(runs).resolve())}",
              "| model | modality | steps | seconds | last loss |\n|---|---|---|---|---|\n"
              + rows + "\n", "medvol MICDIR/VoxelMorph training")
    return res


@task(name="train-pdunet", retries=1, retry_delay_seconds=[30],
      retry_condition_fn=T.retry_on_transient, cache_policy=NO_CACHE)
def _train_pdunet_task(task_name: str, arch: str, steps: int, batch: int, lr: float, size: str,
                       seed: int, run_dir: str | None, time_limit: float | None, threads: int,
                       export: str | None, overwrite: bool, data: str | None = None,
                       init: str | None = None, noise_i0: float | None = None,
                       p_noise: float = 0.0, ssim_weight: float = 0.0,
                       sources: list[str] | None = None) -> dict:
    from medvol.recon.pdunet import train_pdunet as job

    res = job(task_name, arch, data=data, steps=steps, batch=batch, lr=lr, size=size, seed=seed,
              run_dir=run_dir, time_limit_s=time_limit, threads=threads, export=export,
              overwrite=overwrite, init=init, noise_i0=noise_i0, p_noise=p_noise,
              ssim_weight=ssim_weight, sources=sources)
    return {"step": res.steps_done, "finished": res.finished, "seconds": round(res.train_s, 1),
            "losses": [(h["step"], h["loss"]) for h in res.history],
            "run_dir": str(res.run_dir), **res.extra}


@flow(name="medvol-train-pdunet", log_prints=True)
def train_pdunet(task_name: str = "ct_x16", *, arch: str = "pdunet", steps: int = 1500,
                 batch: int = 4, lr: float = 1e-3, size: str = "small", seed: int = 1701,
                 run_dir: str | None = None, time_limit: float | None = None, threads: int = 1,
                 export: str | None = None, overwrite: bool = False,
                 data: str | None = None, init: str | None = None,
                 noise_i0: float | None = None, p_noise: float = 0.0,
                 ssim_weight: float = 0.0, sources: list[str] | None = None) -> dict:
    """Train (or resume from ``run_dir``'s checkpoint) PD-UNet or the Learned Primal-Dual
    baseline (:func:`medvol.recon.pdunet.train_pdunet`, the job of ``medvol train pdunet``) on
    ``task_name`` (``ct_x16`` | ``mri_x16``) with data from ``data`` (else ``$MEDVOL_DATA``);
    ``export`` writes the weights as safetensors. ``time_limit`` (s) stops after a checkpoint,
    so a scheduled run can continue training night after night. ``init``, ``noise_i0``,
    ``p_noise``, ``ssim_weight``, ``sources``: as ``medvol train pdunet --init/--noise-i0/
    --p-noise/--ssim-weight/--sources``."""
    from medvol.recon.pdunet import ARCHS

    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}", hint="use pdunet or lpd")
    res = _train_pdunet_task(task_name, arch, steps, batch, lr, size, seed, run_dir, time_limit,
                             threads, export, overwrite, data, init, noise_i0, p_noise,
                             ssim_weight, sources)
    losses = res.get("losses") or []
    last = losses[-1][1] if losses else None
    _artifact(f"medvol-train-{arch}-{task_name.replace('_', '-')}",
              "| arch | task | step | finished | last L1 | seconds |\n|---|---|---|---|---|---|\n"
              f"| {arch} | {task_name} | {res.get('step')} | {res.get('finished')} | {_fmt(last)} "
              f"| {_fmt(res.get('seconds'))} |\n", "medvol PD-UNet / LPD training")
    return res
