"""Import hygiene: every module imports on its own, no cycle between packages, and only
``medvol.cli`` imports ``medvol.commands``.

The package graph is built with :mod:`ast` from every ``import`` statement (module level *and*
inside functions: a lazy import is still a dependency) in ``medvol/``, ``kernels/``
(``medvol.kernels``), ``models/`` (``medvol.models``) and ``flows/`` (``medvol.flows``). A node
is a subpackage (``medvol.recon``) or a top-level module (``medvol.errors``); ``medvol`` is the
root ``__init__``. Run ``python tests/test_import_graph.py`` to print the graph and the verdict.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"medvol": REPO / "medvol", "medvol.kernels": REPO / "kernels",
         "medvol.models": REPO / "models", "medvol.flows": REPO / "flows"}
_MAPPED = ("kernels", "models", "flows")

# Package edges that close a cycle or import medvol.commands and are being removed by other
# work on issue 12 (jobs out of the CLI; projections reusing recon.fbp). The test fails on any
# violation not listed here, and xfails while a listed one remains.
PENDING = {
    ("medvol.flows", "medvol.commands"): "flows call typer commands (issue 12: jobs out of the CLI)",
    ("medvol.commands", "medvol.flows"): "cycle with the edge above",
    ("medvol.recon", "medvol.projections"): "recon.run ↔ projections (issue 12: io/projections split)",
    ("medvol.projections", "medvol.recon"): "cycle with the edge above",
}


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every module of the installed package layout."""
    mods = {}
    for pkg, d in ROOTS.items():
        for f in sorted(d.rglob("*.py")):
            parts = list(f.relative_to(d).with_suffix("").parts)
            if pkg == "medvol" and parts[0] in _MAPPED:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg] + parts)] = f
    return mods


def node(mod: str) -> str:
    p = mod.split(".")
    return ".".join(p[:2])


def imports_of(name: str, f: Path, mods: dict) -> set[str]:
    """Modules of ``mods`` imported anywhere in ``f`` (absolute, relative, lazy)."""
    tree = ast.parse(f.read_text(encoding="utf-8"))
    base = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for n in ast.walk(tree):
        targets = []
        if isinstance(n, ast.Import):
            targets = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                b = base[:len(base) - (n.level - 1)]
                mod = ".".join(b + ([n.module] if n.module else []))
            else:
                mod = n.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in n.names]
        for t in targets:
            if t.split(".")[0] in _MAPPED:
                t = "medvol." + t
            while t and t not in mods:         # `import medvol.recon.fbp as x` → the module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def package_graph() -> dict[str, set[str]]:
    mods = module_files()
    g: dict[str, set[str]] = {}
    for name, f in mods.items():
        for t in imports_of(name, f, mods):
            a, b = node(name), node(t)
            if a != b:
                g.setdefault(a, set()).add(b)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(g) | {w for ws in g.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def violations(g) -> set[tuple[str, str]]:
    """Edges inside a cycle, and edges into medvol.commands from anything but medvol.cli."""
    bad = set()
    for comp in cycles(g):
        for a in comp:
            bad |= {(a, b) for b in g.get(a, ()) if b in comp}
    bad |= {(a, "medvol.commands") for a, bs in g.items()
            if "medvol.commands" in bs and a != "medvol.cli"}
    return bad


def report() -> str:
    g = package_graph()
    lines = [f"{a} -> {', '.join(sorted(bs))}" for a, bs in sorted(g.items())]
    cyc = cycles(g)
    cmd = sorted(a for a, bs in g.items() if "medvol.commands" in bs)
    lines.append(f"package cycles: {cyc if cyc else 'none'}")
    lines.append(f"importers of medvol.commands: {cmd}")
    return "\n".join(lines)


def test_package_graph_has_no_cycles_and_only_cli_imports_commands():
    g = package_graph()
    print(report())
    # the graph is real: known dependencies are found (lazy imports included)
    assert "medvol.kernels" in g["medvol.recon"] and "medvol.learned" in g["medvol.registration"]
    assert "medvol.commands" in g["medvol.cli"]
    bad = violations(g)
    new = sorted(bad - set(PENDING))
    assert not new, f"import cycles / medvol.commands importers: {new}"
    for a, b in [("medvol.learned", "medvol.recon"), ("medvol.learned", "medvol.commands"),
                 ("medvol.learned", "medvol.registration"), ("medvol.kernels", "medvol.recon")]:
        assert b not in g.get(a, set()), f"{a} must not import {b}"
    if bad:
        pytest.xfail(f"pending (other issue-12 work): {sorted(bad)}")


def test_cycle_detector_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert violations({"medvol.flows": {"medvol.commands"}, "medvol.cli": {"medvol.commands"}}) \
        == {("medvol.flows", "medvol.commands")}


_ISOLATED = r"""
import importlib, json, sys, traceback
names = json.loads(sys.argv[1])
failed = {}
for name in names:
    for k in [k for k in sys.modules if k == "medvol" or k.startswith("medvol.")]:
        del sys.modules[k]
    importlib.invalidate_caches()
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        failed[name] = f"{type(e).__name__}: {e}"
print(json.dumps({"n": len(names), "failed": failed}))
"""


@pytest.mark.slow
def test_every_module_imports_in_isolation():
    """Each module imports from a cold ``medvol`` (all medvol modules dropped from
    ``sys.modules`` before each import; third-party packages stay cached for speed), in a
    subprocess so the test session is untouched. A circular import fails here."""
    names = sorted(n for n in module_files() if not n.endswith("__main__"))
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-c", _ISOLATED, json.dumps(names)], capture_output=True,
                       text=True, env=env, cwd=str(REPO.parent), timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"imported {res['n']} modules in isolation; failures: {res['failed'] or 'none'}")
    assert res["n"] == len(names) > 50
    assert res["failed"] == {}


if __name__ == "__main__":
    print(report())
    v = violations(package_graph())
    print("violations:", sorted(v) if v else "none")
