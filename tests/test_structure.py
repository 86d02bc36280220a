"""The package's shape: no import cycle between its modules, no long function in finalize or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import edgenas

PACKAGE = Path(edgenas.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports when it is imported (function-level imports are lazy: not counted)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found - {_module_name(path)}


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: _top_level_imports(p, set(files)) for m, p in files.items()}
    for m in graph:  # importing a.b imports a first
        graph[m] |= {d.rsplit(".", 1)[0] for d in graph[m] if "." in d and d.rsplit(".", 1)[0] in graph} - {m}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph[m]):
            # a package importing its own submodules is how a package is built, not a cycle
            if d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                return path[path.index(d) :] + [d] if d in path else [m, d]
            if d not in state and (found := visit(d, path + [d])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    assert "edgenas.cli._lut" in graph and "edgenas.finalize" in graph["edgenas.pipeline"] | graph["edgenas.config"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_function_in_finalize_or_the_cli_is_long():
    files = [PACKAGE / "finalize.py", *(PACKAGE / "cli").glob("*.py")]
    long = [
        f"{p.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for p in files
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 60
    ]
    assert not long
