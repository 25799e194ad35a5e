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
