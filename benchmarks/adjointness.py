"""Adjointness table: relative |<Ax, y> - <x, A^T y>| / (|Ax| |y|) for every geometry and backend.

    python benchmarks/adjointness.py

float64 for our kernels (numba on CPU, torch on CUDA); ASTRA computes in float32 internally.
ASTRA 3D rows appear only where a CUDA GPU and CUDA-enabled ASTRA exist.
"""
from __future__ import annotations

import numpy as np


def geometries():
    from medvol.geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D

    a = np.linspace(0, np.pi, 90, endpoint=False)
    a2 = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    return [
        (ParallelBeam2D(a, n_det=96, det_spacing=1.1, det_offset=1.7), (64, 80), (0.9, 0.9)),
        (FanBeam2D(a2, n_det=128, det_spacing=1.2, src_iso=300.0, iso_det=200.0, det_offset=-2.0),
         (64, 64), (1.0, 1.0)),
        (ParallelBeam3D(a, n_rows=40, n_det=64, det_spacing=1.0, det_spacing_row=1.1),
         (32, 48, 48), (1.0, 1.0, 1.0)),
        (ConeBeam3D(a2, n_rows=48, n_det=64, det_spacing=1.5, det_spacing_row=1.5, src_iso=200.0,
                    iso_det=100.0, det_offset=0.5), (32, 48, 48), (1.0, 1.0, 1.0)),
    ]


def main() -> None:
    import torch

    from medvol.errors import BackendError, GeometryError
    from medvol.kernels import Projector

    rows = []
    for g, shape, sp in geometries():
        for backend in ("torch", "astra"):
            try:
                A = Projector(g, shape, sp, backend=backend)
            except (BackendError, GeometryError) as e:
                rows.append((type(g).__name__, backend, "n/a", str(e).split(" — ")[0]))
                continue
            err = A.adjointness_test(dtype=torch.float64, seed=0)
            rows.append((type(g).__name__, backend, f"{err:.2e}",
                         "PASS" if err < 1e-5 else "above 1e-5"))
    print("| geometry | backend | relative adjointness error | < 1e-5 |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
