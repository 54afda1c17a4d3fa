"""The house: every import (function-local ones included) points down or sideways, never up, and
no modules import each other in a circle."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "alexnet"
# Each module's floor; a module imports only from its own floor or below (docs: README, Development).
FLOORS = {
    0: ("errors", "fileio", "runtime", "weights", "_version"),
    1: ("models", "data"),
    2: ("config", "checkpoint", "recipe", "loading"),
    3: ("train", "evaluate"),
    4: ("analysis", "experiments"),
    5: ("cli", "__main__", ""),  # "": the package's __init__, the public facade
}


def modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / PACKAGE).rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def floor(name: str) -> int:
    top = name.removeprefix(PACKAGE).lstrip(".").split(".")[0]
    return next(level for level, tops in FLOORS.items() if top in tops)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_floor():
    assert all(isinstance(floor(name), int) for name in modules())


def test_no_module_imports_one_above_it():
    upward = [
        f"{name} (floor {floor(name)}) imports {target} (floor {floor(target)})"
        for name, targets in graph().items()
        for target in targets
        if floor(target) > floor(name)
    ]
    assert upward == []


def test_no_import_circles_function_local_imports_included():
    edges = graph()
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert circles == []


def test_the_checker_sees_a_circle_hidden_in_a_function(tmp_path):
    # the walk must read imports inside functions, where a circle would hide
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import g\n")
    (pkg / "b.py").write_text("def g():\n    from .a import f\n")
    known = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py"}
    assert imports("pkg.b", pkg / "b.py", known) == {"pkg.a"}
    assert imports("pkg.a", pkg / "a.py", known) == {"pkg.b"}
