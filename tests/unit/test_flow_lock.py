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
