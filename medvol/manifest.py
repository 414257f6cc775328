"""``manifest.json``: what a run read, decided, computed and wrote (never patient identifiers)."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Iterable

from ._atomic import atomic_write_text

__all__ = ["sha256_file", "sha256_files", "versions", "Manifest"]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: Iterable[str | os.PathLike]) -> str:
    """One hash over the *contents* of many files, independent of their names and order."""
    digests = sorted(sha256_file(p) for p in paths)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def versions() -> dict[str, str]:
    """Versions of medvol and of the already-imported heavy libraries."""
    import medvol

    out = {"medvol": medvol.__version__, "python": platform.python_version()}
    for name in ("numpy", "scipy", "torch", "SimpleITK", "pydicom", "nibabel", "nrrd", "monai",
                 "astra", "skimage", "prefect"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = str(getattr(mod, "__version__", getattr(mod, "Version", "?")))
    return out


class Manifest:
    """Collects a run's record; :meth:`write` stores it atomically as JSON.

    Paths are stored relative to the output folder where possible; inputs carry SHA-256 hashes.
    """

    def __init__(self, command: str, parameters: dict[str, Any] | None = None):
        self.data: dict[str, Any] = {
            "medvol_manifest": 1,
            "command": command,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "parameters": dict(parameters or {}),
            "inputs": [],
            "decisions": [],
            "warnings": [],
            "metrics": {},
            "outputs": [],
        }

    def add_input(self, path, *, name: str | None = None, hash: bool = True, **info) -> None:
        """Record an input file; ``name`` (e.g. a path relative to the input folder) is stored
        instead of ``path`` when given."""
        rec = {"path": str(name if name is not None else path), **info}
        if hash and Path(path).is_file():
            rec["sha256"] = sha256_file(path)
        self.data["inputs"].append(rec)

    def add_output(self, path, root=None, **info) -> None:
        p = Path(path)
        rel = os.path.relpath(p, root) if root is not None else str(p)
        rec = {"path": rel, **info}
        if p.is_file():
            rec["sha256"] = sha256_file(p)
        self.data["outputs"].append(rec)

    def decide(self, text: str, **info) -> None:
        self.data["decisions"].append({"decision": text, **info})

    def warn(self, text: str) -> None:
        self.data["warnings"].append(text)

    def write(self, path, overwrite: bool = True) -> Path:
        self.data["versions"] = versions()
        return atomic_write_text(path, json.dumps(self.data, indent=2, default=_jsonable) + "\n",
                                 overwrite=overwrite)


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    return str(o)
