"""TEMPORARY (removed in the migration commit): the old PD-UNet weights API."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import OutputExistsError, WeightsError

__all__ = ["WEIGHTS_DIR", "PRETRAINED", "build_model", "save_weights", "load_weights",
           "load_pretrained"]

def _weights_dir() -> Path:
    import medvol.models as _m          # light package (no torch at import)

    return Path(_m.__file__).resolve().parent / "weights"


WEIGHTS_DIR = _weights_dir()
PRETRAINED = {
    "pdunet_ct_x16": "pdunet_ct_x16.safetensors",
    "pdunet_mri_x16": "pdunet_mri_x16.safetensors",
    "lpd_ct_x16": "lpd_ct_x16.safetensors",
    "lpd_mri_x16": "lpd_mri_x16.safetensors",
}


def build_model(arch: str, config: dict, image_scale: float = 1.0):
    """Instantiate ``"pdunet"`` or ``"lpd"`` from a config dict."""
    from medvol.models.pdunet import LearnedPrimalDual, PDUNet

    if arch == "pdunet":
        return PDUNet(**config, image_scale=image_scale)
    if arch == "lpd":
        return LearnedPrimalDual(**config, image_scale=image_scale)
    raise WeightsError(f"unknown architecture {arch!r} (expected 'pdunet' or 'lpd')")


def save_weights(model, path, *, arch: str, task: dict, extra: dict | None = None,
                 overwrite: bool = False) -> Path:
    """Write ``model``'s state dict + metadata (arch, config, task, extra) as safetensors."""
    from safetensors.torch import save_file

    from .._atomic import atomic_path

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it", path=path)
    meta = {"arch": arch, "config": json.dumps(model.config), "task": json.dumps(task),
            "format": "medvol-pdunet-1"}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_weights(path, *, expect_arch: str | None = None):
    """Load a model from a safetensors file written by :func:`save_weights`.

    Returns ``(model, metadata)`` with the model in eval mode.

    Raises
    ------
    WeightsError
        Missing file, unreadable/corrupted file, wrong architecture, or tensors that do not
        match the network the metadata describes.
    """
    import torch

    from .._safetensors import read_safetensors

    path = Path(path)
    meta, state = read_safetensors(
        path, retrain_hint="retrain with `medvol train pdunet` or restore models/weights/")
    arch = meta.get("arch")
    if arch not in ("pdunet", "lpd") or "config" not in meta:
        raise WeightsError("weights carry no PD-UNet/LPD metadata (arch, config)", path=path)
    if expect_arch is not None and arch != expect_arch:
        raise WeightsError(f"weights are for {arch!r}, expected {expect_arch!r}", path=path)
    try:
        config = json.loads(meta["config"])
        meta["config"] = config
        meta["task"] = json.loads(meta.get("task", "{}"))
        model = build_model(arch, config)
    except WeightsError:
        raise
    except Exception as e:
        raise WeightsError(f"invalid model metadata: {e}", path=path) from None
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    bad = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad:
            parts.append(f"{len(bad)} with wrong shape (e.g. {bad[0]}: "
                         f"{tuple(state[bad[0]].shape)} vs {tuple(want[bad[0]].shape)})")
        raise WeightsError("weights do not match the network: " + "; ".join(parts), path=path)
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise WeightsError(f"tensor {k} contains NaN/inf (corrupted weights)", path=path)
    model.load_state_dict(state)
    model.eval()
    return model, meta


def load_pretrained(name: str):
    """Load shipped weights by name (``pdunet_ct_x16``, ``pdunet_mri_x16``, ``lpd_ct_x16``,
    ``lpd_mri_x16``) or from a path. Returns ``(model, metadata)``."""
    p = Path(name)
    if name in PRETRAINED:
        p = WEIGHTS_DIR / PRETRAINED[name]
    elif p.suffix != ".safetensors":
        raise WeightsError(f"unknown pretrained model {name!r}; choose one of "
                           f"{', '.join(PRETRAINED)} or give a .safetensors path")
    return load_weights(p)
