"""Watch-folder deployment: process every study dropped into an inbox exactly once.

Layout (``state_dir`` defaults to ``<inbox>.state`` beside the inbox, on the same filesystem)::

    inbox/<study>/                     drop studies here (copy to a hidden name, e.g. .study.tmp,
                                       then rename — or rely on ``settle_seconds``)
    <inbox>.state/processing/<study>/  claimed, being processed
    <inbox>.state/processing/.<study>.lock   owner of the claim (pid, host, time)
    <inbox>.state/done/<study>/        finished (``<study>.2`` … if the name was seen before)
    <inbox>.state/failed/<study>/      failed; ``failed/<study>.error.txt`` says why
    OUT/<study>/                       the study pipeline's outputs

Exactly once: a poll claims a study by creating ``processing/.<study>.lock`` with ``O_CREAT |
O_EXCL`` (only one process can create it) and then ``os.rename``-ing the study out of the inbox
(atomic). A poll that loses either race skips the study, so overlapping polls — threads,
processes, or two schedule ticks — never process it twice. A claim whose owner process died on
this host is put back into the inbox by :func:`recover_stale_claims` at the next poll, and the
study pipeline's step markers make that rerun resume rather than recompute.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from prefect import flow

from medvol._atomic import atomic_write_text, pid_alive
from medvol.errors import InputError
from medvol.flows.tasks import move_unique

__all__ = ["state_dirs", "claim_study", "release_claim", "recover_stale_claims", "poll_inbox",
           "watch_inbox"]

log = logging.getLogger("medvol.flows.watch")


def state_dirs(inbox: str | os.PathLike, state_dir: str | os.PathLike | None = None
               ) -> dict[str, Path]:
    """``{"processing", "done", "failed"}`` folders of an inbox (created)."""
    inbox = Path(inbox).resolve()
    root = Path(state_dir).resolve() if state_dir else inbox.with_name(inbox.name + ".state")
    dirs = {k: root / k for k in ("processing", "done", "failed")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def _lock_path(processing: Path, name: str) -> Path:
    return processing / f".{name}.lock"


def claim_study(study: str | os.PathLike, processing: str | os.PathLike) -> Path | None:
    """Claim one inbox entry: O_EXCL lock file, then atomic rename into ``processing``.

    Returns the claimed path, or None if another poll owns or already took it.
    """
    study, processing = Path(study), Path(processing)
    lock = _lock_path(processing, study.name)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "claimed": _dt.datetime.now(_dt.timezone.utc).isoformat()}, fh)
    dest = processing / study.name
    try:
        if dest.exists():  # never rename onto an existing (possibly empty) folder
            raise FileExistsError(dest)
        os.rename(study, dest)
    except OSError:  # gone (another poll finished it) or not movable: not ours
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        return None
    return dest


def release_claim(claimed: Path, target_dir: Path) -> Path:
    """Move a claimed study to ``done``/``failed`` (free name) and drop its lock."""
    dest = move_unique(claimed, target_dir)
    with contextlib.suppress(FileNotFoundError):
        _lock_path(claimed.parent, claimed.name).unlink()
    return dest




def recover_stale_claims(inbox: str | os.PathLike, processing: str | os.PathLike) -> list[Path]:
    """Put back into the inbox the claims whose owner process (on this host) is gone."""
    inbox, processing = Path(inbox), Path(processing)
    back = []
    for lock in sorted(processing.glob(".*.lock")):
        try:
            owner = json.loads(lock.read_text())
        except (OSError, ValueError):
            continue
        if owner.get("host") != socket.gethostname() or pid_alive(int(owner.get("pid", -1))):
            continue
        name = lock.name[1:-len(".lock")]
        src = processing / name
        if src.exists() and not (inbox / name).exists():
            os.rename(src, inbox / name)
            back.append(inbox / name)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    return back


def _newest_mtime(p: Path) -> float:
    t = p.stat().st_mtime
    if p.is_dir():
        for f in p.rglob("*"):
            with contextlib.suppress(OSError):
                t = max(t, f.stat().st_mtime)
    return t


def poll_inbox(inbox: str | os.PathLike, out: str | os.PathLike, *,
               process: Callable[[Path, Path], Any], state_dir: str | os.PathLike | None = None,
               settle_seconds: float = 30.0) -> dict:
    """One poll: claim each settled study in ``inbox``, ``process(study_path, out/<name>)`` it,
    move it to ``done`` or ``failed``.

    Entries whose name starts with ``.`` or ``_`` are ignored (copy in progress), and so are
    entries modified less than ``settle_seconds`` ago. Returns ``{"processed": [...],
    "failed": [...], "skipped": [...]}`` (study names; errors as one line each).
    """
    inbox, out = Path(inbox).resolve(), Path(out).resolve()
    if not inbox.is_dir():
        raise InputError("inbox folder not found", path=inbox, hint="create it or fix --inbox")
    dirs = state_dirs(inbox, state_dir)
    recover_stale_claims(inbox, dirs["processing"])
    result: dict[str, list] = {"processed": [], "failed": [], "skipped": []}
    now = time.time()
    for entry in sorted(inbox.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        try:
            if now - _newest_mtime(entry) < settle_seconds:
                result["skipped"].append(entry.name)
                continue
        except FileNotFoundError:  # taken by an overlapping poll meanwhile
            continue
        claimed = claim_study(entry, dirs["processing"])
        if claimed is None:
            continue
        try:
            process(claimed, out / entry.name)
        except Exception as e:
            msg = f"{type(e).__name__}: {' '.join(str(e).split())}"
            dest = release_claim(claimed, dirs["failed"])
            atomic_write_text(dest.with_name(dest.name + ".error.txt"), msg + "\n",
                              overwrite=True)
            result["failed"].append({"study": entry.name, "error": msg})
            log.warning("study %s failed: %s", entry.name, msg)
        else:
            release_claim(claimed, dirs["done"])
            result["processed"].append(entry.name)
    return result


@flow(name="medvol-watch-inbox", log_prints=True)
def watch_inbox(inbox: str, out: str, *, state_dir: str | None = None,
                settle_seconds: float = 30.0, method: str = "tv", views: int = 16,
                full_views: int = 360, geometry: str = "fan", n_iter: int | None = None,
                slices: str | None = None, downsample: int = 1, resample: str = "auto",
                register: bool = False, reference: str | None = None,
                register_method: str = "affine", threads: int | None = None) -> dict:
    """Poll ``inbox`` once and run the study pipeline on every new study (outputs in
    ``out/<study>``). Serve it on an interval or cron (``medvol serve --inbox``); overlapping
    runs are safe (see the module docstring)."""
    from medvol.flows.pipeline import recon_params, run_study

    params = recon_params(geometry=geometry, views=views, full_views=full_views, method=method,
                          n_iter=n_iter, slices=slices, downsample=downsample)

    def process(study: Path, study_out: Path) -> dict:
        return run_study(study, study_out, recon=params, register=register, reference=reference,
                         register_method=register_method, resample=resample, threads=threads)

    res = poll_inbox(inbox, out, process=process, state_dir=state_dir,
                     settle_seconds=settle_seconds)
    from medvol._text import one_line

    for f in res["failed"]:  # one line per failed study (the full log is Prefect's)
        print(one_line(f"study {f['study']} FAILED: {f['error']}"))
    print(f"inbox poll: {len(res['processed'])} processed, {len(res['failed'])} failed, "
          f"{len(res['skipped'])} not settled yet")
    return res
