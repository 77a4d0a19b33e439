"""The package's shape, as a test: imports run one way (import-linter's contracts in pyproject.toml), no
module imports another module's private (`_x`) names, and each subpackage names its public API."""
from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("data", "nets", "training", "evaluation", "serving", "tracking", "experiments")


def test_imports_follow_the_layers_and_have_no_cycle():
    """`lint-imports`: config -> data, nets -> training -> ... -> cli, and no cycle inside any package
    (function-level imports count: grimp reads every import statement)."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is not installed: make install"
    done = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def private_imports(path: Path) -> list[str]:
    """`from M import _x` and `M._x` for another module M of the project (ssgan.*, or a bench script)."""
    local = {p.stem for p in (ROOT / "bench").glob("*.py")}
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            ours = node.module.split(".")[0] in ("ssgan", *local)
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {a.name}"
                      for a in node.names if ours and a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = ast.unparse(node.value)
            if base.startswith("ssgan.") or base in local:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {base}.{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("ssgan."):
            if any(part.startswith("_") and not part.startswith("__") for part in node.value.split(".")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")  # monkeypatch targets
    return found


def test_no_private_name_is_imported_from_another_module():
    files = [*ROOT.glob("ssgan/**/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("tests/*.py"), ROOT / "cli.py"]
    found = [hit for f in files for hit in private_imports(f)]
    assert not found, "private names used across modules (make them public where two modules need them):\n" + \
        "\n".join(found)


def test_private_name_check_sees_an_import(tmp_path, monkeypatch):
    """The check above can fail: it finds both spellings of a private import."""
    probe = ROOT / "tests" / "_probe_private_import.py"
    probe.write_text("from ssgan.config import _coerce\nimport ssgan.config\nssgan.config._first_line\n")
    try:
        assert len(private_imports(probe)) == 2
    finally:
        probe.unlink()


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_names_its_public_api(name):
    package = importlib.import_module(f"ssgan.{name}")
    assert package.__doc__, f"ssgan.{name} has no docstring saying what it holds"
    assert package.__all__, f"ssgan.{name}.__init__ names no public API (__all__)"
    for public in package.__all__:
        assert hasattr(package, public), f"ssgan.{name}.__all__ names {public!r}, which it does not export"


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(done.stdout.split())


def test_training_and_evaluation_run_without_mlflow():
    """bench/gpu_recipe.py trains on lent GPU machines that have torch but no MLflow."""
    loaded = imported_after("import ssgan.training, ssgan.evaluation, ssgan.data, ssgan.nets; "
                            "from ssgan.training.seeds import member_seeds")
    assert "mlflow" not in loaded


def test_a_served_model_loads_no_training_code():
    """Loading the pyfunc model (what `mlflow models serve` runs) pulls in no training loop, CUDA graphs,
    resume or watchdog (tqdm comes with MLflow itself)."""
    loaded = imported_after("import ssgan.serving.pyfunc_model")
    assert "ssgan.serving.predictor" in loaded and "mlflow" in loaded
    assert not {m for m in loaded if m.startswith("ssgan.training")}


def test_no_module_imports_itself_through_others():
    """No cycle in the whole import graph, at any depth (a package and its modules included): what the
    layers and acyclic-siblings contracts could miss. Function-level imports count."""
    import grimp

    graph = grimp.build_graph("ssgan", cache_dir=None)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str]:
        state[module] = 1
        for nxt in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(nxt) == 1:
                return path + [module, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [module])):
                return cycle
        state[module] = 2
        return []

    for module in sorted(graph.modules):
        if module not in state and (cycle := visit(module, [])):
            start = cycle.index(cycle[-1])
            raise AssertionError("import cycle: " + " -> ".join(cycle[start:]))
