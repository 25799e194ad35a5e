"""The flow's own plumbing: a stage's undecodable output, the interpreter it runs under, a dvc lock
held too long, and the names of its DVC experiments (the flow run whole, failing or cancelled:
tests/e2e/test_flow_stops.py)."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prefect.states import Failed

from ..conftest import BIN, ROOT, clean_env, load_flow_module


class Recorder:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, line: str, *args) -> None:
        self.lines.append(line % args if args else line)


def test_a_stage_writing_bytes_that_are_not_utf8_neither_hangs_the_flow_nor_loses_its_output(tmp_path):
    """A byte that is not UTF-8 on stderr once ended the stderr reader; the stage then filled the pipe
    and blocked, and the flow waited for it for ever."""
    flow = load_flow_module()
    pid_file = tmp_path / "pid"
    stage = ("import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
             "sys.stderr.buffer.write(b'caf\\xff\\n' + b'x' * 99 + b'\\n'); "
             "[sys.stderr.buffer.write(b'y' * 99 + b'\\n') for _ in range(2000)]; "  # 200 KB: beyond a pipe's buffer
             "sys.stdout.buffer.write(b'epoch \\xfe 1\\n')")
    log, returned = Recorder(), {}

    def run() -> None:
        returned["value"] = flow.streamed([sys.executable, "-c", stage, str(pid_file)], tmp_path,
                                          dict(os.environ), log)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=60)
    hung = runner.is_alive()
    if hung:  # end the blocked stage, so the test ends too
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        runner.join(timeout=60)
    assert not hung, "streamed() still waiting on a stage that wrote a byte that is not UTF-8"
    code, stderr = returned["value"]
    assert code == 0
    assert "caf\\xff" in log.lines and "epoch \\xfe 1" in log.lines  # the byte shown, not dropped
    assert len(stderr) == 50 and stderr[-1] == "y" * 99


def test_the_bin_folder_is_the_interpreter_of_the_call_not_of_the_client(tmp_path, monkeypatch):
    """On Dask the flow's functions travel by value, module globals with them: a worker's dvc must be
    found from the worker's own interpreter, asked when the call runs."""
    flow = load_flow_module()
    worker_bin = tmp_path / "worker" / "bin"
    worker_bin.mkdir(parents=True)
    fake_dvc = worker_bin / "dvc"
    fake_dvc.write_text('#!/bin/sh\necho "worker dvc $*"\n')
    fake_dvc.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(worker_bin / "python"))  # after the module was loaded
    assert flow.bin_dir() == worker_bin
    assert flow.with_bin_on_path({"PATH": "/usr/bin"})["PATH"] == f"{worker_bin}{os.pathsep}/usr/bin"
    proc = flow.dvc(tmp_path, "status", "--json")
    assert proc.stdout.strip() == "worker dvc status --json"


@pytest.fixture
def held_dvc_lock(tmp_path):
    """A DVC repository at tmp_path whose lock another dvc command holds."""
    import zc.lockfile

    subprocess.run([str(BIN / "dvc"), "init", "-q", "--no-scm"], cwd=tmp_path, check=True)
    held = zc.lockfile.LockFile(str(tmp_path / ".dvc" / "tmp" / "lock"))
    try:
        yield tmp_path
    finally:
        held.close()


def test_a_dvc_lock_waited_out_is_not_retried(held_dvc_lock, monkeypatch):
    """A retry would wait DVC_WAIT_S again for the same lock: the guide's one line after the bound would
    come after (retries + 1) times the bound."""
    flow = load_flow_module()
    monkeypatch.setattr(flow, "DVC_WAIT_S", 2)
    with pytest.raises(RuntimeError) as err:
        flow.settled(held_dvc_lock, "any", Recorder())  # what a stage's task run asks first
    assert "not done after 2 s" in str(err.value)
    assert flow.retry_unless_input_error(None, None, Failed(data=err.value)) is False
    assert flow.retry_unless_input_error(None, None, Failed(data=RuntimeError("train failed (exit 1)"))) is True


@pytest.mark.parametrize("run_name", ["alpha-half", "alpha half/2", None])
def test_experiment_names_are_readable_unique_per_flow_run_and_git_ref_names(run_name):
    """Prefect's two-word run names repeat, and `dvc exp save` refuses a name it has: two flow runs of
    one name must not share an experiment name."""
    flow = load_flow_module()
    first = flow.experiment_name(run_name, "1a2b3c4d-0000-4000-8000-000000000001")
    second = flow.experiment_name(run_name, "9f8e7d6c-0000-4000-8000-000000000002")
    assert first != second
    if run_name == "alpha-half":
        assert (first, second) == ("prefect-alpha-half-1a2b3c4d", "prefect-alpha-half-9f8e7d6c")
    for name in (first, second):
        ref = f"refs/exps/ab/cdef/{name}"
        assert subprocess.run(["git", "check-ref-format", ref]).returncode == 0, ref


def test_the_flows_functions_still_travel_by_value_to_dask_workers():
    """The live-stage registry holds a lock, which pickles by no means: a worker gets an empty registry."""
    import cloudpickle

    flow = load_flow_module()
    cloudpickle.register_pickle_by_value(flow)
    try:
        shipped = cloudpickle.loads(cloudpickle.dumps(flow.run_stage.fn))
    finally:
        cloudpickle.unregister_pickle_by_value(flow)
    registry = shipped.__globals__["LIVE"]
    assert registry is not flow.LIVE and not registry.stopping
    assert shipped.__globals__["bin_dir"]() == Path(sys.executable).parent
