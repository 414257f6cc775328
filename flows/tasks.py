"""Prefect tasks of the medvol flows: each one calls one library function on files.

Tasks pass **paths, content hashes and small JSON records**, never arrays. Every step writes one
output folder atomically (built in a hidden sibling, then renamed into place) and puts a
``.medvol-step.json`` marker inside it that records the step's *key*:

``key = sha256(step, step version, medvol version, input content hashes, DICOM UID hashes,
parameters)``

Two layers make a rerun skip finished work:

1. **Prefect cache.** :func:`step_cache_key` returns the key, results (the small records) are
   persisted as JSON under ``OUT/.medvol-cache/`` (see :func:`with_cache`), so a finished step
   comes back in state ``Cached`` without running.
2. **Output markers.** If the Prefect record is missing (e.g. the process was killed after the
   output folder was renamed into place but before Prefect committed the record), the task body
   finds the marker with the same key and returns its record without recomputing (``status:
   reused``); output files are not touched. A marker with a *different* key means the folder holds
   results of other inputs/parameters: the step refuses (:class:`~medvol.errors.OutputExistsError`)
   unless ``overwrite=True``.

Retries: step tasks retry up to twice (after 2 s, then 10 s) — but only for transient failures
(:func:`is_transient`: I/O hiccups, timeouts, CUDA out-of-memory); an invalid input such as a
corrupt DICOM (:class:`~medvol.errors.DicomError`, any :class:`~medvol.errors.MedvolError`) or a
host ``MemoryError`` (the same input would exhaust memory again) fails at once.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

from prefect import task

from medvol._atomic import atomic_dir, atomic_write_text
from medvol._threads import set_threads  # re-exported: the flows pin threads per study
from medvol.errors import MedvolError, OutputExistsError

__all__ = [
    "MARKER", "CACHE_DIRNAME", "STEP_VERSIONS", "RETRY_DELAYS", "is_transient",
    "retry_on_transient", "step_key", "study_files", "ingest_key", "recon_key", "register_key",
    "report_key", "read_marker", "run_step", "step_cache_key", "with_cache", "set_threads",
    "ingest_step", "recon_step", "register_step", "report_step",
    "ingest_task", "recon_task", "register_task", "report_task",
]

MARKER = ".medvol-step.json"
CACHE_DIRNAME = ".medvol-cache"
#: bump a step's version when its code changes what it writes (invalidates old keys)
STEP_VERSIONS = {"ingest": "1", "reconstruct": "1", "register": "1", "report": "1"}
#: seconds to wait before the 1st and 2nd retry of a transiently failed step
RETRY_DELAYS = [2, 10]

# flows have a ``register`` parameter; pydantic warns that it shadows a BaseModel attribute of
# Prefect's parameter model (harmless: parameters validate and bind correctly)
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

_NOT_TRANSIENT_OS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                     FileExistsError)


# --------------------------------------------------------------------------- retries
def is_transient(exc: BaseException | None) -> bool:
    """Whether a failure is worth retrying.

    Never for medvol errors (bad input, corrupt DICOM, existing outputs …), missing files, a full
    or read-only disk, or a host ``MemoryError``; yes for other I/O errors (NFS hiccup),
    timeouts, dropped connections and CUDA out-of-memory errors.
    """
    if exc is None or isinstance(exc, (MedvolError, MemoryError)):
        return False  # a host MemoryError repeats with the same input: never retried
    if isinstance(exc, _NOT_TRANSIENT_OS):
        return False
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return False
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "cuda error" in text or "resource temporarily" in text


def retry_on_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only when :func:`is_transient` says so."""
    exc = state.result(raise_on_failure=False)
    return is_transient(exc if isinstance(exc, BaseException) else None)


# --------------------------------------------------------------------------- keys
def _medvol_version() -> str:
    import medvol

    return str(getattr(medvol, "__version__", "unknown"))


