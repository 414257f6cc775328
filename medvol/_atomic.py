"""Atomic file and folder writes: temp file in the same folder, then ``os.replace``."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InputError, OutputExistsError


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: changing the umask later would race with threads


def _publish_mode(path: Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; give them the usual umask-based mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


def check_writable(path: str | os.PathLike, overwrite: bool = False,
                   inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check that ``path`` may be written.

    Raises :class:`OutputExistsError` if it exists and ``overwrite`` is false, and
    :class:`InputError` if it is (or contains) one of ``inputs`` — replacing it would destroy
    the data being read — or if a parent of it is a file.
    """
    p = Path(path)
    target = p.resolve()
    for src in inputs:
        s = Path(src).resolve()
        if s == target or target in s.parents:
            raise InputError("the output would replace the input", path=p,
                             hint="choose an output folder outside the input")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"{parent} is a file, not a folder", path=p,
                             hint="choose another output path")
    if p.exists() and not overwrite:
        raise OutputExistsError("output already exists", path=p,
                                hint="choose another path or pass overwrite=True / --overwrite")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    If the body raises, the temporary file is removed and ``path`` is untouched.
    The temporary name keeps the final suffixes so libraries that dispatch on the
    extension (``.nii.gz``, ``.nrrd``) still work.
    """
    final = check_writable(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes[-2:]) if final.name.endswith(".gz") else final.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name.split('.')[0]}.", suffix=".tmp" + suffix,
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _publish_mode(tmp_path)
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output folder in a hidden sibling, then move it into place.

    With ``overwrite`` an existing folder is replaced only after the new one is complete.
    """
    final = check_writable(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            _remove(old)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
