"""``medvol run-pipeline`` and ``medvol serve``: the Prefect flows from the command line.

Prefect is imported inside the commands (it costs 1.5–2.5 s), so ``medvol --help`` stays fast.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError, MedvolError


#: seconds medvol lets Prefect's temporary server take to start (Prefect's own default, 20 s,
#: is too short on a loaded machine); PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS wins
PREFECT_STARTUP_TIMEOUT_S = 120


def _prefect_env() -> None:
    """Offline-friendly Prefect defaults (before Prefect is imported); user settings win."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                          str(PREFECT_STARTUP_TIMEOUT_S))


def _check_out_outside(inputs: List[Path], out: Path) -> None:
    """``-o`` inside a study folder would be scanned as part of the study on every rerun."""
    o = Path(out).resolve()
    for s in inputs:
        r = Path(s).resolve()
        if r == o or r in o.parents:
            raise InputError("the output folder lies inside the study folder", path=out,
                             hint="choose an output folder outside the input")


_LOGGING_YAML = """\
version: 1
disable_existing_loggers: false
formatters:
  standard:
    format: "%(asctime)s %(levelname)s %(name)s: %(message)s"
handlers:
  file:
    class: logging.FileHandler
    filename: {log}
    encoding: utf-8
    formatter: standard
loggers:
  prefect: {{level: INFO, handlers: [file], propagate: false}}
  prefect.flow_runs: {{level: INFO, handlers: [file], propagate: false}}
  prefect.task_runs: {{level: INFO, handlers: [file], propagate: false}}
  prefect.server: {{level: WARNING, handlers: [file], propagate: false}}
  prefect.client: {{level: WARNING, handlers: [file], propagate: false}}
  uvicorn: {{level: WARNING, handlers: [file], propagate: false}}
  medvol: {{level: INFO, handlers: [file], propagate: false}}
root:
  level: WARNING
  handlers: [file]
"""


def _log_to_file(log_file: Path) -> None:
    """Route Prefect's logging (task tracebacks, server notices) to ``log_file`` through
    Prefect's own ``PREFECT_LOGGING_SETTINGS_PATH`` (must run before Prefect is imported): the
    terminal shows one line per failed study/step, the log file the full detail. A user's own
    logging settings file wins."""
    import json
    import tempfile

    import sys

    if os.environ.get("PREFECT_LOGGING_SETTINGS_PATH") or "prefect" in sys.modules:
        return  # the user's own settings win; an embedding process configured Prefect already
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd, cfg = tempfile.mkstemp(prefix="medvol-prefect-logging.", suffix=".yml")
    with os.fdopen(fd, "w") as fh:
        fh.write(_LOGGING_YAML.format(log=json.dumps(str(log_file.resolve()))))
    os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = cfg
    import atexit

    atexit.register(lambda: os.path.exists(cfg) and os.unlink(cfg))


#: run as ``python -c`` in place of ``python -m uvicorn``: the temporary Prefect server exits by
#: itself within a second once the medvol process that started it is gone (even after SIGKILL,
#: which leaves no chance to stop it)
_UVICORN_WATCHDOG = (
    "import os, runpy, sys, threading, time\n"
    "parent = os.getppid()\n"
    "def watch():\n"
    "    while True:\n"
    "        time.sleep(0.5)\n"
    "        if os.getppid() != parent:\n"
    "            os._exit(0)\n"
    "threading.Thread(target=watch, daemon=True).start()\n"
    "sys.argv = ['uvicorn'] + sys.argv[1:]\n"
    "runpy.run_module('uvicorn', run_name='__main__', alter_sys=True)\n")


def _server_dies_with_us() -> None:
    """Make Prefect's temporary server (a ``python -m uvicorn`` child) exit when this process
    ends by any means. Prefect stops it at normal exit and on SIGTERM (medvol turns SIGTERM
    into a clean exit); after ``kill -9`` only the watchdog above can."""
    if os.environ.get("PREFECT_API_URL"):
        return
    try:
        import subprocess
        import types

        import prefect.server.api.server as S
    except Exception:  # pragma: no cover - Prefect layout changed: keep its default
        return
    if getattr(S.SubprocessASGIServer, "_medvol_watchdog", False):
        return
    orig = S.SubprocessASGIServer._run_uvicorn_command

    def run_uvicorn(self):
        def popen(args, **kw):
            args = list(args)
            if args[1:3] == ["-m", "uvicorn"]:
                args = [args[0], "-c", _UVICORN_WATCHDOG] + args[3:]
            return subprocess.Popen(args, **kw)

        S.subprocess = types.SimpleNamespace(**{**vars(subprocess), "Popen": popen})
        try:
            return orig(self)
        finally:
            S.subprocess = subprocess

    S.SubprocessASGIServer._run_uvicorn_command = run_uvicorn
    S.SubprocessASGIServer._medvol_watchdog = True