def step_key(step: str, **parts: Any) -> str:
    """``"<step>-<32 hex>"``: SHA-256 over the step, its code version, medvol's version and
    ``parts`` (hashes, UID hashes, parameters) as canonical JSON."""
    doc = {"step": step, "step_version": STEP_VERSIONS[step], "medvol": _medvol_version(), **parts}
    text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return f"{step}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def study_files(study_dir: str | os.PathLike) -> list[Path]:
    """The files of a study input: the file itself, or every non-hidden file below the folder."""
    p = Path(study_dir)
    if p.is_file():
        return [p]
    if not p.is_dir():
        from medvol.errors import InputError

        raise InputError("study folder not found", path=p, hint="give a folder of DICOM files")
    return sorted(f for f in p.rglob("*") if f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(p).parts))


def ingest_key(study_dir: str | os.PathLike, *, resample: str = "auto",
               fill_value: float | None = None, skip_bad_series: bool = False) -> str:
    """Key of the ingest step: content hash of every input file (names and order do not matter;
    the DICOM UIDs are part of the content) + ingest options."""
    from medvol.manifest import sha256_files

    files = study_files(study_dir)
    return step_key("ingest", inputs_sha256=sha256_files(files), n_files=len(files),
                    resample=resample, fill_value=fill_value, skip_bad_series=skip_bad_series)


def recon_key(series: dict, params: dict) -> str:
    """Key of one series' reconstruction: hashed SeriesInstanceUID + volume hash + parameters."""
    return step_key("reconstruct", series_uid_hash=series.get("series_uid_hash"),
                    volume_sha256=series["sha256"], params=params)


def register_key(fixed_sha256: str, moving_sha256: str, params: dict) -> str:
    return step_key("register", fixed_sha256=fixed_sha256, moving_sha256=moving_sha256,
                    params=params)


def report_key(step_keys: list[str]) -> str:
    return step_key("report", steps=sorted(step_keys))


# --------------------------------------------------------------------------- markers
def read_marker(folder: str | os.PathLike) -> dict | None:
    """The ``.medvol-step.json`` of a finished step folder, or None (missing or unreadable)."""
    try:
        doc = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "key" in doc else None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def run_step(step: str, folder: str | os.PathLike, key: str, compute: Callable[[Path], dict],
             *, overwrite: bool = False) -> dict:
    """Run ``compute(tmp_folder) -> record`` unless ``folder`` already holds this key's result.

    The folder is built atomically; the marker (key + record) is written inside it before the
    rename, so a folder either is complete with its marker or does not exist.

    Returns the record plus ``step``, ``key``, ``folder`` (absolute), ``computed_at`` and
    ``status`` (``"computed"`` or ``"reused"``).
    """
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is not None and marker["key"] == key:
        return _public(marker, folder, "reused")
    if folder.exists() and not overwrite:
        why = ("holds results of other inputs or parameters" if marker is not None
               else "exists but has no medvol step marker (not written by a finished step)")
        raise OutputExistsError(f"{step} output folder {why}", path=folder,
                                hint="choose another output folder or pass overwrite=True "
                                     "(--overwrite) to recompute")
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        record = compute(tmp)
        doc = {"medvol_step": 1, "step": step, "key": key, "computed_at": _now(),
               "record": record}
        atomic_write_text(tmp / MARKER, json.dumps(doc, indent=2, default=str) + "\n")
    return _public(doc, folder, "computed")


def _public(doc: dict, folder: Path, status: str) -> dict:
    return {**doc["record"], "step": doc["step"], "key": doc["key"], "folder": str(folder),
            "computed_at": doc["computed_at"], "status": status}


# --------------------------------------------------------------------------- Prefect cache
def step_cache_key(context, parameters: dict) -> str:
    """Prefect ``cache_key_fn``: the precomputed step ``key`` parameter.

    When the step's output folder does not carry a marker with this key (deleted or never
    finished), a stale Prefect record for the key is removed first, so Prefect cannot hand back a
    record whose files are gone.
    """
    key = parameters["key"]
    marker = read_marker(parameters["folder"])
    if marker is None or marker.get("key") != key:
        store = getattr(context, "result_store", None)
        base = getattr(getattr(store, "result_storage", None), "basepath", None)
        if base:
            with contextlib.suppress(OSError):
                (Path(os.path.expanduser(str(base))) / key).unlink()
    return key


