#!/bin/bash
# Fill .devrun/ (git-ignored through .git/info/exclude) with what benchmarks/gpu_session.sh needs
# on a device machine that has torch but no internet: MONAI's wheel and, for ASTRA's CUDA rows,
# .devrun/astra_cuda_py312.tar.gz (astra 2.5 for CPython 3.12 with CUDA 12's cudart, stripped of
# debug sections so the tree stays under the 64 MiB a device call carries, and the cuFFT
# forwarding shim built from benchmarks/cufft_shim.c). Run here, from the repository root.
set -euo pipefail
EXCL=$(git rev-parse --git-path info/exclude)
grep -qx '/.devrun/' "$EXCL" 2>/dev/null || { mkdir -p "$(dirname "$EXCL")"; echo /.devrun/ >> "$EXCL"; }
rm -rf .devrun && mkdir -p .devrun
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
       --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 "$@"; }
dl -d .devrun monai==1.6.1
dl -d "$TMP/w" astra-toolbox==2.5.0 nvidia-cuda-runtime-cu12==12.9.79
mkdir -p "$TMP/pk/nvidia/cufft/lib"
(cd "$TMP/pk" && unzip -q "$TMP"/w/astra_toolbox-*.whl 'astra/*' \
   && unzip -q "$TMP"/w/nvidia_cuda_runtime_cu12-*.whl 'nvidia/cuda_runtime/lib/libcudart.so.12' \
   && strip --strip-unneeded astra/libastra.so.0 astra/*.so nvidia/cuda_runtime/lib/libcudart.so.12)
gcc -O2 -shared -fPIC -Wl,--version-script=benchmarks/cufft_shim.map -Wl,-soname,libcufft.so.11 \
    -o "$TMP/pk/nvidia/cufft/lib/libcufft.so.11" benchmarks/cufft_shim.c -ldl
tar -C "$TMP/pk" -czf .devrun/astra_cuda_py312.tar.gz astra nvidia
du -sh .devrun
