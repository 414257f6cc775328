"""Wheel acceptance: build the wheel, install it into a NEW venv, train from outside the repo.

Usage::

    .venv/bin/python benchmarks/wheel_train.py [--data ../shared/data] [--work /tmp/medvol-wheel]

Steps (each printed with its command, output tail, exit status and seconds):

1. ``pip wheel . -w WORK/whl --no-deps``
2. a new venv ``WORK/venv``: a copy of this checkout's ``.venv`` (same third-party packages,
   no download) with the editable medvol uninstalled and the wheel installed
   (``python -m pip``: the copied scripts' shebangs still name the original venv)
3. from ``WORK`` (no repository on ``sys.path``; ``MEDVOL_DATA`` unset; a fresh
   ``MEDVOL_CACHE``): ``medvol train pdunet --data DATA --steps 2`` and
   ``medvol train micdir --data DATA --steps 2``, each exporting weights that are then loaded
   with the installed package.

Takes a few minutes (copying the venv, building the registration sources); not a test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd, *, cwd, env=None) -> int:
    print(f"\n$ {' '.join(map(str, cmd))}   (cwd {cwd})", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip().splitlines()
    print("\n".join("  " + line for line in out[-12:]))
    print(f"  -> exit {r.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
    return r.returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvol-wheel"))
    a = ap.parse_args(argv)
    data, work = a.data.resolve(), a.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    py = REPO / ".venv" / "bin" / "python"
    if run([py, "-m", "pip", "wheel", ".", "-w", work / "whl", "--no-deps", "-q"], cwd=REPO):
        return 1
    wheel = next((work / "whl").glob("medvol-*.whl"))
    venv = work / "venv"
    shutil.copytree(REPO / ".venv", venv, symlinks=True)
    vpy = venv / "bin" / "python"
    run([vpy, "-m", "pip", "uninstall", "-y", "medvol"], cwd=work)
    if run([vpy, "-m", "pip", "install", "--no-deps", "-q", wheel], cwd=work):
        return 1
    env = {k: v for k, v in os.environ.items() if k not in ("MEDVOL_DATA", "PYTHONPATH")}
    env.update(MEDVOL_CACHE=str(work / "cache"), OMP_NUM_THREADS="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    med = venv / "bin" / "medvol"
    rc = run([vpy, "-c", "import medvol, sys; print(medvol.__file__); "
              "assert 'site-packages' in medvol.__file__"], cwd=work, env=env)
    rc |= run([med, "train", "pdunet", "--data", data, "--steps", "2", "--batch", "1",
               "--run-dir", work / "run_pdunet", "--export", work / "pdunet.safetensors"],
              cwd=work, env=env)
    rc |= run([med, "train", "micdir", "--data", data, "--steps", "2", "--runs", work / "runs",
               "--export", work / "reg", "--device", "cpu"], cwd=work, env=env)
    rc |= run([vpy, "-c", "from medvol.learned import load_weights; "
               "[print(p, load_weights(p)[1].arch) for p in "
               "('pdunet.safetensors', 'reg/micdir_intra.safetensors', "
               "'reg/voxelmorph_intra.safetensors')]"], cwd=work, env=env)
    rc |= run([med, "train", "pdunet", "--steps", "2"], cwd=work, env=env) != 2   # no --data
    print("\nwheel acceptance:", "PASS" if rc == 0 else "FAIL")
    return int(rc != 0)


if __name__ == "__main__":
    raise SystemExit(main())
