"""Run one ``medvol`` command as a subprocess under a memory and a time limit.

The child gets ``RLIMIT_AS`` (address space, default 2 GiB + what torch/numba need to map —
see ``MEMORY_LIMIT``) and is killed after ``timeout`` seconds; its peak RSS comes from
``os.wait4`` (the kernel's accounting of that child only).
"""
from __future__ import annotations

import os
import resource
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


def medvol_cmd() -> list[str]:
    return [sys.executable, "-c", "from medvol.cli import run; run()"]


def run_cli(args: list[str], *, cwd: str | None = None, env: dict | None = None,
            timeout: float = TIME_LIMIT, mem: int = MEMORY_LIMIT, user: int | None = None,
            fsize: int | None = None, on_start=None) -> Run:
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        os.setsid()
        if user is not None:
            os.setgid(user)
            os.setuid(user)

    full_env = {**os.environ, "MEDVOL_DEBUG": "", "PYTHONWARNINGS": "ignore",
                "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "COLUMNS": "200",
                **(env or {})}
    full_env.pop("MEDVOL_DEBUG")
    t0 = time.perf_counter()
    p = subprocess.Popen(medvol_cmd() + [str(a) for a in args], cwd=cwd, env=full_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limits)
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
    # communicate() reaped the child; its rusage is in RUSAGE_CHILDREN only as a max over all
    # children, so read the per-child value from /proc is impossible now: use wait4 via a
    # wrapper instead (see _peak)
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
