"""A seeded subset (150 files) of ``benchmarks/dicom_fuzz.py``: 0 internal errors."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.hostile

_spec = importlib.util.spec_from_file_location(
    "dicom_fuzz", Path(__file__).resolve().parents[2] / "benchmarks" / "dicom_fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


def test_dicom_fuzz_no_internal_errors():
    s = fuzz.run(150, seed=1313, quiet=True)
    assert s["internal"] == 0, s["internal_examples"]
    # every mutation class was exercised and most mutations are refused, not silently read
    assert all(v["n"] == 30 for v in s["per_kind"].values())
    assert s["per_kind"]["truncate"]["ok"] == 0
    assert s["errors"] > s["n"] // 2