def with_cache(t, cache_dir: str | os.PathLike):
    """``t`` with its results persisted as JSON under ``cache_dir`` (the Prefect cache store)."""
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    return t.with_options(result_storage=cache_dir, persist_result=True)


_STEP_OPTS = dict(retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
                  retry_condition_fn=retry_on_transient, cache_key_fn=step_cache_key,
                  persist_result=True, result_serializer="json")


# --------------------------------------------------------------------------- step bodies
def ingest_step(study_dir: str, folder: str, key: str, *, resample: str = "auto",
                fill_value: float | None = None, skip_bad_series: bool = False,
                overwrite: bool = False) -> dict:
    """DICOM study → ``folder/<label>/volume.nrrd`` + ``folder/manifest.json`` (medvol ingest).

    Returns ``{"series": [{label, path (relative to folder), sha256, series_uid_hash, modality,
    shape_zyx, spacing_mm}, ...], "n_series"}``.
    """
    def compute(tmp: Path) -> dict:
        from medvol.io import ingest_study

        # the ingest job builds its own folder atomically; ``overwrite`` only replaces our
        # private, still-empty temporary folder
        # split_repeats: every output the pipeline hands on is one 3D volume
        ingest_study(study_dir, tmp, overwrite=True, resample=resample, fmt="nrrd",
                     fill_value=fill_value, skip_bad_series=skip_bad_series,
                     split_repeats=True)
        man = json.loads((tmp / "manifest.json").read_text())
        series = []
        for o in man["outputs"]:
            meta = o.get("meta", {})
            series.append({"label": o["series"], "path": o["path"], "sha256": o["sha256"],
                           "series_uid_hash": meta.get("series_uid_hash"),
                           "modality": meta.get("modality"), "shape_zyx": o["shape_zyx"],
                           "spacing_mm": o["spacing_mm"]})
        return {"series": series, "n_series": len(series), "warnings": man.get("warnings", [])}

    return run_step("ingest", folder, key, compute, overwrite=overwrite)


def recon_step(volume_path: str, folder: str, key: str, *, params: dict,
               threads: int | None = None, overwrite: bool = False) -> dict:
    """Reconstruct one ingested series (sparse-view simulation + recon + metrics) into ``folder``
    (recon.nrrd, fbp.nrrd, PNGs, report.html, manifest.json) —
    :func:`medvol.recon.reconstruct_from_volume` + :func:`medvol.recon.write_recon_outputs`."""
    def compute(tmp: Path) -> dict:
        import medvol.io as mio
        from medvol.manifest import Manifest
        from medvol.recon import reconstruct_from_volume, write_recon_outputs

        set_threads(threads)
        vol = mio.read(volume_path)
        res = reconstruct_from_volume(vol, **params, progress=False)
        man = Manifest("recon", {**params, "input_kind": "volume"})
        man.add_input(volume_path, name=Path(volume_path).parent.name + "/volume.nrrd")
        write_recon_outputs(res, tmp, man)
        rec = res.record
        files = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("."))
        return {"metrics": rec.get("metrics", {}), "metric_units": rec.get("metric_units"),
                "method": rec.get("method"), "views_factor": rec.get("views_factor"),
                "shape_zyx": rec.get("shape_zyx"), "files": files,
                "seconds_reconstruct": rec.get("seconds_reconstruct")}

    return run_step("reconstruct", folder, key, compute, overwrite=overwrite)


