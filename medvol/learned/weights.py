"""Safetensors weights for every learned model: one checked reader, one writer, one loader.

File format (``medvol_format = "medvol-weights-1"``): float32 tensors of the state dict plus
string metadata ``medvol_format``, ``arch`` (a :mod:`medvol.learned.registry` name), and the
JSON strings ``config``, ``task``, ``data`` (provenance of the training data), ``metrics`` and
``extra``. Files written before this format (``format = "medvol-pdunet-1"`` for PD-UNet/LPD and
``"medvol-registration-1"`` for MICDIR/VoxelMorph, the shipped files) are read unchanged and
mapped onto the same :class:`WeightsInfo`.

The reader parses the safetensors header itself before anything is allocated: the header size
is bounded, every tensor's dtype, shape and byte range is checked against the file, and the
network's config is validated by its config class (:func:`medvol.learned.registry.make_config`)
before the network is built; tensors are read only once names, shapes and dtypes match the
network. No pickle is ever loaded. Every failure is one :class:`WeightsError` line.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputExistsError, WeightsError

__all__ = ["FORMAT", "WeightsInfo", "save_weights", "read_weights_info", "load_weights",
           "shipped_weights", "shipped_weights_names", "read_safetensors", "read_header",
           "write_safetensors"]

FORMAT = "medvol-weights-1"
_LEGACY_PDUNET = "medvol-pdunet-1"
_LEGACY_REGISTRATION = "medvol-registration-1"
MAX_HEADER_BYTES = 16 * 1024 * 1024     # metadata + tensor table; real files have a few kB
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1}
# dtypes medvol reads (weights are float32; int64 BatchNorm counters; uint8 RNG states)
READABLE_DTYPES = frozenset({"F32", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"})
_TORCH_NAMES = {"float32": "F32", "float64": "F64", "float16": "F16", "bfloat16": "BF16",
                "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
                "bool": "BOOL"}
_RETRAIN = "restore the file or retrain it (`medvol train …`)"


# --------------------------------------------------------------------------- raw safetensors
def read_header(path, *, retrain_hint: str = _RETRAIN) -> tuple[dict, dict]:
    """``(metadata, {name: (dtype, shape)})`` of a safetensors file, read without allocating
    tensors. Raises :class:`WeightsError` for a missing file, an oversized or malformed header,
    or tensor byte ranges that do not fit the file."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError("weights file not found", path=p, hint=retrain_hint)
    size = p.stat().st_size
    bad = "corrupted, truncated or not a safetensors file"
    with open(p, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise WeightsError(bad, path=p, hint=retrain_hint)
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise WeightsError(f"{bad} (header of {n} bytes in a {size}-byte file)", path=p,
                               hint=retrain_hint)
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise WeightsError(f"{bad} (header: {str(e)[:80]})", path=p, hint=retrain_hint) from None
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise WeightsError("safetensors metadata must map strings to strings", path=p,
                           hint=retrain_hint)
    data_len = size - 8 - n
    entries: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, e in header.items():
        try:
            dtype, shape, (a, b) = e["dtype"], tuple(e["shape"]), e["data_offsets"]
            if dtype not in _DTYPE_BYTES:
                raise ValueError(f"unknown dtype {dtype!r}")
            if not all(isinstance(s, int) and 0 <= s < 2 ** 40 for s in shape):
                raise ValueError("bad shape")
            count = math.prod(shape)
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b <= data_len
                    and b - a == count * _DTYPE_BYTES[dtype]):
                raise ValueError("byte range does not match shape/dtype or exceeds the file")
        except (KeyError, TypeError, ValueError) as err:
            raise WeightsError(f"{bad} (tensor {str(name)[:60]}: {str(err)[:80]})", path=p,
                               hint=retrain_hint) from None
        entries[name] = (dtype, shape)
    return meta, entries


def _check_dtypes(p: Path, entries: dict, allowed) -> None:
    for name, (dtype, _) in entries.items():
        if dtype not in allowed:
            raise WeightsError(f"tensor {name} has dtype {dtype}, which medvol does not read "
                               f"(expected one of {', '.join(sorted(allowed))}; save float32)",
                               path=p, hint="convert the weights to float32 and re-save")


def _read_tensors(p: Path, names) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            return {k: f.get_tensor(k) for k in names}
    except Exception as e:  # safetensors raises several unrelated types for a broken file
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise WeightsError(f"cannot read weights (corrupted or not safetensors: "
                           f"{type(e).__name__}: {first})", path=p,
                           hint="restore the file or retrain") from None


