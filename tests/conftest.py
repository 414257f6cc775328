"""Shared pytest fixtures.

Data policy (issue 20)
----------------------
* Data bundled in ``sample_data/`` is used from there (fixture ``sample_data``); a missing bundled
  file is a failure, never a skip.
* Real data that is not bundled lives in ``../shared/data`` beside the repository (fixture
  ``shared_data``). The path is relative to the repository root; there is no absolute fallback.
  ``MEDVOL_TEST_SHARED`` overrides it (relative paths are taken from the repository root).
  When the folder is missing the test is skipped on a developer machine but **fails** when the
  ``CI`` environment variable is set, so a CI run without the data cannot pass with skips.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"


def shared_data_path() -> Path:
    """Where the real test data is expected: ``$MEDVOL_TEST_SHARED`` or ``<repo>/../shared/data``."""
    env = os.environ.get("MEDVOL_TEST_SHARED")
    if env:
        p = Path(env)
        return p if p.is_absolute() else REPO / p
    return REPO.parent / "shared" / "data"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_path(p: Path, what: str) -> Path:
    """Fail (never skip) when a path the tests rely on is missing."""
    if not p.exists():
        pytest.fail(f"{what} missing: {p}", pytrace=False)
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real test data (``<repo>/../shared/data`` or ``$MEDVOL_TEST_SHARED``).

    Missing: fails when ``CI`` is set (naming the path), else skips the test.
    """
    d = shared_data_path()
    if not d.is_dir():
        msg = (f"real test data not found: {d} (expected ../shared/data beside the repository, "
               "or set MEDVOL_TEST_SHARED)")
        if _ci():
            pytest.fail(f"CI is set and {msg}", pytrace=False)
        pytest.skip(msg)
    return d.resolve()


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The bundled ``sample_data/`` folder (fails if absent)."""
    return require_path(SAMPLE_DATA, "bundled sample_data/ folder")


@pytest.fixture(scope="session")
def ge_ct_dir(sample_data) -> Path:
    """Bundled GE head CT DICOM series (28 slices, gantry tilt)."""
    return require_path(sample_data / "dicom" / "ct_head_ge_tilt", "bundled GE head CT DICOM")


def pytest_collection_modifyitems(session, config, items):
    """Run ``tests/hostile`` first. Its peak-RSS assert reads each CLI child's ``ru_maxrss``,
    and on Linux a forked child's peak starts at the parent's RSS at fork time; this process is
    smallest before the in-process tests have loaded torch models. (So the measure is an upper
    bound of the child's own peak, never an underestimate.) Stable sort: the order is otherwise
    unchanged."""
    items.sort(key=lambda item: 0 if "hostile" in item.path.parts else 1)
