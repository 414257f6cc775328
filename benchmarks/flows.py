"""Prefect flow benchmarks: Dask batch vs sequential, and Prefect's overhead per task.

Run from the repository root (about 2–3 minutes on 2 cores)::

    .venv/bin/python benchmarks/flows.py [--studies 4] [--workers 2] [--n-iter 100]

Studies are slices of the bundled GE head CT (sample_data/dicom/ct_head_ge_tilt), 4 slices each,
reconstructed with TV at 16x fewer views. Every run writes into a fresh folder, so nothing is
cached. Prefect runs on its temporary local server (PREFECT_HOME in a temporary folder,
telemetry off). Prints two tables:

1. batch wall time: sequential (local runner, 1 study at a time, 1 thread per study) vs a Dask
   LocalCluster (N workers × 1 thread), plus the same studies through the library alone;
2. Prefect overhead per task: a flow of K trivial tasks vs calling the function K times.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "dicom" / "ct_head_ge_tilt"


def make_studies(root: Path, n: int) -> list[Path]:
    files = sorted(SAMPLE.glob("*.dcm"))
    out = []
    for i in range(n):
        d = root / f"study{i}"
        d.mkdir(parents=True)
        for f in files[(4 * i) % (len(files) - 4):][:4]:
            shutil.copy(f, d / f.name)
        out.append(d)
    return out


def library_only(studies: list[Path], out: Path, recon: dict) -> float:
    """The same work without Prefect: ingest (CLI job) + reconstruct + write outputs + report."""
    from medvol.flows import tasks as T

    T.set_threads(1)
    t0 = time.perf_counter()
    for s in studies:
        o = out / s.name
        ing = T.ingest_step(str(s), str(o / "ingest"), T.ingest_key(s))
        for ser in ing["series"]:
            T.recon_step(str(Path(ing["folder"]) / ser["path"]), str(o / "recon" / ser["label"]),
                         T.recon_key(ser, recon), params=recon, threads=1)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n-iter", type=int, default=100)
    p.add_argument("--tasks", type=int, default=50, help="trivial tasks for the overhead test")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="medvol-bench-flows-"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    try:
        from prefect import flow, task

        from medvol.flows.pipeline import batch_pipeline, recon_params

        studies = make_studies(tmp / "studies", a.studies)
        opts = dict(method="tv", n_iter=a.n_iter, views=16, downsample=2)
        recon = recon_params(**opts)

        @task
        def noop(i):
            return i

        @flow
        def warmup():
            return noop(0)

        t0 = time.perf_counter()
        warmup()                                   # starts the temporary server
        t_server = time.perf_counter() - t0

        load0 = os.getloadavg()[0]
        t_lib = library_only(studies, tmp / "lib", recon)
        rows = [("library only (no Prefect)", t_lib, 1)]

        def batch(tag, **kw):
            t0 = time.perf_counter()
            s = batch_pipeline([str(x) for x in studies], str(tmp / tag), threads=1, **opts, **kw)
            assert s["n_completed"] == a.studies, s
            return time.perf_counter() - t0

        rows.append(("Prefect, local runner, sequential", batch("seq", runner="local",
                                                                workers=1), 1))
        rows.append((f"Prefect, Dask LocalCluster {a.workers}x1 (incl. start)",
                     batch("dask", runner="dask", workers=a.workers), a.workers))
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.run(lambda: __import__("medvol.flows.tasks") and __import__("torch"))
            t_start = time.perf_counter() - t0
            rows.append((f"Prefect, Dask {a.workers}x1, warm cluster", batch(
                "dask-warm", runner="dask", scheduler=cluster.scheduler_address), a.workers))
        load1 = os.getloadavg()[0]
        seq = rows[1][1]
        print(f"\nBatch of {a.studies} studies (4 CT slices each, 2x downsampled to 261x256 "
              f"→ ~4 slices of 260x256, TV {a.n_iter} iterations, 16x fewer views); "
              f"{os.cpu_count()} CPU cores, load average {load0:.1f} → {load1:.1f}; temporary "
              f"server start {t_server:.1f} s and warm-cluster start + imports {t_start:.1f} s "
              "excluded)")
        print(f"| {'run':40s} | {'wall s':>7s} | {'s/study':>7s} | {'speed-up vs sequential':>22s} |")
        print(f"|{'-' * 42}|{'-' * 9}|{'-' * 9}|{'-' * 24}|")
        for name, dt, _ in rows:
            print(f"| {name:40s} | {dt:7.1f} | {dt / a.studies:7.2f} | {seq / dt:22.2f} |")

        @flow
        def many(n: int):
            return [noop(i) for i in range(n)]

        @flow
        def many_submit(n: int):
            return [f.result() for f in [noop.submit(i) for i in range(n)]]

        def timed(fn, *args):
            t0 = time.perf_counter()
            fn(*args)
            return time.perf_counter() - t0

        t_plain = timed(lambda: [noop.fn(i) for i in range(a.tasks)])
        many(2)
        t_empty = min(timed(many, 0) for _ in range(3))
        t_flow = min(timed(many, a.tasks) for _ in range(2))
        t_sub = min(timed(many_submit, a.tasks) for _ in range(2))
        print(f"\nPrefect overhead per task ({a.tasks} trivial tasks; empty flow run "
              f"{t_empty:.2f} s subtracted)")
        print("| call style | per task ms |\n|---|---|")
        print(f"| plain function | {1000 * t_plain / a.tasks:.3f} |")
        print(f"| task called in a flow | {1000 * (t_flow - t_empty) / a.tasks:.1f} |")
        print(f"| task.submit on the thread pool | {1000 * (t_sub - t_empty) / a.tasks:.1f} |")
        print(f"| per study, batch vs library ({a.studies} studies, 4 tasks each) | "
              f"{1000 * (rows[1][1] - t_lib) / a.studies / 4:.0f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
