"""Fixtures of the flow tests: one Prefect test server for the session, small DICOM studies.

Prefect runs against ``prefect_test_harness`` (a temporary SQLite API server) with a temporary
``PREFECT_HOME`` and telemetry off; no real Prefect server is needed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# before Prefect is imported anywhere in this session
_HOME = tempfile.mkdtemp(prefix="medvol-prefect-home-")
os.environ["PREFECT_HOME"] = _HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "dicom" / "ct_head_ge_tilt"

#: quick reconstruction options used by every flow test (2 slices, 4x downsampled, 20 TV steps)
QUICK = dict(method="tv", n_iter=20, slices="0:2", downsample=4, views=16)


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect API server for the whole session; yields its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()
    shutil.rmtree(_HOME, ignore_errors=True)


def _sample_files() -> list[Path]:
    files = sorted(SAMPLE.glob("*.dcm"))
    if len(files) < 20:
        pytest.fail(f"bundled sample DICOM missing: {SAMPLE}", pytrace=False)
    return files


def make_study(dest: Path, first: int, n: int = 4) -> Path:
    """A small real CT study: ``n`` consecutive slices of the bundled GE head CT."""
    dest.mkdir(parents=True)
    for f in _sample_files()[first:first + n]:
        shutil.copy(f, dest / f.name)
    return dest


@pytest.fixture(scope="session")
def studies(tmp_path_factory) -> dict[str, Path]:
    """Four good studies (different slices of the head CT) and one with a truncated DICOM."""
    root = tmp_path_factory.mktemp("studies")
    out = {f"study{i}": make_study(root / f"study{i}", 4 + 4 * i) for i in range(4)}
    bad = make_study(root / "corrupt", 6)
    victim = sorted(bad.glob("*.dcm"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    out["corrupt"] = bad
    return out


@pytest.fixture(scope="session")
def quick() -> dict:
    return dict(QUICK)


@pytest.fixture(scope="session")
def sample_dicom() -> Path:
    _sample_files()
    return SAMPLE


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def study_factory():
    return make_study
