"""The Prefect flow's lock: one flow run per repository, however the run was started."""

import pytest

from prunekd.io import StageBusyError, exclusive
from prunekd.paths import Layout

from ..conftest import load_flow_module


def test_the_flow_itself_holds_the_repositorys_lock_so_served_runs_take_it_too(tmp_path):
    """A served schedule or a deployment runs the flow's body, not the command line's main: the body
    takes the lock, so such a run beside another finds it taken before it looks at any stage."""
    flow = load_flow_module()
    with exclusive("flow", Layout(tmp_path).locks), pytest.raises(StageBusyError, match="another run of flow"):
        flow.experiment.fn(root=str(tmp_path))


def test_a_dvc_call_waiting_on_the_projects_lock_gives_up_in_one_line(tmp_path, monkeypatch):
    """Another dvc command holding the project's lock (a `dvc repro` in a terminal) holds up the flow's
    dvc calls: they wait for it (--wait-for-lock), up to DVC_WAIT_S, then fail saying why; once it is
    free they go on."""
    import subprocess

    import zc.lockfile

    from ..conftest import BIN

    flow = load_flow_module()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.setattr(flow, "DVC_WAIT_S", 3)
    held = zc.lockfile.LockFile(str(tmp_path / ".dvc" / "tmp" / "lock"))  # what a running dvc holds
    try:
        with pytest.raises(RuntimeError) as err:
            flow.dvc_status(tmp_path)
    finally:
        held.close()
    [line] = str(err.value).splitlines()
    assert "dvc --wait-for-lock status --json" in line and "not done after 3 s" in line and ".dvc/tmp/lock" in line
    assert flow.dvc_status(tmp_path) == {}
