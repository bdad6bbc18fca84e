"""The package order of sparkrec (see sparkrec/__init__.py): no package imports one above it."""
import ast
from pathlib import Path

import sparkrec

ROOT = Path(sparkrec.__file__).parent


def imports_of(path: Path) -> set[str]:
    """Top-level sparkrec names (``data``, ``lake``, ...) a module imports, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "jobs":
                found.add("jobs")
            elif parts[0] == "sparkrec" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_no_package_imports_one_above_it():
    rank = {name: i for i, name in enumerate(sparkrec.LAYERS, start=1)}
    foundation = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"} | {"config"}
    assert set(rank) | foundation >= {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        own = rank.get(parts[0], 0) if len(parts) > 1 else 0  # foundation modules and config: 0
        for used in imports_of(path) - {parts[0]}:
            if used == "jobs" or rank.get(used, 0) > own:
                wrong.append(f"{path.relative_to(ROOT.parent)} imports sparkrec.{used}")
    assert not wrong, wrong


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from sparkrec.evaluate.run import run_evaluate\n    import jobs.score\n")
    assert imports_of(module) == {"evaluate", "jobs"}
