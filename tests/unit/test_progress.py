"""Progress and live output: what a user watching a log (or the Prefect UI) sees of a long stage."""

import sys
import time

import pytest

from prunekd.errors import UserError
from prunekd.progress import EVERY_ENV, progress

from ..conftest import load_flow_module


def test_a_log_gets_a_plain_line_now_and_then(capsys, monkeypatch):
    monkeypatch.setenv(EVERY_ENV, "0")  # every step, for the test; 30 s by default
    bar = progress(range(4), 4, "teacher epoch 1/2")
    for i in bar:
        bar.set_postfix(loss=f"{i:.1f}")
    assert capsys.readouterr().err.splitlines() == [
        "teacher epoch 1/2: 1/4 (25 %), loss 0.0", "teacher epoch 1/2: 2/4 (50 %), loss 1.0",
        "teacher epoch 1/2: 3/4 (75 %), loss 2.0"]


def test_a_quick_loop_prints_nothing_by_default(capsys, monkeypatch):
    monkeypatch.delenv(EVERY_ENV, raising=False)
    assert list(progress(range(100), 100, "sensitivity")) == list(range(100))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["soon", "", "-1", "nan", "inf"])
def test_a_setting_that_is_no_number_of_seconds_is_refused_in_one_line_naming_it(monkeypatch, value):
    monkeypatch.setenv(EVERY_ENV, value)
    with pytest.raises(UserError, match=f"^{EVERY_ENV}='{value}': expected a number of seconds"):
        progress(range(3), 3, "teacher epoch 1/2")


class Recorder:
    def __init__(self):
        self.lines: list[tuple[float, str]] = []

    def info(self, line: str) -> None:
        self.lines.append((time.monotonic(), line))


def test_a_stage_output_is_logged_line_by_line_as_it_comes(tmp_path):
    flows = load_flow_module()
    log = Recorder()
    script = ("import sys, time; print('epoch 1/2'); print('progress', file=sys.stderr); time.sleep(1.5); "
              "print('epoch 2/2'); print('prunekd x: error: bad', file=sys.stderr); sys.exit(2)")
    code, stderr = flows.streamed([sys.executable, "-c", script], tmp_path, {}, log)
    assert code == 2 and stderr == ["progress", "prunekd x: error: bad"]
    times = dict((line, t) for t, line in log.lines)
    assert set(times) == {"epoch 1/2", "progress", "epoch 2/2", "prunekd x: error: bad"}
    assert times["epoch 2/2"] - times["epoch 1/2"] > 1.0  # logged while the stage ran, not at its end



def test_every_item_passes_through_unchanged_on_a_terminal_or_not(capsys, monkeypatch):
    """Why progress.py is no stage's dep (test_dvc_yaml.EXEMPT): it prints, and changes nothing."""
    monkeypatch.setenv(EVERY_ENV, "0")
    items = [object() for _ in range(5)]
    for terminal in (False, True):
        monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
        passed = list(progress(iter(items), len(items), "teacher epoch 1/2"))
        assert len(passed) == len(items) and all(a is b for a, b in zip(passed, items))
