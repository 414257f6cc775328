"""Progress display for long work: determinate ``rich`` bars on a terminal, silence elsewhere.

One place decides whether progress is shown, so every long loop behaves the same:

* :func:`bar` — a determinate bar (count, elapsed, ETA and optional live fields such as the loss)
  for iterative reconstruction (iterations), slice batches, registration levels/iterations and
  training steps. Bars opened inside another bar (B-spline inside its affine start, levels inside
  a run) share one display, one line each.
* :func:`status` — a one-line spinner for waits without a count (Prefect's temporary server).
* :func:`scope` — the CLI's ``--progress/--no-progress`` for library calls that take
  ``progress=None`` ("follow the command"): inside ``with scope(False):`` they stay quiet.

A bar or status line is drawn only when it is asked for **and** stderr is a terminal (``isatty``),
so piped or logged runs, CI and Prefect workers get no control characters. The environment variable
``MEDVOL_NO_PROGRESS=1`` turns every bar off (e.g. for a terminal recording).

Everything is drawn on stderr; results and the one-line errors stay on stdout/stderr as before.
``rich`` is imported only when a bar is actually drawn.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from typing import Any, Callable, Iterator

__all__ = ["enabled", "scope", "bar", "status", "start_prefect_server", "NOOP"]

_SCOPE: contextvars.ContextVar[bool | None] = contextvars.ContextVar("medvol_progress",
                                                                   default=None)
_LOCK = threading.RLock()
_LIVE: dict[str, Any] = {"progress": None, "depth": 0}


def _tty(stream=None) -> bool:
    s = sys.stderr if stream is None else stream
    try:
        return bool(s.isatty())
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


def enabled(progress: bool | None = None) -> bool:
    """Whether to draw: ``progress`` (``None`` = the enclosing :func:`scope`, off without one),
    stderr a terminal, and ``MEDVOL_NO_PROGRESS`` unset."""
    want = _SCOPE.get() if progress is None else bool(progress)
    if not want or os.environ.get("MEDVOL_NO_PROGRESS", "") not in ("", "0"):
        return False
    return _tty()


@contextlib.contextmanager
def scope(progress: bool) -> Iterator[None]:
    """Set the default for library calls made with ``progress=None`` inside the block."""
    token = _SCOPE.set(bool(progress))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _noop(*_a, **_k) -> None:
    return None


#: What :func:`bar` and :func:`status` yield when nothing is drawn (test with ``is``, e.g. to skip
#: installing optimiser observers).
NOOP = _noop


def _columns():
    from rich.progress import (BarColumn, ProgressColumn, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class _Count(ProgressColumn):
        def render(self, task):
            if task.total is None:
                return Text("")
            unit = task.fields.get("unit", "")
            return Text(f"{int(task.completed)}/{int(task.total)} {unit}".rstrip(),
                        style="progress.download")

    class _Eta(TimeRemainingColumn):
        def render(self, task):
            return Text("") if task.total is None else super().render(task)

    return (SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
            BarColumn(bar_width=30), _Count(), TimeElapsedColumn(), TextColumn("eta"), _Eta(),
            TextColumn("{task.fields[info]}"))


@contextlib.contextmanager
def _task(description: str, total: float | None, unit: str) -> Iterator[tuple[Any, Any]]:
    """Add a task to the shared display (starting it if none is live); remove it on exit."""
    from rich.console import Console
    from rich.progress import Progress

    with _LOCK:
        if _LIVE["progress"] is None:
            p = Progress(*_columns(), console=Console(stderr=True), transient=True,
                         refresh_per_second=8)
            p.start()
            _LIVE["progress"] = p
        p = _LIVE["progress"]
        _LIVE["depth"] += 1
        tid = p.add_task(description, total=total, unit=unit, info="")
        p.refresh()     # drawn at least once, however short the work
    try:
        yield p, tid
    finally:
        with _LOCK:
            p.refresh()     # the final count is shown before the line goes
            p.remove_task(tid)
            _LIVE["depth"] -= 1
            if _LIVE["depth"] == 0:
                p.stop()
                _LIVE["progress"] = None


def _info(fields: dict[str, Any]) -> str:
    parts = []
    for k, v in fields.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
        elif v is not None:
            parts.append(f"{k} {v}")
    return "  ".join(parts)


@contextlib.contextmanager
def bar(total: int | float, description: str, *, progress: bool | None = None,
        unit: str = "") -> Iterator[Callable[..., None]]:
    """A determinate progress bar; yields ``update(advance=1, *, completed=None, total=None,
    description=None, **fields)``.

    Parameters
    ----------
    total : the count at which the work is done (iterations, slices, steps).
    description : short text before the bar (``"TV-PDHG"``, ``"B-spline level 1/1"``).
    progress : ``True``/``False``, or ``None`` to follow the enclosing :func:`scope`. Nothing is
        drawn unless stderr is a terminal; the yielded ``update`` is then a no-op.
    unit : shown after the count (``"it"``, ``"slices"``, ``"steps"``).

    ``fields`` are shown after the ETA, e.g. ``update(loss=0.0123)`` → ``loss 0.0123``.

    Examples
    --------
    >>> with bar(3, "demo", progress=False) as update:
    ...     for _ in range(3):
    ...         update(loss=0.5)
    """
    if not enabled(progress):
        yield _noop
        return
    with _task(description, float(total), unit) as (p, tid):
        def update(advance: float = 1, *, completed: float | None = None,
                   total: float | None = None, description: str | None = None,
                   **fields: Any) -> None:
            kw: dict[str, Any] = {}
            if completed is not None:
                kw["completed"] = completed
            else:
                kw["advance"] = advance
            if total is not None:
                kw["total"] = total
            if description is not None:
                kw["description"] = description
            if fields:
                kw["info"] = _info(fields)
            p.update(tid, **kw)

        yield update


@contextlib.contextmanager
def status(message: str, *, progress: bool | None = None) -> Iterator[Callable[[str], None]]:
    """A spinner line with ``message`` while the block runs (nothing off a terminal); yields
    ``set(message)`` to change the text."""
    if not enabled(progress):
        yield _noop
        return
    with _task(message, None, "") as (p, tid):
        yield lambda text: p.update(tid, description=text)


def start_prefect_server(*, progress: bool | None = None) -> str | None:
    """Start Prefect's temporary local API server now, under a status line, if the flows would
    start one (no ``PREFECT_API_URL`` and ephemeral servers allowed). Returns its API URL, or
    ``None`` when a server is configured (nothing to do).

    The server is Prefect's own per-process singleton, so the flow run that follows reuses it;
    Prefect stops it when the process exits. It may take up to
    ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (when set; else 120 s, not Prefect's 20 s)
    before a :class:`~medvol.errors.BackendError` (exit code 6). Needs the ``flows`` extra.
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as T

    from .errors import BackendError

    # Prefect's default (20 s) is often too short on a busy machine; an explicit setting wins
    timeout = int(T.value()) if os.environ.get(T.name) else max(int(T.value()), 120)
    server = SubprocessASGIServer()
    if not server.running:
        with status("Starting Prefect's temporary server (no PREFECT_API_URL; 15-60 s on the "
                    "first run) …", progress=progress):
            try:
                server.start(timeout=timeout)
            except RuntimeError as e:
                raise BackendError(f"Prefect's temporary server did not start within {timeout} s "
                                   f"({str(e).splitlines()[0][:160]})",
                                   hint=f"raise {T.name} or start a server and set "
                                   "PREFECT_API_URL (docs/flows.md)") from None
    return server.api_url
