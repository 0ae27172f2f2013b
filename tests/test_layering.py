"""The packages' layering, read from the source (every import, also those inside
functions): no import circle between modules, and none of the forbidden edges.

    explain  ─►  (nothing of ours)          the library: no Flask, Celery, database, HTML
    reports  ─►  explain
    api      ─►  explain, reports            sends tasks by name, never imports worker
    worker   ─►  explain, reports, api core  never the HTTP layer (api.resources, api.web)

``explain.cli`` is exempt: the ``xaudit`` command is where every package is wired together
(``serve`` runs the API and a worker). Imports under ``if TYPE_CHECKING:`` are not edges.

Circles are looked for twice: between the layers (explain, reports, the API's HTTP layer,
the API's shared core, worker) over every import, and between modules over the imports
that run when a module is imported (a circle there breaks ``import``; a function that
imports a sibling at call time is how a registry and its plug-ins legitimately meet).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("explain", "reports", "api", "worker")

#: (importer prefix, imported prefix, why).
FORBIDDEN = [
    ("explain", "reports", "the library validates its own report (explain.report_schema)"),
    ("explain", "api", "the library runs without the service"),
    ("explain", "worker", "the library runs without the service"),
    ("reports", "api", "rendering needs no service"),
    ("reports", "worker", "rendering needs no service"),
    ("api", "worker", "the API sends tasks by name (api.queue.send_task)"),
    ("worker", "api.resources", "the worker shares the HTTP-free core, not the HTTP layer"),
    ("worker", "api.web", "the worker shares the HTTP-free core, not the HTTP layer"),
]
EXEMPT = ("explain.cli",)

#: Modules the API and the worker share; they must not reach the HTTP layer either.
HTTP_FREE = ("api.lifecycle", "api.cron", "api.webhook_policy", "api.queue", "api.db",
             "api.config")
#: What the worker's tasks run: HTTP-free as well (the tasks are only entry points).
WORKER_CORE = ("worker.audit_runner", "worker.audit_state", "worker.explain_runner",
               "worker.fanout", "worker.storage", "worker.transient")
HTTP_MODULES = ("api.resources", "api.web", "api.errors", "apiflask", "werkzeug")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(module: str, path: Path, known: Mapping[str, Path] | None = None,
                    at_import: bool = False) -> set[str]:
    """Every module name ``module`` imports (absolute). ``from pkg import sub`` names the
    submodule ``pkg.sub`` when it is one of ``known``, else ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    is_pkg = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if at_import and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return  # runs when called, not when the module is imported
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            for a in node.names:
                sub = f"{name}.{a.name}"
                names.add(sub if known is not None and sub in known else name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _graph(at_import: bool = False) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between our modules, every imported name per module)."""
    mods = _modules()

    def ours(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges, raw = {}, {}
    for m, path in mods.items():
        raw[m] = _imported_names(m, path, mods, at_import)
        edges[m] = {t for t in map(ours, raw[m]) if t and t != m}
    return edges, raw


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


#: The API's HTTP layer: the app factory (the ``api`` package itself), blueprints, pages.
HTTP_LAYER = ("api.resources", "api.web")


def layer(module: str) -> str:
    """The layer a module belongs to."""
    if module == "api" or any(_under(module, h) for h in HTTP_LAYER):
        return "api (HTTP)"
    if _under(module, "api"):
        return "api (core)"
    return module.split(".")[0]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


@pytest.fixture(scope="module")
def graph():
    return _graph()


def test_no_circle_between_layers(graph):
    edges, _ = graph
    layers: dict[str, set[str]] = {}
    for m, targets in edges.items():
        if m.startswith(EXEMPT):
            continue
        layers.setdefault(layer(m), set()).update(layer(t) for t in targets)
    for name, targets in layers.items():
        targets.discard(name)
        for t in targets:
            layers.setdefault(t, set())
    assert _cycles(layers) == []


def test_no_import_circle_at_import_time():
    edges, _ = _graph(at_import=True)
    assert _cycles(edges) == []


def test_no_forbidden_edge(graph):
    edges, _ = graph
    bad = [f"{m} imports {t}: {why}"
           for m, targets in sorted(edges.items()) if not m.startswith(EXEMPT)
           for t in sorted(targets)
           for src, dst, why in FORBIDDEN if _under(m, src) and _under(t, dst)]
    assert bad == []


def test_shared_service_modules_are_http_free(graph):
    _, raw = graph
    bad = [f"{m} imports {name}" for m in HTTP_FREE + WORKER_CORE
           for name in sorted(raw[m]) if any(_under(name, h) for h in HTTP_MODULES)]
    assert bad == []


def test_the_task_module_holds_only_task_entry_points():
    """worker/tasks.py defines Celery tasks and nothing else: what they run lives in the
    worker's HTTP-free modules (WORKER_CORE)."""
    tree = ast.parse((ROOT / "worker" / "tasks.py").read_text(encoding="utf-8"))
    bad = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bad.append(f"class {node.name}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            decorators = {getattr(d.func if isinstance(d, ast.Call) else d, "id", None)
                          for d in node.decorator_list}
            if "shared_task" not in decorators:
                bad.append(f"def {node.name}")
    assert bad == []


def test_the_checker_sees_edges_and_circles(tmp_path):
    """The walker finds imports inside functions and reports a circle."""
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\n"
                    "def f():\n    from worker import tasks\n"
                    "if TYPE_CHECKING:\n    import reports\n", encoding="utf-8")
    names = _imported_names("explain.m", path, {"worker.tasks": path})
    assert "worker.tasks" in names and "reports" not in names
    assert "worker.tasks" not in _imported_names("explain.m", path, {"worker.tasks": path},
                                                 at_import=True)
    assert layer("api.resources.audits") == "api (HTTP)" and layer("api.db") == "api (core)"
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
