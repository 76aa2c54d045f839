"""The import ladder: every module of the package lives on a floor and imports only from its floor or below.

A new module must be given a floor here (the test fails until it is), which is
the moment to ask whether it sits where it should. Imports inside functions
count too: a lazy import of a higher floor is still an upward dependency.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llmcourse"

FLOORS = {
    1: {"config", "kernels", "auxiliary", "masks", "data", "tokenizers", "progress", "counting", "notebook"},
    2: {"norms", "ffn", "positions", "efficient_attention", "objectives", "denoising", "checkpoint"},
    3: {"attention", "moe"},
    4: {"blocks"},
    5: {"models"},
    6: {"train", "generate", "hf", "distributed", "recipes"},
    7: {"benchmarks", "experiments", "__init__"},
}
FLOOR = {name: floor for floor, names in FLOORS.items() for name in names}


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package).with_suffix("")
    return rel.parts[0]  # a subpackage (hf, benchmarks) is one room


def _imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """The package modules a file imports (relative or absolute), by top-level name."""
    out = set()
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(package).parts) - 1  # 0 for llmcourse/x.py, 1 for llmcourse/hf/x.py
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1 - depth  # < 0: inside the same subpackage
                if up < 0:
                    continue
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("llmcourse."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("llmcourse."):
                    out.add(alias.name.split(".")[1])
    return out


FILES = sorted(p for p in PACKAGE.rglob("*.py"))


def _check(path: Path, package: Path = PACKAGE) -> None:
    name = _module_name(path, package)
    assert name in FLOOR, f"llmcourse/{name} has no floor: add it to FLOORS in tests/test_ladder.py"
    for dep in _imports(path, package) - {name}:
        assert dep in FLOOR, f"{path.name} imports llmcourse.{dep}, which has no floor"
        if name != "__init__":
            assert FLOOR[dep] <= FLOOR[name], (
                f"{path.relative_to(package)} (floor {FLOOR[name]}) imports {dep} (floor {FLOOR[dep]}): "
                "an upward import; move the code to the right floor"
            )


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_has_a_floor_and_imports_only_downwards(path):
    _check(path)


def test_no_import_cycles_between_modules():
    graph = {}
    for path in FILES:
        name = _module_name(path)
        graph.setdefault(name, set()).update(_imports(path) - {name})
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail + [dep]))
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_the_ladder_test_catches_an_upward_import(tmp_path):
    fake = tmp_path / "llmcourse"
    fake.mkdir()
    (fake / "norms.py").write_text("def f():\n    from .models import build_model\n")
    with pytest.raises(AssertionError, match="upward import"):
        _check(fake / "norms.py", fake)
    (fake / "norms.py").write_text("from .masks import combine\n")
    _check(fake / "norms.py", fake)
