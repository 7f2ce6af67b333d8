"""The architecture stays visible: no import cycles (lazy imports inside functions
count), and the runtime never imports the training/export side or their libraries."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"fcnx.runtime": "runtime", "fcnx.export": "export", "fcnx.train": "train"}
HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxconverter_common", "tensorboard")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((base, id(node) in top))
            found += [(f"{base}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target, _ in _imports(name, path) if target in modules and target != name}
        for name, path in modules.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_import_graph_has_no_cycles() -> None:
    cycles = find_cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_runtime_imports_neither_train_nor_export_nor_their_libraries() -> None:
    bad = []
    for name, path in _modules().items():
        if not name.startswith("fcnx.runtime"):
            continue
        for target, top_level in _imports(name, path):
            if target.startswith(("fcnx.train", "fcnx.export")):
                bad.append(f"{path.relative_to(ROOT)} imports {target}")
            elif top_level and target.split(".")[0] in HEAVY:
                bad.append(f"{path.relative_to(ROOT)} imports {target} at module level")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_lazy_imports_and_relative_ones(tmp_path: Path) -> None:
    source = tmp_path / "job.py"
    source.write_text("from ..card import ModelCard\n\ndef f():\n    import onnx\n    from . import ray\n")
    found = _imports("fcnx.runtime.predict.job", source)
    assert ("fcnx.runtime.card", True) in found and ("onnx", False) in found
    assert ("fcnx.runtime.predict.ray", False) in found


def test_every_package_is_in_the_wheel() -> None:
    """pyproject.toml lists packages by hand (an editable install would hide a missing one)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "fcnx." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("train", "export", "runtime")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "packages missing from pyproject.toml's [tool.setuptools] packages"
