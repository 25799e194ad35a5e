"""The flow's own plumbing: a stage's undecodable output, the interpreter it runs under, a dvc lock
held too long, a failed flow's last word, the names of its DVC experiments, and its stages when it is
cancelled."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
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


def failing_project(folder: Path) -> Path:
    """A DVC project whose first stage fails (its last stderr line says why) and whose second needs it."""
    folder.mkdir()
    (folder / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    stages = {"boom": {"cmd": "python -c \"import sys; print('working', file=sys.stderr); "
                               "sys.exit('boom: the disk is full')\"", "outs": ["out.txt"]},
              "after": {"cmd": "python -c \"open('after.txt', 'w').write('x')\"", "deps": ["out.txt"],
                        "outs": ["after.txt"]}}
    (folder / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    subprocess.run([str(BIN / "dvc"), "init", "-q", "--no-scm"], cwd=folder, check=True)
    return folder


def test_a_failed_flow_ends_in_one_line_naming_each_stage_and_why(tmp_path):
    """Not a traceback of main ending in every stage's state: the stage that failed with its error's last
    line, the one that never ran, and a non-zero exit."""
    root = failing_project(tmp_path / "project")
    env = {k: v for k, v in clean_env().items() if not k.startswith("PREFECT_")} | {
        "PRUNEKD_TRACKING": "off", "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.run([sys.executable, str(ROOT / "flows" / "experiment.py"), "--root", str(root),
                           "--retries", "0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    # the lines before are the flow run's log (Prefect's), and after it only the temporary API's stop
    said = [line for line in proc.stderr.splitlines() if line.startswith("flows/experiment.py: ")]
    assert said == ["flows/experiment.py: error: boom failed: boom: the disk is full; "
                    "not run as a stage upstream failed: after"], proc.stderr[-3000:]
    assert ", in main\n" not in proc.stderr  # main printed it: no traceback of its own


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


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_cancelled_flow_run_ends_the_stage_it_was_running(tmp_path):
    """A cancellation is a SIGTERM to the flow run's process (Prefect raises TerminationSignal in it):
    the stage it runs ends with it, not left training outside any flow run."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    stage = "import os, time; open('stage.pid', 'w').write(str(os.getpid())); time.sleep(300)"
    (folder / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"long": {"cmd": f'python -c "{stage}"',
                                                                          "outs": ["out.txt"]}}}))
    subprocess.run([str(BIN / "dvc"), "init", "-q", "--no-scm"], cwd=folder, check=True)
    env = {k: v for k, v in clean_env().items() if not k.startswith("PREFECT_")} | {
        "PRUNEKD_TRACKING": "off", "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    flow_proc = subprocess.Popen([sys.executable, str(ROOT / "flows" / "experiment.py"), "--root", str(folder),
                                  "--retries", "1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    pid_file, stage_pid = folder / "stage.pid", None
    try:
        deadline = time.monotonic() + 240
        while not (pid_file.is_file() and pid_file.read_text()) and flow_proc.poll() is None:
            assert time.monotonic() < deadline, "the stage did not start"
            time.sleep(0.5)
        stage_pid = int(pid_file.read_text())
        flow_proc.send_signal(signal.SIGTERM)  # what a runner sends on a cancellation
        deadline = time.monotonic() + 60
        while running(stage_pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not running(stage_pid), "the stage trains on after its flow run was cancelled"
        flow_proc.wait(timeout=60)
        assert int(pid_file.read_text()) == stage_pid  # nor retried: started again before the flow ended
    finally:
        for pid in (stage_pid, flow_proc.pid):
            if pid and running(pid):
                os.kill(pid, signal.SIGKILL)
        flow_proc.wait(timeout=60)


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
