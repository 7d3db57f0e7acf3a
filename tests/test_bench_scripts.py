"""The benchmark scripts stay importable as the code they measure changes (they are not run here:
tests never measure time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_bench_script_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # as `python bench/x.py` has it (benchlib)
    spec = importlib.util.spec_from_file_location(f"_bench_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top level only: __name__ is not "__main__"
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.stem)
def test_bench_script_stands_alone(script: Path) -> None:
    """Benchmarks run without the test package or pytest (they use dance.testkit instead)."""
    import ast

    tree = ast.parse(script.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top not in {"tests", "pytest", "_pytest"}, f"{script.name} imports {name}"
