#!/bin/bash
# The prepared GPU check for a session that is lent a CUDA machine (run from the repo root there):
# the gpu-marked tests, then VoCo pre-training speed and peak memory per config on CUDA.
#   Here, once:  echo /.devrun/ >> .git/info/exclude; mkdir -p .devrun
#                python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                    --implementation cp --platform manylinux2014_x86_64 -d .devrun monai==1.6.1
#   On the GPU:  bash benchmarks/gpu_session.sh      (carry .devrun; results under $OUT or ./gpu_out)
# A plain checkout is not importable as `medvol` without an install: pyproject.toml maps
# medvol.kernels / medvol.models / medvol.flows from the top-level kernels/, models/, flows/, so
# this script links them into medvol/ (in the throw-away copy of a device machine only).
set -u
OUTDIR=${OUT:-gpu_out}; mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 PREFECT_SERVER_ANALYTICS_ENABLED=false MPLBACKEND=Agg
if ls .devrun/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      .devrun/*.whl || exit 3
fi
for d in kernels models flows; do [ -e medvol/$d ] || ln -s ../$d medvol/$d; done
export PYTHONPATH=/tmp/site:$PWD
python3 -c 'import medvol.kernels, medvol.models.voco, monai' || exit 4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUTDIR/smi.txt" 2>&1
timeout 200 python3 -m pytest -m gpu -p no:cacheprovider -q -rs tests/kernels \
    tests/recon/test_diffusion.py tests/pretrain/test_voco.py 2>&1 | tee "$OUTDIR/gpu_tests.log" | tail -25
timeout 200 python3 benchmarks/voco_gpu.py --device cuda --configs cpu,gpu --steps 50 --warmup 5 \
    --json "$OUTDIR/voco_gpu.json" 2>&1 | tee "$OUTDIR/voco_gpu.log" | tail -8