def register_step(fixed_path: str, moving_path: str, folder: str, key: str, *,
                  method: str = "affine", modality: str = "intra", threads: int | None = None,
                  overwrite: bool = False) -> dict:
    """Register ``moving_path`` (e.g. a reconstruction) to ``fixed_path`` (reference / atlas) —
    :func:`medvol.registration.run.run_register` (warped.nrrd, displacement field, report)."""
    def compute(tmp: Path) -> dict:
        from medvol.registration.run import run_register

        set_threads(threads)
        run_register(fixed_path, moving_path, tmp, method=method, modality=modality,
                     overwrite=True)
        man = json.loads((tmp / "manifest.json").read_text())
        files = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("."))
        return {"metrics": man.get("metrics", {}), "method": method, "modality": modality,
                "files": files}

    return run_step("register", folder, key, compute, overwrite=overwrite)


def report_step(study_out: str, folder: str, key: str, *, steps: list[dict],
                overwrite: bool = False) -> dict:
    """Study report: ``folder/report.html`` (metrics of every series, figures linked from the step
    folders) and ``folder/summary.json``. No patient identifiers (labels are SeriesNumber +
    modality + UID hash)."""
    def compute(tmp: Path) -> dict:
        from medvol.report import write_html_report

        out = Path(study_out)
        rows, reg_rows, images, summary = [], [], [], {"series": {}}
        for s in steps:
            label = s.get("label", "")
            if s["step"] == "reconstruct":
                units = s.get("metric_units") or ""
                for name, m in (s.get("metrics") or {}).items():
                    rows.append({"series": label, "method": name, "PSNR dB": m.get("psnr_db"),
                                 "SSIM": m.get("ssim"), f"RMSE {units}".strip(): m.get("rmse")})
                summary["series"].setdefault(label, {})["reconstruct"] = {
                    "metrics": s.get("metrics"), "folder": os.path.relpath(s["folder"], out)}
                for png, cap in (("comparison.png", "reference | FBP | reconstruction"),
                                 ("recon_orthoslices.png", "reconstruction, orthogonal slices")):
                    if png in s.get("files", []):
                        images.append((f"{label}: {cap}", Path(s["folder"]) / png))
            elif s["step"] == "register":
                m = s.get("metrics") or {}
                reg_rows.append({"series": label, "method": s.get("method"),
                                 **{k: v for k, v in m.items() if isinstance(v, (int, float))}})
                summary["series"].setdefault(label, {})["register"] = {
                    "metrics": m, "folder": os.path.relpath(s["folder"], out)}
                if "checkerboard.png" in s.get("files", []):
                    images.append((f"{label}: registration checkerboard",
                                   Path(s["folder"]) / "checkerboard.png"))
        tables = {"Reconstruction quality vs reference": rows}
        if reg_rows:
            tables["Registration"] = reg_rows
        # the temporary folder is a sibling of the final one, so relative links stay valid
        write_html_report(tmp, title="medvol study pipeline", images=images, tables=tables,
                          params={"steps": ", ".join(sorted({s["step"] for s in steps}))})
        atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=2, sort_keys=True,
                                                           default=str) + "\n")
        return {"report": "report.html", "summary": "summary.json", "table": rows,
                "registration": reg_rows}

    return run_step("report", folder, key, compute, overwrite=overwrite)


# --------------------------------------------------------------------------- Prefect tasks
ingest_task = task(ingest_step, name="ingest", **_STEP_OPTS)
recon_task = task(recon_step, name="reconstruct", **_STEP_OPTS)
register_task = task(register_step, name="register", **_STEP_OPTS)
report_task = task(report_step, name="report", **_STEP_OPTS)


def unique_dest(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name.2``, ``.3`` … if taken."""
    dest = folder / name
    n = 2
    while dest.exists():
        dest = folder / f"{name}.{n}"
        n += 1
    return dest


def move_unique(src: Path, folder: Path) -> Path:
    """Rename ``src`` into ``folder`` under a free name (same filesystem: atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        dest = unique_dest(folder, src.name)
        try:
            os.rename(src, dest)
            return dest
        except OSError as e:  # a concurrent mover took the name (ENOTEMPTY/EEXIST): next one
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    shutil.move(str(src), str(unique_dest(folder, src.name)))  # pragma: no cover
    return dest  # pragma: no cover
