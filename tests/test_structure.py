"""The package's shape: layers that hold, no private name across packages, no cycle, short functions.

Every import counts, those inside functions too: a lazy import is still a dependency, it
only runs later. The layers, lowest first; a module imports from its own unit or a lower
layer only (a unit is a top-level module or a subpackage of ``edgenas``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import edgenas

PACKAGE = Path(edgenas.__file__).parent

LAYERS = [
    {"edgenas", "errors", "io", "progress", "metrics", "config", "layout"},  # no torch, no optuna
    {"preprocess", "search_spaces", "pruning"},  # pruning: a model transform, which table validation applies
    {"export", "latency_tables"},
    {"accelerator", "data", "predict", "teacher"},
    {"distill", "quant"},
    {"nas"},
    {"finalize", "reports"},
    {"pipeline"},
    {"cli"},
]
LAYER = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}

# What runs on a device (the agent, torch-free predict): the standard library, numpy, a runtime.
DEVICE_MODULES = ["edgenas.latency_tables._agent", "edgenas.predict"]
DEVICE_ALLOWED = {"edgenas", "numpy", "onnxruntime", "openvino"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every ``edgenas`` import in ``path``, at any depth."""
    me = _module_name(path).split(".")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                package = me if path.name == "__init__.py" else me[:-1]
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return [f for f in found if f[1] == "edgenas" or f[1].startswith("edgenas.")]


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edgenas"


def _files() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_every_unit_has_a_layer():
    assert {_unit(m) for m in _files()} <= set(LAYER), "add the new module to LAYERS"


def test_no_import_runs_up_a_layer():
    upward = [
        f"{p.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for m, p in _files().items()
        for line, module, _ in _imports(p)
        if LAYER[_unit(module)] > LAYER[_unit(m)]
    ]
    assert not upward


def test_no_private_name_crosses_a_package():
    crossing = []
    for m, p in _files().items():
        for line, module, names in _imports(p):
            if _unit(module) == _unit(m):
                continue
            private = [s for s in module.split(".")[1:] if s.startswith("_")]
            private += [n for n in names if n.startswith("_") and n != "__version__"]
            if private:
                crossing.append(f"{p.relative_to(PACKAGE.parent)}:{line} {module} {names}")
    assert not crossing


def _import_graph() -> dict[str, set[str]]:
    files = _files()
    graph = {}
    for m, p in files.items():
        deps = set()
        for _, module, names in _imports(p):
            deps |= {n for n in [module, *(f"{module}.{a}" for a in names)] if n in files}
        graph[m] = deps - {m}
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


def test_every_exported_name_exists():
    """``__all__`` of every package names what it defines or imports (a lazy ``__getattr__`` hides the gap)."""
    import importlib

    missing = []
    for path in sorted(PACKAGE.rglob("__init__.py")):
        module = importlib.import_module(_module_name(path))
        missing += [f"{module.__name__}.{n}" for n in getattr(module, "__all__", []) if not hasattr(module, n)]
    assert not missing


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    assert "edgenas.cli._lut" in graph and "edgenas.finalize" in graph["edgenas.pipeline"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_walk_sees_lazy_imports(tmp_path):
    path = PACKAGE / "nas" / "_lazy_probe.py"
    path.write_text("def f():\n    from edgenas.cli import main\n    from edgenas.search_spaces._blocks import X\n")
    try:
        found = _imports(path)
    finally:
        path.unlink()
    assert [m for _, m, _ in found] == ["edgenas.cli", "edgenas.search_spaces._blocks"]
    assert LAYER[_unit("edgenas.cli")] > LAYER["nas"]


def test_no_function_in_the_package_is_long():
    long = [
        f"{p.relative_to(PACKAGE.parent)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for p in PACKAGE.rglob("*.py")
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60
    ]
    assert not long


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_loading_a_config_imports_neither_torch_nor_optuna(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_dir: r\nfinalize: {distill_epochs: 1}\ndevices: [{name: cpu, budget_ms: 1.0}]\n")
    out = _run_isolated(f"""
        import sys
        from edgenas.config import load_config
        config = load_config({str(path)!r})
        assert config.finalize.distill_epochs == 1
        heavy = sorted(m for m in ("torch", "optuna", "onnx", "onnxruntime") if m in sys.modules)
        print(heavy)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", DEVICE_MODULES)
def test_the_device_side_imports_only_the_standard_library_numpy_and_a_runtime(module):
    out = _run_isolated(f"""
        import sys
        import {module}
        new = {{n.split(".")[0] for n in sys.modules}} - set(sys.stdlib_module_names)
        print(sorted(n for n in new if not n.startswith("_")))
    """)
    assert out.returncode == 0, out.stderr
    assert set(eval(out.stdout)) <= DEVICE_ALLOWED


def test_the_agent_measures_without_torch_or_onnx(tmp_path):
    """The agent's whole timing path (protocol, no-op model, runtime) with torch and onnx unimportable."""
    from edgenas.latency_tables import reference_model

    (tmp_path / "ref.onnx").write_bytes(reference_model("fp32"))
    out = _run_isolated(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "optuna"):
                    raise ImportError(name + " is not on the device")
        sys.meta_path.insert(0, Block())
        from edgenas.latency_tables._agent import make_agent_server
        from edgenas.latency_tables import Protocol, time_models
        ref = open({str(tmp_path / "ref.onnx")!r}, "rb").read()
        timings, reference, noop = time_models([ref], ref, protocol=Protocol(warmup=1, rounds=3))
        print(timings[0].ms > 0, noop.ms < reference.ms)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
