"""The science stays plain PyTorch: orchestration imports live at the edges."""

import re

from ..conftest import ROOT

IMPORT = re.compile(r"^\s*(?:import|from)\s+(\w+)", re.MULTILINE)


def imported(path) -> set[str]:
    return set(IMPORT.findall(path.read_text()))


def test_src_never_imports_prefect_or_dvc():
    for path in (ROOT / "src").rglob("*.py"):
        assert not imported(path) & {"prefect", "dvc"}, path


def test_only_tracking_imports_mlflow():
    users = {p.name for p in (ROOT / "src").rglob("*.py") if "mlflow" in imported(p)}
    assert users == {"tracking.py"}


def test_every_stage_reads_and_writes_through_its_layout():
    """Each stage's run() takes the Layout, and no stage names a path of its own: a stage runs in
    any folder (a test's, a DVC experiment's copy), and its paths are defined once (paths.py)."""
    import importlib
    import inspect
    import pkgutil

    import prunekd.stages as stages
    from prunekd.paths import Layout

    helpers = {"cli", "artifacts"}
    names = [m.name for m in pkgutil.iter_modules(stages.__path__) if m.name not in helpers]
    assert len(names) == 8, names
    for name in names:
        module = importlib.import_module(f"prunekd.stages.{name}")
        parameter = inspect.signature(module.run).parameters.get("layout")
        assert parameter is not None and parameter.annotation in (Layout, "Layout"), name
        source = inspect.getsource(module)
        assert not re.search(r"Path\(\s*[\"']", source), f"{name}: a path of its own"
