"""Predict fluorescence from a (sparse) transmitted-light stack; write OME-TIFF + NRRD + manifest.

``predict_stack`` reads an Allen-Cell-style OME-TIFF (``medvol.ssp.data.read_ome_tiff``), takes
the transmitted-light channel, keeps the global slice set ``z[::r]`` (or, with
``sparse_input=True``, treats the file's slices as the acquired sparse set), prefix-upsamples,
runs the network with Gaussian 50 %-overlap sliding windows and writes

* ``prediction.ome.tif`` — ``(C, Z, Y, X)`` float32 with ``PhysicalSizeX/Y/Z`` in µm;
* ``prediction_<channel>.nrrd`` — one 3D NRRD per channel, ``space directions`` in µm;
* ``manifest.json`` — inputs (SHA-256), parameters, kept z indices, weights, outputs.

Outputs are in the z-score units of the model's training targets (``units`` in the manifest).
A 2D-output model (``depth_out = 1``, e.g. the ISL maximum-projection models) writes one plane.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputExistsError, WeightsError

__all__ = ["SHIPPED", "resolve_weights", "predict_array", "predict_stack", "write_outputs"]

#: shipped weights (``models/weights/<name>.safetensors``)
SHIPPED = ("sparsessp_isl_r2", "sparsessp_isl_r4", "sparsessp_isl_r8", "sparsessp_fnet_isl_dense",
           "sparsessp_surrogate3d_r4")
_TL_NAMES = re.compile(r"(^|[^a-z])(tl|bright|brightfield|phase|dic|transmitted|trans)([^a-z]|$)",
                       re.I)


def resolve_weights(weights: str | None, ratio: int) -> Path:
    """A shipped name, a path, or (``None``) the shipped ISL model for ``ratio``."""
    from medvol.models import __file__ as mfile

    wdir = Path(mfile).resolve().parent / "weights"
    if weights is None:
        weights = "sparsessp_fnet_isl_dense" if ratio == 1 else f"sparsessp_isl_r{ratio}"
    if weights in SHIPPED or (wdir / f"{weights}.safetensors").exists():
        p = wdir / f"{weights}.safetensors"
        if not p.exists():
            raise WeightsError(f"shipped weights {weights!r} are not installed", path=p,
                               hint="reinstall medvol or pass --weights FILE")
        return p
    p = Path(weights)
    if p.suffix != ".safetensors":
        raise WeightsError(f"unknown weights {weights!r}; give one of {', '.join(SHIPPED)} or a "
                           ".safetensors file")
    if not p.exists():
        raise WeightsError("weights file not found", path=p)
    return p


def _pick_tl(names: list, tl_channel) -> int:
    if tl_channel is None:
        hits = [i for i, n in enumerate(names) if _TL_NAMES.search(str(n))]
        return hits[0] if hits else 0
    if isinstance(tl_channel, int) or str(tl_channel).isdigit():
        i = int(tl_channel)
        if not 0 <= i < len(names):
            raise InputError(f"--tl-channel {i} is out of range (the stack has {len(names)} "
                             f"channels: {', '.join(map(str, names))})")
        return i
    if tl_channel in names:
        return names.index(tl_channel)
    raise InputError(f"no channel named {tl_channel!r} (channels: {', '.join(map(str, names))})")


def predict_array(model, info: dict, tl: np.ndarray, ratio: int, *,
                  sparse_input: bool = False) -> tuple[np.ndarray, list]:
    """Predict ``(C_out, D_out_total, Y, X)`` from a TL stack ``(Z, Y, X)``.

    Returns ``(prediction, kept)``; ``kept`` are the z indices (on the dense grid) that were used.
    """
    from . import data as D
    from .infer import sliding_predict
    from .sparsify import prefix_upsample, sparse_input as make_sparse

    cfg = info["config"]
    extra = info.get("extra") or {}
    trained_ratio = int(extra.get("ratio", ratio))
    if trained_ratio != ratio:
        raise InputError(f"these weights were trained for sparse ratio {trained_ratio}, not "
                         f"{ratio}", hint=f"pass --ratio {trained_ratio} or other --weights")
    tl = np.asarray(tl, dtype=np.float32)
    if tl.ndim != 3 or min(tl.shape) < 1:
        raise InputError(f"transmitted-light stack must be (Z, Y, X), got {tl.shape}")
    if not np.isfinite(tl).all():
        raise InputError("transmitted-light stack contains NaN/inf")
    if sparse_input:
        n = tl.shape[0]
        depth = (n - 1) * ratio + 1
        kept = list(range(0, depth, ratio))
    else:
        depth = tl.shape[0]
        kept = list(range(0, depth, ratio))
    z, _, _ = D.zscore(tl)
    net_d = int(cfg["depth_in"])
    d_out = int(cfg["depth_out"])
    roi = int(extra.get("roi", 128 if d_out == 1 else 64))
    div = 2 ** len(cfg["widths"])
    roi = max(div, roi - roi % div)
    if d_out == 1:
        if depth > net_d:
            raise InputError(f"the stack has {depth} z-slices; this 2D-output model reads at most "
                             f"{net_d}", hint="crop the stack in z or use a 3D model")
        if sparse_input:
            x = prefix_upsample(z, ratio, depth, axis=0)
            x = np.take(x, np.minimum(np.arange(net_d), depth - 1), axis=0)
        else:
            x, _ = make_sparse(z, ratio, net_d, axis=0)
        pred = sliding_predict(model, x[None], (net_d, roi, roi), depth_out=1)
    else:
        if sparse_input:
            x = prefix_upsample(z, ratio, depth, axis=0)
        else:
            x, _ = make_sparse(z, ratio, None, axis=0)
        pad = max(0, net_d - depth)
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        pred = sliding_predict(model, x[None], (net_d, roi, roi), depth_out=net_d)[:, :depth]
    return pred.astype(np.float32), kept


def write_outputs(pred: np.ndarray, out_dir: Path, spacing_zyx: tuple, channels: list) -> list:
    """Write ``prediction.ome.tif`` and one NRRD per channel into ``out_dir`` (spacing in µm)."""
    import nrrd
    import tifffile

    sz, sy, sx = (float(s) for s in spacing_zyx)
    files = []
    tif = out_dir / "prediction.ome.tif"
    tifffile.imwrite(tif, pred.astype(np.float32), ome=True, photometric="minisblack",
                     metadata={"axes": "CZYX", "PhysicalSizeX": sx, "PhysicalSizeXUnit": "µm",
                               "PhysicalSizeY": sy, "PhysicalSizeYUnit": "µm",
                               "PhysicalSizeZ": sz, "PhysicalSizeZUnit": "µm",
                               "Channel": {"Name": [str(c) for c in channels]}})
    files.append(tif)
    for i, c in enumerate(channels):
        safe = re.sub(r"[^A-Za-z0-9_-]+", "_", str(c)) or f"c{i}"
        p = out_dir / f"prediction_{safe}.nrrd"
        header = {"space dimension": 3, "space units": ["microns"] * 3,
                  "space directions": np.diag([sx, sy, sz]),
                  "space origin": np.zeros(3), "kinds": ["domain"] * 3}
        nrrd.write(str(p), pred[i], header, index_order="C")
        files.append(p)
    return files


def predict_stack(stack, out_dir, *, ratio: int = 4, weights: str | None = None,
                  tl_channel=None, sparse_input: bool = False, overwrite: bool = False) -> dict:
    """Library entry of ``medvol ssp predict``. Returns a summary dict (also in the manifest)."""
    from .._atomic import atomic_dir
    from ..manifest import Manifest
    from .data import read_ome_tiff
    from .sparsify import RATIOS
    from .train import load_ssp_model

    if ratio not in RATIOS:
        raise InputError(f"--ratio must be one of {', '.join(map(str, RATIOS))}, got {ratio}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} exists; pass --overwrite to replace it", path=out_dir)
    st = read_ome_tiff(stack)
    ci = _pick_tl(st.channels, tl_channel)
    wpath = resolve_weights(weights, ratio)
    model, info = load_ssp_model(wpath)
    pred, kept = predict_array(model, info, st.data[ci], ratio, sparse_input=sparse_input)
    extra = info.get("extra") or {}
    chans = extra.get("channels") or [f"c{i}" for i in range(pred.shape[0])]
    sz, sy, sx = st.spacing
    if sparse_input:
        # the file's slices are `ratio` dense-grid slices apart: the output grid is dense
        sz = sz / ratio
    # a 2D-output model (projection) writes one plane with the input's z spacing (documented)
    man = Manifest("ssp predict", {"ratio": ratio, "weights": wpath.name, "tl_channel": ci,
                                   "sparse_input": sparse_input})
    man.add_input(stack, name=Path(stack).name)
    man.decide("kept z indices (dense grid, global slice set z[::r] from 0)", kept=kept)
    if "surrogate" in str(info.get("task", "")).lower() or extra.get("surrogate"):
        man.warn("these weights were trained on a SURROGATE (transmitted light derived from "
                 "fluorescence), not on real transmitted light")
    summary = {"output_shape_czyx": list(pred.shape), "spacing_zyx_um": [sz, sy, sx],
               "channels": list(chans), "kept_z": kept, "units": "z-score of training targets",
               "arch": info.get("arch"), "weights": wpath.name}
    man.data["result"] = summary
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        files = write_outputs(pred, tmp, (sz, sy, sx), chans)
        for f in files:
            man.add_output(f, root=tmp)
        man.write(tmp / "manifest.json")
    return summary
