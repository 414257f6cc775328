"""Atomic file and folder writes: temp file in the same folder, then a rename.

Output folders (:func:`atomic_dir`) are **create-or-fail**: the new folder is built in a hidden
sibling ``.<name>.<pid>.<random>.partial`` and renamed into place with ``RENAME_NOREPLACE``
(Linux) — a folder that appeared after the check is never replaced; only ``overwrite=True``
replaces, and then under a per-output lock (``.<name>.lock``, ``flock``) so two runs cannot
interleave. Partial folders left by a process that no longer runs (SIGKILL, power loss) are
removed by the next run on the same output, with a log line naming them. OS errors while
writing (disk full, read-only file system, permission denied) become
:class:`~medvol.errors.OutputError` (exit code 9).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InputError, OutputError, OutputExistsError

log = logging.getLogger("medvol.atomic")

#: errno values that mean "the output cannot be written here" (the user's problem)
#: (EIO and other hiccups stay OSError: the pipeline may retry those)
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT,
                 errno.EFBIG, errno.ENAMETOOLONG, errno.EMLINK, errno.ENOTDIR, errno.EISDIR}


def output_error(e: OSError, path: object) -> OutputError:
    """One-line :class:`OutputError` for an OS error while writing ``path``."""
    what = e.strerror or type(e).__name__
    hints = {errno.ENOSPC: "free disk space or write elsewhere",
             errno.EDQUOT: "free quota or write elsewhere",
             errno.EROFS: "the file system is read-only; write elsewhere",
             errno.EACCES: "check the folder's permissions or write elsewhere",
             errno.EPERM: "check the folder's permissions or write elsewhere"}
    return OutputError(f"cannot write the output ({what})", path=getattr(e, "filename", None)
                       or path, hint=hints.get(e.errno, "check the output location"))


@contextlib.contextmanager
def output_errors(path: object) -> Iterator[None]:
    """Turn OS errors raised while writing ``path`` into :class:`OutputError`."""
    try:
        yield
    except OSError as e:
        if isinstance(e, (FileNotFoundError,)) or e.errno not in OUTPUT_ERRNOS:
            raise
        raise output_error(e, path) from None


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
    with output_errors(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes[-2:]) if final.name.endswith(".gz") else final.suffix
    with output_errors(final.parent):
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name.split('.')[0]}.",
                                   suffix=".tmp" + suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with output_errors(final):
            yield tmp_path
            if tmp_path.exists():
                _publish_mode(tmp_path)
            if overwrite:
                os.replace(tmp_path, final)
            else:
                _rename_noreplace(tmp_path, final)
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


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, failing with :class:`OutputExistsError` if ``dst`` exists —
    atomically where the kernel offers ``renameat2(RENAME_NOREPLACE)`` (Linux ≥ 3.15), else via
    a check right before ``os.rename`` (which would replace an empty folder or any file)."""
    fn = _renameat2()
    if fn is not None:
        import ctypes

        AT_FDCWD, RENAME_NOREPLACE = -100, 1
        rc = fn(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise OutputExistsError("output appeared while medvol was writing it (another run?)",
                                    path=dst, hint="choose another path or pass --overwrite")
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL: file system without the flag
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise OutputExistsError("output appeared while medvol was writing it (another run?)",
                                path=dst, hint="choose another path or pass --overwrite")
    os.rename(src, dst)


_RENAMEAT2: list = []


def _renameat2():
    if not _RENAMEAT2:
        fn = None
        with contextlib.suppress(Exception):
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            fn.restype = ctypes.c_int
        _RENAMEAT2.append(fn)
    return _RENAMEAT2[0]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(final: Path) -> list[Path]:
    """Remove ``.<name>.<pid>.*.partial`` siblings of ``final`` whose process is gone (killed
    runs leave them, with patient pixels inside). Returns what was removed (each is logged)."""
    removed = []
    with contextlib.suppress(OSError):
        for p in final.parent.glob(f".{glob_escape(final.name)}.*.partial"):
            parts = p.name[len(final.name) + 2:].split(".")
            if not parts or not parts[0].isdigit():
                continue
            pid = int(parts[0])
            if pid == os.getpid() or pid_alive(pid):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
            log.warning("removed stale partial output %s (left by process %d, which is gone)",
                        p, pid)
            removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


@contextlib.contextmanager
def output_lock(final: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``final``'s lock file (``.<name>.lock`` beside it); another
    medvol process writing the same output gets :class:`OutputExistsError` at once."""
    import fcntl

    lock = final.parent / f".{final.name}.lock"
    while True:
        with output_errors(lock):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputExistsError("another medvol process is writing this output", path=final,
                                    hint="wait for it to finish or choose another path"
                                    ) from None
        try:  # the holder before us may have removed the lock file: lock the current one
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output folder in a hidden sibling, then move it into place.

    Create-or-fail: without ``overwrite`` the final rename never replaces anything (a folder
    that appeared meanwhile → :class:`OutputExistsError`). With ``overwrite`` an existing folder
    is replaced only after the new one is complete. A lock per output keeps two medvol
    processes apart; stale ``.partial`` siblings of dead processes are removed first.
    """
    final = check_writable(path, overwrite)
    with output_errors(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(final):
        remove_stale_partials(final)
        check_writable(final, overwrite)
        with output_errors(final.parent):
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.",
                                        suffix=".partial", dir=final.parent))
        try:
            with output_errors(final):
                yield tmp
                _publish_mode(tmp, directory=True)
                if overwrite and final.exists():
                    old = final.with_name(f".{final.name}.{os.getpid()}.old.partial")
                    _remove(old)
                    os.replace(final, old)
                    os.replace(tmp, final)
                    _remove(old)
                else:
                    _rename_noreplace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
