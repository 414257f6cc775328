"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    # Prefer <repo>/../shared/data so a clean CI clone with shared/ beside it works.
    for cand in (_REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand.resolve()
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real test data (``<repo>/../shared/data``); skips the test if it is absent."""
    d = _shared_data_dir()
    if d is None:
        pytest.skip("real test data not found: expected ../shared/data beside the repository")
    return d
