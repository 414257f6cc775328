"""Progress bars: determinate on a terminal (pseudo-TTY), absent with --no-progress or when piped."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medvol import _progress


def _run_pty(args: list[str], cwd: Path, timeout: float = 600.0) -> tuple[int, str]:
    """Run ``python -m medvol.cli ARGS`` with stdout/stderr on a pseudo-terminal; return
    (exit code, everything it drew)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "MEDVOL_NO_PROGRESS"}
    env.update(COLUMNS="160", TERM="xterm", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "medvol.cli", *args], cwd=cwd, stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            r, _, _ = select.select([master], [], [], timeout)
            if not r:
                proc.kill()
                pytest.fail(f"no output for {timeout} s from {args}")
            try:
                data = os.read(master, 65536)
            except OSError:     # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    return proc.wait(timeout=timeout), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # no colours


def _run_piped(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MEDVOL_NO_PROGRESS"}
    env.update(OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "medvol.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory) -> Path:
    import medvol.io as mio
    from medvol import Volume

    d = tmp_path_factory.mktemp("prog")
    yy, xx = np.mgrid[-1:1:48j, -1:1:48j]
    img = np.where(xx ** 2 / 0.8 + yy ** 2 / 0.6 < 0.7, 40.0, -1000.0)
    img[(xx - 0.2) ** 2 + yy ** 2 < 0.05] = 300.0
    vol = Volume(np.stack([img, img]).astype(np.float32), spacing=(2.0, 2.0, 2.0),
                 meta={"modality": "CT", "units": "HU"})
    mio.write(vol, d / "ct.nrrd")
    return d / "ct.nrrd"


_RECON = ["--method", "tv", "--n-iter", "60", "--views", "6", "--full-views", "90"]


def test_recon_tv_draws_a_determinate_bar_on_a_terminal(small_ct, tmp_path):
    code, text = _run_pty(["recon", str(small_ct), "-o", str(tmp_path / "r"), *_RECON], tmp_path)
    assert code == 0, text
    # the bar names the solver and counts iterations against the total: determinate
    assert re.search(r"TV-PDHG.*\b\d+/60 it", text), text[-2000:]
    assert "60/60 it" in text
    assert (tmp_path / "r" / "recon.nrrd").is_file()


def test_recon_no_progress_draws_no_bar(small_ct, tmp_path):
    code, text = _run_pty(["recon", str(small_ct), "-o", str(tmp_path / "r"), *_RECON,
                           "--no-progress"], tmp_path)
    assert code == 0, text
    assert "TV-PDHG" not in text and "/60 it" not in text
    assert "wrote" in text


def test_recon_piped_draws_no_bar(small_ct, tmp_path):
    res = _run_piped(["recon", str(small_ct), "-o", str(tmp_path / "r"), *_RECON], tmp_path)
    assert res.returncode == 0, res.stderr
    both = res.stdout + res.stderr
    assert "TV-PDHG" not in both and "/60 it" not in both and "\x1b[" not in both


def test_register_affine_draws_levels_on_a_terminal(tmp_path):
    import medvol.io as mio
    from medvol import Volume

    zz, yy, xx = np.mgrid[-1:1:24j, -1:1:24j, -1:1:24j]
    blob = np.exp(-((xx - 0.1) ** 2 + yy ** 2 / 0.5 + zz ** 2) * 4).astype(np.float32)
    mio.write(Volume(blob, spacing=(2.0, 2.0, 2.0)), tmp_path / "f.nrrd")
    mio.write(Volume(np.roll(blob, 2, axis=2), spacing=(2.0, 2.0, 2.0)), tmp_path / "m.nrrd")
    args = ["register", str(tmp_path / "f.nrrd"), str(tmp_path / "m.nrrd"), "--method", "affine"]
    code, text = _run_pty([*args, "-o", str(tmp_path / "a")], tmp_path)
    assert code == 0, text
    assert re.search(r"affine level [123]/3.*\b\d+/600 it", text), text[-2000:]
    code, text = _run_pty([*args, "-o", str(tmp_path / "b"), "--no-progress"], tmp_path)
    assert code == 0, text
    assert "affine level" not in text


def test_bar_is_silent_off_a_terminal(capsys):
    with _progress.bar(3, "x", progress=True) as update:   # pytest's stderr is not a TTY
        assert update is _progress.NOOP
        update(loss=1.0)
    with _progress.scope(False):
        assert not _progress.enabled(None)
    assert capsys.readouterr().err == ""
