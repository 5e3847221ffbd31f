"""The architecture of DESIGN.md, enforced: every import of the package — including those placed inside functions —
goes the way the layers allow, and no two modules import each other, even through a chain.

    notebooks ──> labmail public API
    display (widgets, plots, classroom) ──> core            nothing but notebooks and the CLI imports them
    course, grading ──> core, lab (public API)
    lab/ ──> core                                           never display, course, pandas, matplotlib, ipywidgets
    core ──> base                                           never lab, display, course

``if TYPE_CHECKING:`` blocks are not imports. The package itself (``labmail/__init__.py``) is a lazy index of its
submodules, importing nothing at run time: a module may take ``__version__`` from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "labmail"

BASE = {"labmail", "labmail.i18n", "labmail.errors", "labmail._files", "labmail.config", "labmail.state", "labmail.roster",
        "labmail._rfc5322", "labmail._records", "labmail.actions", "labmail._nodoh"}
CORE = {"labmail.world", "labmail.dns", "labmail.spf", "labmail.dkim", "labmail.dmarc", "labmail.authres", "labmail.headers",
        "labmail.judge", "labmail.checks", "labmail.mail", "labmail.reports", "labmail.autodiscover", "labmail.replay",
        "labmail.quiz", "labmail.interro", "labmail.zonepanel", "labmail.resolver"}
DISPLAY = {"labmail.widgets", "labmail.plots", "labmail.classroom"}
COURSE = {"labmail.course", "labmail.grading", "labmail.thunderbird", "labmail.nbgrader_plugins", "labmail.loadtest",
          "labmail.liveclass"}
TOOLS = {"labmail.cli"}
ALLOWED = {
    "base": {"base"},
    "core": {"base", "core"},
    "lab": {"base", "core", "lab"},
    "display": {"base", "core", "display"},
    "course": {"base", "core", "lab", "course"},
    "tools": {"base", "core", "lab", "course", "display", "tools"},
}
HEAVY = {"pandas", "matplotlib", "ipywidgets", "IPython"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    if module.startswith("labmail.lab"):
        return "lab"
    for name, members in (("base", BASE), ("core", CORE), ("display", DISPLAY), ("course", COURSE), ("tools", TOOLS)):
        if module in members:
            return name
    raise AssertionError(f"{module} is in no layer: add it to tests/test_layers.py (and to the README's architecture)")


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in ROOT.rglob("*.py")}


def _runtime_imports(tree: ast.AST):
    """Every Import/ImportFrom node outside ``if TYPE_CHECKING:`` blocks, with whether it is at module level."""
    def walk(node, top):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    yield from walk(sub, top)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, top
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            yield from walk(child, inner)
    yield from walk(tree, True)


def scan() -> tuple[dict[str, set[str]], dict[str, set[tuple[str, bool]]]]:
    """(edges between labmail modules, external top-level packages imported with whether at module level)."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    external: dict[str, set[tuple[str, bool]]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node, top in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "labmail":
                        edges[name].add(alias.name if alias.name in modules else "labmail")
                    else:
                        external[name].add((alias.name.split(".")[0], top))
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("labmail"):
                external[name].add((target.split(".")[0], top))
                continue
            for alias in node.names:  # "from . import dns" is an edge to labmail.dns, not to the package
                candidate = f"{target}.{alias.name}"
                edges[name].add(candidate if candidate in modules else target)
        edges[name].discard(name)
    return edges, external


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), the package node left out."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w == "labmail":
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_every_import_goes_the_way_the_layers_allow():
    edges, _external = scan()
    wrong = sorted(f"{a} ({_layer(a)}) → {b} ({_layer(b)})" for a, targets in edges.items() for b in targets
                   if _layer(b) not in ALLOWED[_layer(a)])
    assert not wrong, "imports against DESIGN's layers:\n" + "\n".join(wrong)


def test_no_cycle_between_modules():
    cycles = _cycles(scan()[0])
    assert not cycles, "modules importing one another (through imports inside functions too):\n" + "\n".join(
        " ↔ ".join(c) for c in cycles)


def test_the_lab_never_imports_pandas_matplotlib_or_widgets_and_core_only_lazily():
    _edges, external = scan()
    lab = sorted(f"{m} imports {pkg}" for m, pkgs in external.items() if _layer(m) == "lab"
                 for pkg, _top in pkgs if pkg in HEAVY)
    assert not lab, lab
    eager = sorted(f"{m} imports {pkg} at module level" for m, pkgs in external.items() if _layer(m) in ("base", "core")
                   for pkg, top in pkgs if pkg in HEAVY and top)
    assert not eager, eager  # core builds DataFrames only in a to_dataframe()-like helper, importing pandas there


def test_the_scan_sees_imports_inside_functions():
    """The test would fail on a function-level import against the layers (here: dns → lab, as world → lab once was)."""
    tree = ast.parse("def f():\n    from .lab import PROTOCOL\nif TYPE_CHECKING:\n    import pandas\n")
    found = [(type(n).__name__, top) for n, top in _runtime_imports(tree)]
    assert found == [("ImportFrom", False)]
    assert "labmail.lab" not in ALLOWED["core"] and _layer("labmail.lab.server") == "lab"
