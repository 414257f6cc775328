"""Print the hostile-input table (issue 13): input class, command, exit code, stderr lines,
peak RSS, seconds — by running ``tests/hostile`` (all of it, including the process tests).

    .venv/bin/python benchmarks/hostile_table.py            # full table
    .venv/bin/python benchmarks/hostile_table.py -k nrrd    # a subset (pytest -k expression)
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(REPO / "tests" / "hostile"), "-W", "ignore", *argv]
    return subprocess.call(cmd, cwd=REPO)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
