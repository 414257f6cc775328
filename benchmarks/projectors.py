"""Projector benchmark: medvol kernels vs ASTRA vs scikit-image, same run, one markdown table.

    python benchmarks/projectors.py            # 512², 720 views, 729 bins, parallel beam (+3D cone)
    python benchmarks/projectors.py --quick    # smaller smoke run
    python benchmarks/projectors.py --device cuda   # add torch CUDA + ASTRA CUDA rows

Every case runs in a fresh subprocess, so that

* "first call" is what a new Python process pays before the first projection (numba loads its
  on-disk cache; the ``cold JIT`` row points ``NUMBA_CACHE_DIR`` at an empty folder and so shows
  the full compile cost);
* "peak mem" is the increase of the process's peak resident set size (``resource.getrusage``
  ``ru_maxrss``) from after the set-up (inputs allocated, operator built) to after all timed calls
  — it counts memory of C/C++ libraries (ASTRA) as well, unlike tracemalloc. GPU rows also give
  ``torch.cuda.max_memory_allocated`` (torch kernels only; ASTRA's GPU memory is not visible).

Timings are the median of ``--repeats`` (≥3) calls after one warm-up call, float32 input, wall
clock (``time.perf_counter``; with ``torch.cuda.synchronize()`` around CUDA calls). "CPU time" is
the process CPU time of the same calls summed over all threads (``time.process_time``): on a busy
shared machine it is the steadier number (wall ≈ CPU time / threads when the cores are free).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(n=128, views=180, det=183, n3=48, views3=60, rows3=48, det3=60)
    return dict(n=512, views=720, det=729, n3=128, views3=180, rows3=128, det3=160)


def _phantom(n: int) -> np.ndarray:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    return resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float32)


def _geom2d(sz):
    from medvol.geometry import ParallelBeam2D

    return ParallelBeam2D(np.linspace(0, np.pi, sz["views"], endpoint=False), n_det=sz["det"],
                          det_spacing=1.0)


def _geom3d(sz):
    from medvol.geometry import ConeBeam3D

    n = sz["n3"]
    return ConeBeam3D(np.linspace(0, 2 * np.pi, sz["views3"], endpoint=False),
                      n_rows=sz["rows3"], n_det=sz["det3"], det_spacing=1.6,
                      det_spacing_row=1.6, src_iso=4.0 * n, iso_det=2.0 * n)


def _vol3d(n: int) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n),) * 3, indexing="ij")
    return ((x / 0.8) ** 2 + (y / 0.6) ** 2 + (z / 0.7) ** 2 <= 1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# cases: name -> (label, setup(sizes) -> (fwd, bwd, sync, note))
# --------------------------------------------------------------------------------------------
def _case_medvol(sz, device="cpu", three_d=False, native=False):
    import torch

    from medvol.kernels import Projector

    if three_d:
        g, vs = _geom3d(sz), (sz["n3"],) * 3
        x = torch.from_numpy(_vol3d(sz["n3"]))
    else:
        g, vs = _geom2d(sz), (sz["n"], sz["n"])
        x = torch.from_numpy(_phantom(sz["n"]))
    A = Projector(g, vs, backend="torch", device=device)
    x = x.to(device)
    y = torch.zeros(g.sino_shape, dtype=torch.float32, device=device)
    if native:
        from medvol.kernels import _torch_kernels as tk

        fwd = lambda: tk.forward(x[None], g, A.spacing)  # noqa: E731
        bwd = lambda: tk.adjoint(y[None], g, vs, A.spacing)  # noqa: E731
    else:
        fwd = lambda: A(x)  # noqa: E731
        bwd = lambda: A.T(y)  # noqa: E731
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return fwd, bwd, sync, ""


def _case_astra(sz, kernel, three_d=False):
    from medvol.kernels import Projector

    if three_d:
        g, vs = _geom3d(sz), (sz["n3"],) * 3
        x = _vol3d(sz["n3"])
    else:
        g, vs = _geom2d(sz), (sz["n"], sz["n"])
        x = _phantom(sz["n"])
    A = Projector(g, vs, backend="astra", astra_kernel=None if three_d else kernel)
    y = np.zeros(g.sino_shape, np.float32)
    return (lambda: A(x)), (lambda: A.T(y)), (lambda: None), ""


def _case_skimage(sz):
    from skimage.transform import iradon, radon

    x = _phantom(sz["n"]).astype(np.float64)
    theta = np.linspace(0.0, 180.0, sz["views"], endpoint=False)
    sino = radon(x, theta=theta, circle=False)
    fwd = lambda: radon(x, theta=theta, circle=False)  # noqa: E731
    bwd = lambda: iradon(sino, theta=theta, filter_name=None, circle=False,  # noqa: E731
                         output_size=sz["n"])
    return fwd, bwd, (lambda: None), f"float64, {sino.shape[0]} bins (image diagonal)"


CASES = {
    "numba": ("medvol numba CPU (backend='torch')", lambda sz: _case_medvol(sz)),
    "numba-cold": ("medvol numba CPU, cold JIT (empty cache)", lambda sz: _case_medvol(sz)),
    "torch-cpu": ("medvol torch-native kernels, CPU", lambda sz: _case_medvol(sz, native=True)),
    "astra-line": ("ASTRA CPU `line`", lambda sz: _case_astra(sz, "line")),
    "astra-linear": ("ASTRA CPU `linear`", lambda sz: _case_astra(sz, "linear")),
    "astra-strip": ("ASTRA CPU `strip`", lambda sz: _case_astra(sz, "strip")),
    "skimage": ("scikit-image radon / iradon(filter_name=None)", _case_skimage),
    "numba-cone": ("medvol numba CPU, 3D cone", lambda sz: _case_medvol(sz, three_d=True)),
    "torch-cuda": ("medvol torch kernels, CUDA", lambda sz: _case_medvol(sz, "cuda")),
    "astra-cuda": ("ASTRA CUDA `cuda` (2D)", lambda sz: _case_astra(sz, "cuda")),
    "torch-cuda-cone": ("medvol torch kernels, CUDA, 3D cone",
                        lambda sz: _case_medvol(sz, "cuda", three_d=True)),
    "astra-cuda-cone": ("ASTRA CUDA 3D cone (`cone_vec`)",
                        lambda sz: _case_astra(sz, None, three_d=True)),
}
CPU_CASES = ["numba", "numba-cold", "torch-cpu", "astra-line", "astra-linear", "astra-strip",
             "skimage", "numba-cone"]
GPU_CASES = ["torch-cuda", "astra-cuda", "torch-cuda-cone", "astra-cuda-cone"]


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _child(name: str, quick: bool, repeats: int) -> dict:
    sz = _sizes(quick)
    label, setup = CASES[name]
    fwd, bwd, sync, note = setup(sz)
    base = _maxrss_mib()
    res = {"name": name, "label": label, "note": note}
    for key, fn in (("fwd", fwd), ("bwd", bwd)):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        res[f"{key}_first"] = time.perf_counter() - t0
        ts, cs = [], []
        for _ in range(repeats):
            sync()
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
            cs.append(time.process_time() - c0)
        res[key] = statistics.median(ts)
        res[f"{key}_cpu"] = statistics.median(cs)
    res["mem_mib"] = _maxrss_mib() - base
    if "cuda" in name and "torch" in name:
        import torch

        res["gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def _run_case(name: str, quick: bool, repeats: int) -> dict:
    env = dict(os.environ)
    tmp = None
    if name == "numba-cold":
        tmp = tempfile.TemporaryDirectory()
        env["NUMBA_CACHE_DIR"] = tmp.name
    cmd = [sys.executable, __file__, "--_child", name, "--repeats", str(repeats)]
    if quick:
        cmd.append("--quick")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    finally:
        if tmp is not None:
            tmp.cleanup()
    for line in p.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    err = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"name": name, "label": CASES[name][0], "error": err[:120]}


def _fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="add CUDA rows (auto: when torch sees a GPU)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per case (>= 3)")
    ap.add_argument("--cases", default="", help="comma-separated subset of: " + ",".join(CASES))
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    repeats = max(3, a.repeats)
    if a._child:
        print(json.dumps(_child(a._child, a.quick, repeats)), flush=True)
        return 0

    cases = list(CPU_CASES)
    want_gpu = a.device == "cuda"
    if a.device == "auto":
        try:
            import torch
            want_gpu = torch.cuda.is_available()
        except Exception:
            want_gpu = False
    if want_gpu:
        cases += GPU_CASES
    if a.cases:
        cases = [c for c in a.cases.split(",") if c in CASES]
    sz = _sizes(a.quick)
    import numba

    print(f"# Projector benchmark ({'quick' if a.quick else 'full'})\n")
    print(f"2D: {sz['n']}² image, {sz['views']} views, {sz['det']} bins, parallel beam, float32. "
          f"3D: {sz['n3']}³ volume, cone beam, {sz['views3']} views, "
          f"{sz['rows3']}×{sz['det3']} detector. CPU threads (numba): {numba.config.NUMBA_NUM_THREADS}"
          f"; os.cpu_count() = {os.cpu_count()}; median of {repeats} after 1 warm-up.\n")
    rows = []
    for c in cases:
        r = _run_case(c, a.quick, repeats)
        rows.append(r)
        print(f"  done: {c}", file=sys.stderr, flush=True)
    ref = next((r for r in rows if r["name"] == "astra-line" and "error" not in r), None)
    print("| case | forward s | back s | CPU time fwd / back s | first call fwd / back s | "
          "peak mem MiB | speed-up vs ASTRA `line` (fwd / back) | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['label']} | — | — | — | — | — | — | failed: {r['error']} |")
            continue
        sp = "—"
        if ref is not None and r["name"] not in ("numba-cone", "torch-cuda-cone",
                                                 "astra-cuda-cone"):
            sp = f"{ref['fwd'] / r['fwd']:.1f}× / {ref['bwd'] / r['bwd']:.1f}×"
        mem = _fmt(r["mem_mib"], 0)
        if "gpu_mib" in r:
            mem += f" (GPU {r['gpu_mib']:.0f})"
        print(f"| {r['label']} | {_fmt(r['fwd'])} | {_fmt(r['bwd'])} | "
              f"{_fmt(r['fwd_cpu'], 2)} / {_fmt(r['bwd_cpu'], 2)} | "
              f"{_fmt(r['fwd_first'], 2)} / {_fmt(r['bwd_first'], 2)} | {mem} | {sp} | "
              f"{r['note']} |")
    return 0


if __name__ == "__main__":
    try:
        import medvol.kernels  # noqa: F401  (installed, e.g. editable)
    except ImportError:  # running from a checkout without installing
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