def read_safetensors(path, *, retrain_hint: str = _RETRAIN,
                     allowed_dtypes=READABLE_DTYPES) -> tuple[dict, dict]:
    """``(metadata, tensors)`` of a safetensors file (torch CPU tensors), header checked first
    (:func:`read_header`) and dtypes restricted to ``allowed_dtypes``; :class:`WeightsError`
    otherwise."""
    p = Path(path)
    meta, entries = read_header(p, retrain_hint=retrain_hint)
    _check_dtypes(p, entries, allowed_dtypes)
    return meta, _read_tensors(p, list(entries))


def write_safetensors(path, tensors: dict, metadata: dict | None = None, *,
                      overwrite: bool = False) -> Path:
    """Write ``tensors`` (name → torch tensor) with string ``metadata`` atomically."""
    from safetensors.torch import save_file

    from .._atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(data, str(tmp), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return path


# --------------------------------------------------------------------------- metadata
@dataclass
class WeightsInfo:
    """What a weights file says about itself.

    ``arch``: registry name; ``config``: the config dict; ``task``: what the model solves (a
    string or a dict, e.g. the PD-UNet task grid or the registration modality and model grid);
    ``data``: training-data provenance; ``metrics``: evaluation numbers; ``extra``: training
    settings and anything else. ``format``: the metadata format read (old files keep theirs);
    ``raw``: the metadata strings as stored.
    """

    arch: str
    config: dict
    task: Any = ""
    data: Any = None
    metrics: Any = None
    extra: dict = field(default_factory=dict)
    format: str = FORMAT
    path: Path | None = None
    raw: dict = field(default_factory=dict)


def _loads(s: str):
    try:
        return json.loads(s)
    except ValueError:
        return s


def _info_from_meta(meta: dict, p: Path | None) -> WeightsInfo:
    fmt = meta.get("medvol_format") or meta.get("format")
    try:
        if fmt == FORMAT:
            arch = meta["arch"]
            cfg = json.loads(meta["config"])
            info = WeightsInfo(arch, cfg, _loads(meta.get("task", '""')),
                               _loads(meta.get("data", "null")), _loads(meta.get("metrics", "null")),
                               _loads(meta.get("extra", "{}")) or {}, fmt)
        elif fmt == _LEGACY_PDUNET:
            known = ("arch", "config", "task", "format")
            info = WeightsInfo(meta["arch"], json.loads(meta["config"]),
                               json.loads(meta.get("task", "{}")), None, None,
                               {k: _loads(v) for k, v in meta.items() if k not in known}, fmt)
        elif fmt == _LEGACY_REGISTRATION:
            known = ("model", "config", "format", "modality", "similarity", "grid_shape",
                     "grid_spacing_mm")
            task = {"modality": meta.get("modality", "intra"),
                    "similarity": meta.get("similarity"),
                    "grid_shape": json.loads(meta.get("grid_shape", "[64, 80, 64]")),
                    "grid_spacing_mm": float(meta.get("grid_spacing_mm", 2.5))}
            info = WeightsInfo(meta["model"], json.loads(meta["config"]), task, None, None,
                               {k: _loads(v) for k, v in meta.items() if k not in known}, fmt)
        else:
            raise WeightsError(f"not medvol weights (no medvol_format metadata; found "
                               f"{str(fmt)[:40]!r})", path=p,
                               hint="use a file written by medvol.learned.save_weights")
    except WeightsError:
        raise
    except (KeyError, ValueError, TypeError) as e:
        raise WeightsError(f"invalid weights metadata ({type(e).__name__}: {str(e)[:100]})",
                           path=p) from None
    if not isinstance(info.arch, str) or not isinstance(info.config, dict):
        raise WeightsError("invalid weights metadata (arch must be a name, config an object)",
                           path=p)
    if not isinstance(info.extra, dict):
        info.extra = {"value": info.extra}
    info.path = p
    info.raw = dict(meta)
    return info


def read_weights_info(path) -> WeightsInfo:
    """The metadata of a weights file (no tensor is read)."""
    p = Path(path)
    meta, _ = read_header(p)
    return _info_from_meta(meta, p)


def save_weights(path, model, *, arch: str, config, task: Any = "", data: Any = None,
                 metrics: Any = None, extra: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``model``'s state dict (floating tensors as float32) and its metadata atomically.

    ``config``: the config dataclass (or dict) the model was built from; it is validated with the
    registered config class of ``arch``. ``task``/``data``/``metrics``/``extra`` must be
    JSON-serialisable. Raises :class:`OutputExistsError` when ``path`` exists and not
    ``overwrite``.
    """
    from .registry import config_to_dict, get_model_spec, make_config

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("weights file exists", path=path,
                                hint="pass overwrite=True / --overwrite or choose another path")
    cfg = config_to_dict(make_config(get_model_spec(arch).config_cls, config))
    try:
        meta = {"medvol_format": FORMAT, "arch": arch, "config": json.dumps(cfg),
                "task": json.dumps(task), "data": json.dumps(data),
                "metrics": json.dumps(metrics), "extra": json.dumps(extra or {})}
    except (TypeError, ValueError) as e:
        raise InputError(f"weights metadata must be JSON-serialisable: {e}") from None
    tensors = {k: (v.detach().float() if v.is_floating_point() else v.detach())
               for k, v in model.state_dict().items()}
    return write_safetensors(path, tensors, meta, overwrite=True)


def load_weights(path, *, arch: str | None = None, device: str = "cpu"):
    """Build the registered network a weights file describes and load it (eval mode).

    Returns ``(model, WeightsInfo)``. ``arch``: the expected architecture (a different one is a
    :class:`WeightsError`). Checks, in order and before any large allocation: header, metadata,
    config bounds (the config class's ``validate()``), tensor names/shapes/dtypes against the
    network; then reads the tensors and refuses NaN/inf.
    """
    import torch

    from .registry import build_model, get_model_spec

    p = Path(path)
    meta, entries = read_header(p)
    info = _info_from_meta(meta, p)
    if arch is not None and info.arch != arch:
        raise WeightsError(f"weights are for {info.arch!r}, expected {arch!r}", path=p,
                           hint="pick the matching model or weights file")
    try:
        get_model_spec(info.arch)
        model, _cfg = build_model(info.arch, info.config)
    except InputError as e:
        raise WeightsError(f"invalid model metadata: {e}", path=p) from None
    want = model.state_dict()
    missing = sorted(set(want) - set(entries))
    unexpected = sorted(set(entries) - set(want))
    bad = [k for k in want if k in entries and tuple(entries[k][1]) != tuple(want[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0][:60]})")
        if bad:
            parts.append(f"{len(bad)} with wrong shape (e.g. {bad[0]}: "
                         f"{tuple(entries[bad[0]][1])} vs {tuple(want[bad[0]].shape)})")
        raise WeightsError(f"weights do not match the {info.arch} network: " + "; ".join(parts),
                           path=p)
    for k, t in want.items():
        expect = _TORCH_NAMES.get(str(t.dtype).replace("torch.", ""), "?")
        if entries[k][0] != expect:
            raise WeightsError(f"tensor {k} has dtype {entries[k][0]}, the network expects "
                               f"{expect}", path=p, hint="convert the weights to float32 and re-save")
    tensors = _read_tensors(p, list(want))
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise WeightsError(f"tensor {k} contains NaN/inf (corrupted weights)", path=p)
    model.load_state_dict(tensors, strict=True)
    model.eval().to(device)
    return model, info


# --------------------------------------------------------------------------- shipped files
def _weights_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("medvol.models")   # light package, located without torch
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("medvol.models is not importable", hint="reinstall medvol")
    return Path(list(spec.submodule_search_locations)[0]) / "weights"


def shipped_weights_names() -> list[str]:
    """Names of the weights files that ship with medvol (``models/weights/*.safetensors``)."""
    d = _weights_dir()
    return sorted(f.stem for f in d.glob("*.safetensors")) if d.is_dir() else []


def shipped_weights(name: str) -> Path:
    """Path of a shipped weights file by name (e.g. ``pdunet_ct_x16``, ``micdir_intra``)."""
    name = str(name)
    stem = name[:-len(".safetensors")] if name.endswith(".safetensors") else name
    p = _weights_dir() / f"{stem}.safetensors"
    if "/" in stem or "\\" in stem or not p.is_file():
        raise WeightsError(f"no shipped weights named {name!r}; shipped: "
                           f"{', '.join(shipped_weights_names()) or '(none)'}",
                           hint="give a .safetensors path or reinstall medvol")
    return p

