"""Run one ``medvol`` command as a subprocess under a memory and a time limit.

The child gets ``RLIMIT_AS`` (address space: ``MEMORY_LIMIT``, above the asserted 2 GiB RSS
because torch reserves large virtual ranges) and is killed after ``timeout`` seconds; its peak
RSS comes from ``os.wait4`` (the kernel's accounting of that child only).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

#: peak resident memory a hostile input may cost (asserted from wait4's ru_maxrss)
RSS_LIMIT = 2 * 2**30
#: address-space cap for the child: torch reserves large virtual ranges, so the cap on address
#: space is set above the RSS bound; RSS is what is asserted.
MEMORY_LIMIT = 8 * 2**30
TIME_LIMIT = 60


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    max_rss: int  # bytes
    seconds: float
    timed_out: bool


_LAUNCHER = (
    "import ctypes, os, resource, signal, sys\n"
    "mem, fsize, perms = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == '1'\n"
    "resource.setrlimit(resource.RLIMIT_AS, (mem, mem))\n"
    "if fsize >= 0:\n"
    "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))\n"
    "if perms:\n"
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    for cap in (1, 2):\n"   # PR_CAPBSET_DROP CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    "        if libc.prctl(24, cap, 0, 0, 0) != 0:\n"
    "            sys.exit('cannot drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH')\n"
    "os.execv(sys.executable, [sys.executable, '-c', 'from medvol.cli import run; run()']"
    " + sys.argv[4:])\n")


def medvol_cmd(mem: int = MEMORY_LIMIT, fsize: int | None = None,
               file_permissions: bool = False) -> list[str]:
    """A small launcher sets the limits, then execs ``medvol``: no ``preexec_fn``, so the child
    is spawned (not forked from the big test process) and its peak RSS is its own.

    ``file_permissions``: make file permissions apply even to root, by dropping
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the capability bounding set before the exec
    (the child keeps its uid, so it still reads its own Python and checkout)."""
    return [sys.executable, "-c", _LAUNCHER, str(mem), str(-1 if fsize is None else fsize),
            "1" if file_permissions else "0"]


def run_cli(args: list[str], *, cwd: str | None = None, env: dict | None = None,
            timeout: float = TIME_LIMIT, mem: int = MEMORY_LIMIT,
            fsize: int | None = None, on_start=None, file_permissions: bool = False) -> Run:
    full_env = {**os.environ, "MEDVOL_DEBUG": "", "PYTHONWARNINGS": "ignore",
                "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "COLUMNS": "200",
                **(env or {})}
    full_env.pop("MEDVOL_DEBUG")
    t0 = time.perf_counter()
    p = subprocess.Popen(medvol_cmd(mem, fsize, file_permissions) + [str(a) for a in args],
                         cwd=cwd,
                         env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    if on_start is not None:
        try:
            on_start(p)
        except BaseException:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise
    timed_out = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
    secs = time.perf_counter() - t0
    return Run(p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
               _peak(p), secs, timed_out)


def _peak(p) -> int:
    return getattr(p, "_medvol_maxrss", 0)


# Popen reaps with waitpid(); patch it to use wait4 so each child's own peak RSS is kept.
_orig_wait = subprocess.Popen._try_wait


def _try_wait(self, wait_flags):
    try:
        pid, sts, ru = os.wait4(self.pid, wait_flags)
    except ChildProcessError:
        pid, sts = self.pid, 0
        return pid, sts
    if pid == self.pid:
        self._medvol_maxrss = ru.ru_maxrss * 1024
    return pid, sts


subprocess.Popen._try_wait = _try_wait


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]