def _server_timeout(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and "Timed out" in str(e) and "server" in str(e).lower()


def run_pipeline(
    study_dir: List[Path] = typer.Argument(
        ..., help="DICOM study folder(s). One folder: outputs go straight into OUT. Several: "
                  "a batch, OUT/<folder name>/ per study."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (rerun resumes)."),
    runner: str = typer.Option("local", help="local | dask | ray (one study per task)."),
    scheduler: Optional[str] = typer.Option(
        None, help="Address of an existing cluster: Dask tcp://host:8786, Ray ray://host:10001."),
    workers: Optional[int] = typer.Option(
        None, help="Parallel studies: local threads (default 1) or workers of a temporary "
                   "Dask LocalCluster / local Ray (default 2)."),
    gpus_per_study: float = typer.Option(0, help="GPUs each study task requests (Dask resource "
                                                 "'GPU' / Ray num_gpus)."),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads per study for torch/numba (batch default 1: reproducible)."),
    method: str = typer.Option("tv", help="fbp | sirt | cgls | tv"),
    views: int = typer.Option(16, help="Sparse-view factor: keep every K-th view."),
    full_views: int = typer.Option(360, help="Views of the full acquisition."),
    geometry: str = typer.Option("fan", help="fan | parallel | cone"),
    n_iter: Optional[int] = typer.Option(None, help="Iterations of sirt/cgls/tv."),
    slices: Optional[str] = typer.Option(None, help="Axial slices START:STOP[:STEP]."),
    downsample: int = typer.Option(1, help="In-plane block averaging (quick runs)."),
    register: bool = typer.Option(False, "--register", help="Register each reconstruction to "
                                                            "--reference."),
    reference: Optional[Path] = typer.Option(None, help="Reference/atlas volume for --register."),
    register_method: str = typer.Option("affine", help="micdir | voxelmorph | bspline | affine"),
    overwrite: bool = typer.Option(False, help="Recompute steps whose folders hold results of "
                                               "other inputs or parameters."),
) -> None:
    """Run the study pipeline (ingest → reconstruct → register → report) as a Prefect flow.

    Needs no Prefect server: without PREFECT_API_URL, Prefect starts a temporary local one (about
    15 s; medvol allows it 120 s, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS overrides).
    A rerun with the same inputs and options skips every finished step. The terminal shows one
    line per failed study/step; Prefect's full log goes to OUT/pipeline.log. OUT must not lie
    inside a study folder.

    Examples:

        medvol run-pipeline study/ -o out/ --slices 10:14 --downsample 2

        medvol run-pipeline studies/* -o out/ --runner dask --workers 4

        medvol run-pipeline studies/* -o out/ --runner dask --scheduler tcp://head:8786
    """
    from .. import _optional, _progress

    _optional.require("flows", "medvol run-pipeline")   # no Prefect: one line, exit code 6
    _prefect_env()
    _check_out_outside(list(study_dir) + ([reference] if reference else []), out)
    for s in study_dir:
        if not Path(s).exists():
            raise InputError("study folder not found", path=s, hint="give a folder of DICOM files")
    if register and (reference is None or not Path(reference).is_file()):
        raise InputError("reference volume not found" if reference else
                         "--register needs --reference", path=reference)
    if views < 1 or full_views < views:
        raise InputError(f"--views {views} must be between 1 and --full-views {full_views}")
    from rich.console import Console

    _log_to_file(Path(out) / "pipeline.log")
    _server_dies_with_us()
    console = Console(highlight=False)
    try:
        _progress.start_prefect_server(progress=True)    # status line while it starts (terminal)
        _run(console, study_dir, out, runner, scheduler, workers, gpus_per_study, threads,
             method, views, full_views, geometry, n_iter, slices, downsample, register,
             reference, register_method, overwrite)
    except MedvolError:
        raise
    except Exception as e:
        if _server_timeout(e):
            raise MedvolError(
                f"Prefect's temporary server did not start within "
                f"{os.environ.get('PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS')} s",
                hint="the machine is busy: raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
                     ", or start `prefect server start` and set PREFECT_API_URL") from None
        raise


def _run(console, study_dir, out, runner, scheduler, workers, gpus_per_study, threads, method,
         views, full_views, geometry, n_iter, slices, downsample, register, reference,
         register_method, overwrite) -> None:
    from .._text import escape_markup, one_line
    from ..flows.pipeline import batch_pipeline, study_pipeline

    opts = dict(method=method, views=views, full_views=full_views, geometry=geometry,
                n_iter=n_iter, slices=slices, downsample=downsample, register=register,
                reference=str(reference) if reference else None,
                register_method=register_method, overwrite=overwrite)
    if len(study_dir) == 1 and runner == "local" and not scheduler:
        s = study_pipeline(str(study_dir[0]), str(out), threads=threads, **opts)
        _print_study(console, s)
        return
    outs = [str(out)] if len(study_dir) == 1 else None
    summary = batch_pipeline([str(p) for p in study_dir], str(out), study_outs=outs,
                             runner=runner, scheduler=scheduler, workers=workers,
                             gpus_per_study=gpus_per_study,
                             threads=1 if threads is None else threads, **opts)
    for s in summary["studies"]:
        if s["status"] == "completed":
            _print_study(console, s)
        else:
            console.print(f"[red]{escape_markup(s['study'])}: failed[/red] — "
                          f"{escape_markup(one_line(s['error']))}", markup=True)
    console.print(f"{summary['n_completed']}/{summary['n_studies']} studies completed in "
                  f"{summary['seconds']:.1f} s; summary: {Path(out) / 'batch_summary.json'}")
    if summary["n_failed"]:
        raise MedvolError(f"{summary['n_failed']} of {summary['n_studies']} studies failed",
                          hint=f"see {Path(out) / 'batch_summary.json'}")


def _print_study(console, s: dict) -> None:
    states = ", ".join(f"{st['step']}{'[' + st['label'] + ']' if st['label'] else ''}="
                       f"{st['status']}" for st in s["steps"])
    from .._text import sanitize

    console.print(sanitize(f"{s['study']}: {states}"), markup=False)
    for label, ms in s.get("metrics", {}).items():
        for name, m in ms.items():
            console.print(f"  {label} {name:5s} PSNR {m['psnr_db']:.2f} dB  SSIM {m['ssim']:.4f}",
                          markup=False)
    console.print(sanitize(f"  report: {s['report']}"), markup=False)


def api_url() -> str | None:
    """The configured Prefect API URL (environment or Prefect profile), or None."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    try:
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    except Exception:  # pragma: no cover - prefect missing or broken profile
        return None


def build_deployments(*, inbox: Path | None = None, studies: Path | None = None,
                      out: Path = Path("medvol_out"), cron: str = "0 2 * * *",
                      watch_interval: int = 60, settle_seconds: float = 30.0,
                      method: str = "tv", views: int = 16) -> list:
    """The deployments ``medvol serve`` runs: a nightly batch over ``studies`` (cron) and the
    inbox watcher (every ``watch_interval`` s). Returns Prefect ``RunnerDeployment`` objects."""
    from ..flows.pipeline import batch_pipeline
    from ..flows.watch import watch_inbox

    if inbox is None and studies is None:
        raise InputError("nothing to serve", hint="give --inbox DIR and/or --studies DIR")
    deps = []
    if studies is not None:
        if not Path(studies).is_dir():
            raise InputError("studies folder not found", path=studies)
        deps.append(batch_pipeline.to_deployment(
            name="medvol-nightly-batch", cron=cron, tags=["medvol"],
            parameters={"studies_root": str(Path(studies).resolve()),
                        "out": str(Path(out).resolve()), "method": method, "views": views}))
    if inbox is not None:
        if not Path(inbox).is_dir():
            raise InputError("inbox folder not found", path=inbox, hint="create it first")
        deps.append(watch_inbox.to_deployment(
            name="medvol-watch-inbox", interval=watch_interval, tags=["medvol"],
            parameters={"inbox": str(Path(inbox).resolve()), "out": str(Path(out).resolve()),
                        "settle_seconds": settle_seconds, "method": method, "views": views}))
    return deps


def serve(
    inbox: Optional[Path] = typer.Option(None, help="Watch this folder for new studies."),
    studies: Optional[Path] = typer.Option(None, help="Folder of study folders for the "
                                                      "scheduled batch (--cron)."),
    out: Path = typer.Option(Path("medvol_out"), "-o", "--out", help="Output root."),
    cron: str = typer.Option("0 2 * * *", help="Cron schedule of the batch (server time zone)."),
    watch_interval: int = typer.Option(60, help="Seconds between inbox polls."),
    settle_seconds: float = typer.Option(30.0, help="Ignore inbox studies modified this "
                                                    "recently (copy still running)."),
    method: str = typer.Option("tv", help="fbp | sirt | cgls | tv"),
    views: int = typer.Option(16, help="Sparse-view factor."),
) -> None:
    """Serve medvol's deployments (scheduled batch, inbox watcher) until Ctrl-C.

    Schedules need a real Prefect server: start one with `prefect server start` and set
    PREFECT_API_URL (e.g. http://127.0.0.1:4200/api) in this shell first. The terminal shows
    one line per failed study; Prefect's full log goes to OUT/serve.log.

    Examples:

        medvol serve --inbox /data/inbox -o /data/out

        medvol serve --studies /data/studies --cron "0 2 * * *" -o /data/out
    """
    _prefect_env()
    from .._optional import require
    require("flows", "medvol serve")
    if not api_url():
        raise MedvolError(
            "no Prefect server configured (PREFECT_API_URL is not set); schedules cannot run on "
            "Prefect's temporary server",
            hint="start one in another terminal with `prefect server start --host 127.0.0.1 "
                 "--port 4200`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api` and "
                 "rerun `medvol serve`")
    _log_to_file(Path(out) / "serve.log")
    deps = build_deployments(inbox=inbox, studies=studies, out=out, cron=cron,
                             watch_interval=watch_interval, settle_seconds=settle_seconds,
                             method=method, views=views)
    from prefect import serve as prefect_serve

    prefect_serve(*deps)
