"""Hostile inputs through the real command line (issue 13).

Each case runs ``medvol`` as a subprocess under an address-space limit and a 60 s time limit
and asserts: the documented exit code (never 70), exactly one stderr line on failure, no
traceback, no output (not even a hidden ``.partial`` folder) after a failure, peak RSS ≤ 2 GiB,
and (for the file-read class) that the canary outside the input never reaches any output.
"""
from __future__ import annotations

import os
import shutil

import pytest

from . import generate as G
from .conftest import ROWS
from .harness import RSS_LIMIT, error_lines, run_cli

pytestmark = pytest.mark.hostile

CASES = G.cases()


def _leftovers(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".partial" in p.name or p.name.endswith(".lock"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile(case, tmp_path):
    root = tmp_path / "case"
    root.mkdir()
    kw = dict(case.run_kw)
    if kw.pop("needs_non_root", False) and os.geteuid() == 0:
        pytest.skip("permissions do not apply to root (covered in-process by test_policies.py)")
    args = case.build(root)
    out_existed = (root / "out").exists()
    run = run_cli(args, cwd=str(G.REPO), **kw)
    lines = error_lines(run.stderr)
    ROWS.append({"case": case.name, "cls": case.cls, "command": case.command, "rc": run.rc,
                 "lines": len(lines), "rss": run.max_rss, "seconds": run.seconds,
                 "traceback": "Traceback" in run.stderr + run.stdout,
                 "timed_out": run.timed_out})
    detail = f"rc={run.rc}\nstderr:\n{run.stderr[-3000:]}\nstdout:\n{run.stdout[-1500:]}"
    assert not run.timed_out, "hang: " + detail
    assert run.rc != 70, detail
    assert "Traceback" not in run.stderr + run.stdout, detail
    assert run.rc in case.expect, detail
    if run.rc != 0:
        assert len(lines) == 1, detail
        assert lines[0].startswith("medvol: error:"), detail
        out = root / "out"
        assert out_existed or not out.exists(), "partial output left: " + detail
    assert _leftovers(root) == [], detail
    assert run.max_rss <= RSS_LIMIT, f"peak RSS {run.max_rss / 2**20:.0f} MiB"
    if case.check is not None:
        case.check(root, run)
    shutil.rmtree(tmp_path, ignore_errors=True)
