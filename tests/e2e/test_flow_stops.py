"""The flow script run whole on a small DVC project (tracking off): a failed flow's last word, and its
stage ended when the flow run is cancelled."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..conftest import BIN, ROOT, clean_env


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
