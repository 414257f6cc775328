"""medvol's warp / scaling and squaring vs MONAI's Warp / DVF2DDF, same run, same inputs.

    python benchmarks/warp.py [--threads 2] [--repeats 20] [--json out.json]

``medvol.models.micdir.warp`` and ``integrate_svf`` write out the arithmetic of MONAI's
``monai.networks.blocks.Warp`` / ``DVF2DDF`` (see their docstrings): this script checks, on
every size it times, that the outputs and gradients are bit-identical, and reports the time per
call of each (median of ``--repeats``) forward and forward + backward, at the field sizes the
registration code uses: the hippocampus refinement grid (16×24×24), the hippocampus box
(32×48×48) and an IXI-sized 2 mm brain grid (96×112×96).
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

SIZES = [(16, 24, 24), (32, 48, 48), (96, 112, 96)]


def _median_ms(fn, repeats: int) -> float:
    fn()                                                   # warm-up (allocations, threads)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(ts))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import torch
    from monai.networks.blocks import DVF2DDF, Warp

    from medvol.models.micdir import integrate_svf, warp

    torch.set_num_threads(a.threads)
    with warnings.catch_warnings():          # "Using PyTorch native grid_sample": intended
        warnings.simplefilter("ignore")
        monai_warp = Warp(mode="bilinear", padding_mode="zeros")
        monai_svf = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="zeros")
    rows = []
    print("| field | op | MONAI ms | medvol ms | speed-up | bit-identical |")
    print("|---|---|---|---|---|---|")
    for shape in SIZES:
        g = torch.Generator().manual_seed(0)
        img = torch.rand(1, 3, *shape, generator=g)
        ddf = 2 * torch.randn(1, 3, *shape, generator=g)
        reps = a.repeats if np.prod(shape) < 200_000 else max(3, a.repeats // 5)

        def fwd_bwd(fn):
            def run():
                d = ddf.clone().requires_grad_(True)
                out = fn(img, d)
                out.square().sum().backward()
                return out, d.grad
            return run

        ops = {
            "warp": (lambda: monai_warp(img, ddf), lambda: warp(img, ddf)),
            "warp fwd+bwd": (fwd_bwd(monai_warp), fwd_bwd(warp)),
            "scaling and squaring (7)": (lambda: monai_svf(ddf), lambda: integrate_svf(ddf, 7)),
        }
        for op, (ref, ours) in ops.items():
            r, o = ref(), ours()
            same = (all(torch.equal(x, y) for x, y in zip(r, o)) if isinstance(r, tuple)
                    else torch.equal(r, o))
            tm, to = _median_ms(ref, reps), _median_ms(ours, reps)
            rows.append({"shape": list(shape), "op": op, "monai_ms": tm, "medvol_ms": to,
                         "bit_identical": bool(same)})
            print(f"| {'×'.join(map(str, shape))} | {op} | {tm:.2f} | {to:.2f} | "
                  f"{tm / to:.2f}× | {'yes' if same else 'NO'} |", flush=True)
    out = {"threads": a.threads, "torch": torch.__version__, "rows": rows}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    if not all(r["bit_identical"] for r in rows):
        raise SystemExit("medvol's warp differs from MONAI's Warp: see the table")
    return out


if __name__ == "__main__":
    main()
