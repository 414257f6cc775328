#!/bin/bash
# The prepared GPU check for a session that is lent a CUDA machine (run from the repo root there):
# the gpu-marked tests, VoCo pre-training speed and peak memory per config on CUDA, then the
# projector benchmark's CUDA rows (ours and ASTRA's) and the adjointness table.
#   Here, once:  bash benchmarks/gpu_prepare.sh   (fills the git-ignored .devrun/: MONAI's wheel,
#                and ASTRA 2.5 for CUDA 12 with a cuFFT shim, see that script; without the ASTRA
#                tarball the ASTRA tests and rows skip)
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
if [ -e .devrun/astra_cuda_py312.tar.gz ]; then
  mkdir -p /tmp/site && tar -C /tmp/site -xzf .devrun/astra_cuda_py312.tar.gz || exit 3
  CUFFT12=$(python3 -c "import glob, os, torch; r = os.path.dirname(os.path.dirname(torch.__file__))
print((glob.glob(r + '/nvidia/**/libcufft.so.12', recursive=True) + [''])[0])")
  if [ -n "$CUFFT12" ]; then
    export LD_LIBRARY_PATH=$(dirname "$CUFFT12")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  else
    echo "gpu_session: no libcufft.so.12 beside torch; ASTRA's CUDA FBP filter will fail" >&2
  fi
fi
for d in kernels models flows; do [ -e medvol/$d ] || ln -s ../$d medvol/$d; done
export PYTHONPATH=/tmp/site:$PWD
python3 -c 'import medvol.kernels, medvol.models.voco, monai' || exit 4
python3 -c 'import astra; print("astra", astra.__version__, "cuda", astra.use_cuda())' \
    > "$OUTDIR/astra.txt" 2>&1; cat "$OUTDIR/astra.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUTDIR/smi.txt" 2>&1
FAILED=""
timeout 180 python3 -m pytest -m gpu -p no:cacheprovider -q -rs tests/kernels \
    tests/recon/test_diffusion.py tests/pretrain/test_voco.py tests/registration/test_micdir.py \
    2>&1 | tee "$OUTDIR/gpu_tests.log" | tail -25
[ "${PIPESTATUS[0]}" = 0 ] || FAILED="$FAILED gpu-tests"
timeout 150 python3 benchmarks/voco_gpu.py --device cuda --configs cpu,gpu --steps 50 --warmup 5 \
    --json "$OUTDIR/voco_gpu.json" 2>&1 | tee "$OUTDIR/voco_gpu.log" | tail -8
[ "${PIPESTATUS[0]}" = 0 ] || FAILED="$FAILED voco_gpu"
timeout 120 python3 benchmarks/projectors.py --device cuda \
    --cases torch-cuda,astra-cuda,torch-cuda-cone,astra-cuda-cone 2>&1 | tee "$OUTDIR/projectors.log" | tail -12
[ "${PIPESTATUS[0]}" = 0 ] || FAILED="$FAILED projectors"
timeout 45 python3 benchmarks/adjointness.py 2>&1 | tee "$OUTDIR/adjointness.log" | tail -16
[ "${PIPESTATUS[0]}" = 0 ] || FAILED="$FAILED adjointness"
# every step runs whatever an earlier one did (the logs carry the results); the exit status says
# whether any failed (timeouts included), so a device call reports it in its rc
if [ -n "$FAILED" ]; then echo "gpu_session: failed:$FAILED" >&2; exit 1; fi
