"""The test suite's data policy (issue 20): missing real data fails loudly under CI.

Runs one real-data test in a child pytest with ``MEDVOL_TEST_SHARED`` pointing at a folder that
does not exist (the real ``../shared`` is never renamed or touched).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = "tests/io/test_dicom.py::test_nine_transfer_syntaxes_decode_identically"


def _child(tmp_path, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "MEDVOL_TEST_SHARED")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           TARGET], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_missing_shared_data_fails_under_ci(tmp_path):
    missing = tmp_path / "no_such_shared" / "data"
    r = _child(tmp_path, CI="true", MEDVOL_TEST_SHARED=str(missing))
    assert r.returncode != 0, r.stdout
    assert "1 error" in r.stdout or "1 failed" in r.stdout, r.stdout
    assert str(missing) in r.stdout and "CI is set" in r.stdout, r.stdout


def test_missing_shared_data_skips_without_ci_and_says_where(tmp_path):
    missing = tmp_path / "no_such_shared" / "data"
    r = _child(tmp_path, MEDVOL_TEST_SHARED=str(missing))
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout
    assert str(missing) in r.stdout


def test_no_absolute_machine_paths_in_tests():
    """Tests reach real data only through the fixtures (relative to the repository root)."""
    bad = []
    for p in (REPO / "tests").rglob("*.py"):
        if p.name == Path(__file__).name:
            continue
        if "/work/" in p.read_text(encoding="utf-8"):
            bad.append(str(p.relative_to(REPO)))
    assert bad == []


def test_no_importorskip_of_medvol_modules():
    """An ImportError inside medvol must fail the suite, not skip it."""
    import re

    pat = re.compile(r"importorskip\(\s*[\"']medvol")
    bad = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*.py")
           if p.name != Path(__file__).name and pat.search(p.read_text(encoding="utf-8"))]
    assert bad == []
