"""The science stays plain PyTorch: orchestration imports live at the edges."""

import ast
import re

import pytest

from ..conftest import ROOT

IMPORT = re.compile(r"^\s*(?:import|from)\s+(\w+)", re.MULTILINE)


def imported(path) -> set[str]:
    return set(IMPORT.findall(path.read_text()))


def test_src_never_imports_prefect_or_dvc():
    for path in (ROOT / "src").rglob("*.py"):
        assert not imported(path) & {"prefect", "dvc"}, path


def mlflow_users_outside_tracking(src) -> set[str]:
    """The files under ``src`` that import mlflow and lie outside ``prunekd/tracking/``."""
    tracking = src / "prunekd" / "tracking"
    return {p.relative_to(src).as_posix() for p in src.rglob("*.py")
            if "mlflow" in imported(p) and not p.is_relative_to(tracking)}


def test_only_tracking_imports_mlflow():
    src = ROOT / "src"
    assert mlflow_users_outside_tracking(src) == set()
    assert any("mlflow" in imported(p) for p in (src / "prunekd" / "tracking").glob("*.py"))  # the rule holds something


def test_an_mlflow_import_outside_tracking_is_found(tmp_path):
    for name, source in [("prunekd/tracking/run.py", "import mlflow\n"),
                         ("prunekd/tracking/_store.py", "from mlflow.tracking import MlflowClient\n"),
                         ("prunekd/report.py", "def f():\n    from mlflow import log_metric\n"),
                         ("prunekd/stages/tracking.py", "import mlflow.pytorch\n"),
                         ("prunekd/tracking.py", "import mlflow\n")]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    assert mlflow_users_outside_tracking(tmp_path) == {"prunekd/report.py", "prunekd/stages/tracking.py",
                                                       "prunekd/tracking.py"}


def test_every_stage_reads_and_writes_through_its_layout():
    """Each stage's run() takes the Layout, and no stage names a path of its own: a stage runs in
    any folder (a test's, a DVC experiment's copy), and its paths are defined once (paths.py)."""
    import importlib
    import inspect
    import pkgutil

    import prunekd.stages as stages
    from prunekd.paths import Layout

    helpers = {"cli", "artifacts", "plans"}
    names = [m.name for m in pkgutil.iter_modules(stages.__path__) if m.name not in helpers]
    from prunekd.cli import STAGES

    assert sorted(names) == sorted(STAGES), names
    for name in names:
        module = importlib.import_module(f"prunekd.stages.{name}")
        parameter = inspect.signature(module.run).parameters.get("layout")
        assert parameter is not None and parameter.annotation in (Layout, "Layout"), name
    for path in sorted((ROOT / "src" / "prunekd" / "stages").glob("*.py")):  # the helpers too
        source = path.read_text()
        assert not re.search(r"Path\(\s*[\"']", source), f"{path.name}: a path of its own"
        assert not paths_named(source), f"{path.name}: a path of its own: {paths_named(source)}"


# A file name: a name with one of the suffixes prunekd's files have.
FILE_NAME = re.compile(r"\.(pt|onnx|npy|json|csv|png|md|yaml|db|txt)\b")
# Strings with a "/" that are not paths: a character, and an MLflow metric key's prefix.
NOT_PATHS = {"/", "latency/"}


def paths_named(source: str) -> list[str]:
    """The string literals in ``source`` (docstrings aside; f-strings by their literal parts) that
    name a file or a folder path: a "/" or a file's suffix."""
    tree = ast.parse(source)
    docstrings = {node.body[0].value for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node not in docstrings
            and node.value not in NOT_PATHS and ("/" in node.value or FILE_NAME.search(node.value))]


@pytest.mark.parametrize("source, named", [
    ('out = layout.reports / "figures/pareto.png"', ["figures/pareto.png"]),
    ('save(model, scratch / f"{name}.pt")', [".pt"]),
    ('table = Path("reports") / "latency.csv"', ["latency.csv"]),
    ('"""Writes reports/report.md."""\nout = layout.report', []),
    ('name = arch.replace("/", "-")', []),
])
def test_a_path_of_its_own_is_found(source, named):
    assert paths_named(source) == named

class FakeItem:
    def __init__(self, path, marked=False):
        self.path, self.nodeid, self.markers = path, str(path), (["e2e"] if marked else [])

    def add_marker(self, marker):
        self.markers.append(marker.name)

    def get_closest_marker(self, name):
        return name if name in self.markers else None


def test_markers_follow_folders():
    """Every test under tests/e2e is marked e2e, and a test elsewhere cannot be."""
    from .. import conftest

    e2e, unit = FakeItem(ROOT / "tests/e2e/test_x.py"), FakeItem(ROOT / "tests/unit/test_x.py")
    conftest.pytest_collection_modifyitems(None, [e2e, unit])
    assert e2e.markers == ["e2e"] and unit.markers == []
    with pytest.raises(pytest.UsageError, match="outside tests/e2e"):
        conftest.pytest_collection_modifyitems(None, [FakeItem(ROOT / "tests/unit/test_y.py", marked=True)])
