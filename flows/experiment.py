"""The prunekd experiment as a Prefect flow: the same DAG as ``dvc.yaml``, read from it.

DVC stays the one skip-decider: the flow asks ``dvc status`` once which stages are stale; a
task runs its stage's own ``cmd`` (the code ``dvc repro`` runs) only if it is, or if a stage
upstream of it ran and DVC, asked again, says it is now, and DVC cannot restore it from its cache
or run-cache (as ``dvc repro`` would); and records the result into ``dvc.lock`` with ``dvc
commit``. So after ``dvc repro`` a flow run trains nothing, and after a flow run ``dvc repro`` has
nothing to do. A stage's output streams into its task run's log
line by line while it runs.

    python flows/experiment.py                      # run once on params.yaml (ephemeral API)
    python flows/experiment.py --workers 2          # independent stages two at a time
    python flows/experiment.py --dask tcp://host:8786
    python flows/experiment.py serve --cron "0 2 * * *"
    python flows/experiment.py -S kd.temperature=2 -S "retrain.seeds=[0,1,2,3,4]"

With overrides (``-S``, or the ``overrides`` parameter of a run started from the Prefect UI or
API) the run is a DVC experiment, made as ``dvc exp run --temp -S ...`` makes one but stage by
stage: in a temporary git worktree (under .prunekd/experiments/) sharing the DVC cache, each stale
stage a task run as without overrides, then ``dvc exp save``. The workspace's params.yaml is left
as it was; the result shows in ``dvc exp show`` (``dvc exp apply <name>`` brings it into the
workspace); its MLflow runs are tagged ``dvc_exp`` with the experiment's name.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import uuid
from collections import deque
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from prefect import allow_failure, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from prunekd.config import ConfigError, apply_overrides, read_yaml
from prunekd.constants import DVC_EXP_ENV, DVC_ROOT_ENV, FLOW_RUN_ENV, USER_ERROR
from prunekd.paths import Layout

ROOT = Path(__file__).resolve().parents[1]
RUNCACHE = Path(__file__).resolve().with_name("runcache.py")  # DVC's verdict on one stage, in its own process
CURRENT, RESTORED, STALE = "current", "restored", "stale"  # its answers
DASK_ENV = "PRUNEKD_DASK_ADDRESS"



class StageInputError(RuntimeError):
    """A stage refused its params or inputs."""


class DvcWaitError(RuntimeError):
    """A dvc command of the flow not done after ``DVC_WAIT_S``: another dvc command holds the
    project's lock, or it hangs."""


class StagesFailed(RuntimeError):
    """Stages of a flow run that did not complete, in one line."""


class StageStopped(RuntimeError):
    """A stage ended, or not started, because its flow run was ending."""


# a retry would meet the same refusal, wait as long again for the same lock, or run in a flow run gone
NOT_RETRIED = (StageInputError, DvcWaitError, StageStopped)


def retry_unless_input_error(task, task_run, state) -> bool:
    """Whether Prefect retries a failed stage: not if it refused its input, waited out DVC_WAIT_S, or
    was stopped with its flow run."""
    try:
        state.result()
    except NOT_RETRIED:
        return False
    except Exception:
        return True
    return False


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    upstream: tuple[str, ...]

    def argv(self) -> list[str]:
        """The stage's command as an argument list, run without a shell. dvc.yaml's commands name no
        param (a matrix stage reads its item from DVC_STAGE), so no param's text is in it; and were
        one pasted in, it would stay one argument's text, never run."""
        return shlex.split(self.cmd)


def dvc_stages(root: Path) -> list[Stage]:
    """The resolved stages of dvc.yaml (matrix expanded) in dependency order."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        order = list(reversed(list(nx.topological_sort(graph))))
        return [Stage(s.name, s.cmd, tuple(d.name for d in graph.successors(s))) for s in order if s.cmd]


# stages that measure time (prune does under prune.unit latency): nothing else may run beside them
TIMED_ALONE = ("latency_table", "prune", "latency")


def is_timed(name: str) -> bool:
    return name.split("@")[0] in TIMED_ALONE


def timed_alone(stages: list[Stage]) -> list[Stage]:
    """``stages`` (in a dependency order) with each timing stage moved as early as its upstream
    allows, still a dependency order. It waits for every stage before it, and every stage after it
    waits for it (``run_stages``), so nothing runs beside it; early, it holds up no more than it must."""
    order: list[Stage] = []
    for stage in stages:
        if is_timed(stage.name):
            after = max((i for i, s in enumerate(order) if s.name in stage.upstream), default=-1)
            order.insert(after + 1, stage)
        else:
            order.append(stage)
    return order


def bin_dir() -> Path:
    """The bin folder of the interpreter running this call (where `dvc` and `prunekd` live)."""
    # Asked at each call, never kept in a module global: on Dask this module's functions travel by
    # value (task_runner), a global with them, and a worker's prunekd may be installed elsewhere.
    return Path(sys.executable).parent


def with_bin_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's bin folder first on PATH (where `dvc` and `prunekd` live)."""
    return env | {"PATH": f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"}


# A dvc command of the flow waits for the repository's lock (--wait-for-lock): the flow's own tasks
# hold it for seconds each, another `dvc` in the project (`dvc repro` in a terminal, say) for as long
# as that runs. Past this bound the flow stops in one line instead of waiting on without end (not
# retried: a retry would wait as long again).
DVC_WAIT_S = 30 * 60


def bounded(argv: list[str], root: Path) -> subprocess.CompletedProcess:
    """``argv`` (a dvc command, or a script that opens the repository) run in ``root``, its output
    captured; a DvcWaitError if it has not finished within ``DVC_WAIT_S``."""
    try:
        return subprocess.run(argv, cwd=root, env=with_bin_on_path(dict(os.environ)), capture_output=True,
                              text=True, timeout=DVC_WAIT_S)
    except subprocess.TimeoutExpired:
        raise DvcWaitError(f"{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv))} in {root}: "
                           f"not done after {DVC_WAIT_S} s; another dvc command in the project holds its lock "
                           "(.dvc/tmp/lock) or hangs: let it finish or stop it, then run the flow again") from None


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return bounded([str(bin_dir() / "dvc"), *args], root)


def dvc_status(root: Path, *names: str) -> dict[str, list]:
    """``dvc status --json`` of the stages ``names`` (or all): stage -> what changed."""
    proc = dvc(root, "--wait-for-lock", "status", "--json", *names)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status {' '.join(names)} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout or "{}")


def stale_stages(root: Path, *names: str) -> set[str]:
    """The stages (of ``names``, or all) that ``dvc status`` finds stale: one call, one graph walk."""
    return set(dvc_status(root, *names))


def settled(root: Path, name: str, log) -> str:
    """Whether stage ``name`` must run, from DVC, in one call: ``current``; ``restored`` (it was
    stale and DVC restored it from its cache or run-cache, as `dvc repro` would, and recorded it in
    dvc.lock); or ``stale`` (flows/runcache.py)."""
    proc = bounded([sys.executable, str(RUNCACHE), name], root)
    for line in proc.stderr.splitlines():
        if line.strip():
            log.info(line.rstrip())
    found = proc.stdout.split()[-1:]
    if proc.returncode != 0 or found not in ([CURRENT], [RESTORED], [STALE]):
        raise RuntimeError(f"asking DVC about {name} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return found[0]


STOP_S = 30  # how long a stage given up on (terminated, then killed) is waited for, each time


# Prefect waits for a running task thread when its flow run ends, and a runner then kills the flow
# run's process alone: a stage left running would train on unseen, outside any flow run.
class LiveStages:
    """The stage processes this process's task threads run, so that a flow run ending by an exception
    (a cancellation's SIGTERM, Ctrl-C) ends them too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = False

    def __reduce__(self):  # on a Dask worker, where this module travels by value: an empty one of its own
        return LiveStages, ()

    def start(self, argv: list[str], **popen) -> subprocess.Popen:
        """``argv`` started (``subprocess.Popen``) and kept; StageStopped once the flow run is ending."""
        with self._lock:  # with stop_all's: no stage starts after it, unseen by it
            if self.stopping:
                raise StageStopped(f"{shlex.join(argv)}: not started, the flow run is ending")
            proc = subprocess.Popen(argv, **popen)
            self._procs.add(proc)
            return proc

    def forget(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self) -> None:
        """Terminate every kept process (each one's reader waits for it), and start no more."""
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        for proc in procs:
            with suppress(OSError):
                proc.terminate()

    def reset(self) -> None:
        """Start stages again (a new flow run in this process)."""
        with self._lock:
            self.stopping = False


LIVE = LiveStages()


def streamed(argv: list[str], cwd: Path, env: dict[str, str], log) -> tuple[int, list[str]]:
    """Run ``argv`` (no shell), sending each line of its stdout and stderr to ``log`` as it comes
    (the task run's log in the Prefect UI); returns the exit code and the last lines of stderr."""
    # Decoded leniently: a byte that is not UTF-8 (a library's message in another encoding) would
    # end a strict reader, and the stage would block on the full pipe it no longer empties.
    proc = LIVE.start(argv, cwd=cwd, env=env | {"PYTHONUNBUFFERED": "1"}, encoding="utf-8",
                      errors="backslashreplace", stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1)
    tail: deque[str] = deque(maxlen=50)

    def pump(stream, keep: deque | None) -> None:
        for line in stream:
            line = line.rstrip()
            if line:
                log.info(line)
                if keep is not None:
                    keep.append(line)

    err = threading.Thread(target=pump, args=(proc.stderr, tail), daemon=True)
    try:
        err.start()
        pump(proc.stdout, None)
        err.join()
        return proc.wait(), list(tail)
    finally:  # a failed log call or an interrupt must not leave the stage training on unseen
        stopped(proc, err)
        LIVE.forget(proc)


def stopped(proc: subprocess.Popen, reader: threading.Thread) -> None:
    """End ``proc`` if it still runs (terminated, killed past STOP_S), waited for within bounds, and
    close its pipes; ``reader``: the thread reading its stderr."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_S)
    if reader.is_alive():
        reader.join(timeout=STOP_S)
    proc.stdout.close()
    # still reading: a process the stage started holds the pipe open, and a close would wait on that read
    if not reader.is_alive():
        proc.stderr.close()


def surely_cached(stages: list[Stage], stale: frozenset[str]) -> set[str]:
    """Stages neither stale nor downstream of a stale one: nothing can make them run in this flow run."""
    unsure: set[str] = set()
    for stage in stages:  # dependency order
        if stage.name in stale or set(stage.upstream) & unsure:
            unsure.add(stage.name)
    return {s.name for s in stages} - unsure


@task(name="stage", task_run_name="{stage.name}", cache_policy=NO_CACHE, persist_result=False)
def run_stage(stage: Stage, root: str, threads: int, env: dict[str, str], stale: frozenset[str],
              upstream: list) -> dict | Completed:
    """Run one DVC stage if it was stale when the flow started, or if a stage upstream of it ran
    (or was restored) and DVC now finds it stale; record it into dvc.lock. ``upstream``: those
    stages' results."""
    root_path = Path(root)
    upstream_ran = any(isinstance(r, dict) and r.get("ran") for r in upstream)
    if stage.name not in stale and not upstream_ran:  # nothing it reads has changed
        return Completed(message=f"{stage.name} is up to date in dvc.lock", name="Cached")
    # Stale when the flow started, or downstream of a stage that ran: DVC decides. (An upstream stage
    # restored from DVC's cache, or rerun to the same bytes, may have made it current again.)
    log = get_run_logger()
    state = settled(root_path, stage.name, log)
    if state == CURRENT:
        return Completed(message=f"{stage.name} is up to date in dvc.lock", name="Cached")
    if state == RESTORED:
        log.info("%s: outputs restored from DVC's cache, nothing rerun", stage.name)
        # Its outputs may now differ from before (params set back, say): the stages after it ask DVC too.
        return Completed(message=f"{stage.name}: outputs restored from DVC's cache", name="Restored",
                         data={"stage": stage.name, "ran": True})
    log.info("running %s: %s", stage.name, stage.cmd)
    child_env = with_bin_on_path(os.environ | env | {"OMP_NUM_THREADS": str(threads),
                                                     "MKL_NUM_THREADS": str(threads), "DVC_STAGE": stage.name})
    code, stderr = streamed(stage.argv(), root_path, child_env, log)
    if code != 0 and LIVE.stopping:  # ended by its flow run's end (run_stages): not for a retry to run again
        raise StageStopped(f"{stage.name}: stopped (exit {code}), its flow run is ending")
    if code == USER_ERROR:
        errors = [line for line in stderr if ": error: " in line] or stderr[-1:]
        raise StageInputError(f"{stage.name}: {errors[-1] if errors else 'exit 2'}")
    if code != 0:
        raise RuntimeError(f"{stage.name} failed (exit {code}):\n" + "\n".join(stderr[-30:]))
    commit = dvc(root_path, "--wait-for-lock", "commit", "--force", stage.name)
    if commit.returncode != 0:
        raise RuntimeError(f"dvc commit {stage.name} failed: {commit.stderr.strip()}")
    return {"stage": stage.name, "ran": True}


@contextmanager
def tracking_server(root: Path, may_run: bool, concurrent: bool) -> Iterator[dict[str, str]]:
    """Concurrent stages share one MLflow server (SQLite locks under parallel writers).

    With ``MLFLOW_TRACKING_URI`` set (a team server), stages log there; it is checked first,
    so an unreachable server stops the flow before any stage trains. With no stage to run, or
    tracking off, nothing is checked or started. Yields the stages' environment.
    """
    from prunekd.constants import TRACKING_ENV
    from prunekd.tracking import check_reachable, enabled, server

    if not may_run:
        yield {}
        return
    # the switch goes with the stages, also to Dask's workers, whose own environment they run in
    if not enabled():  # the stages record nothing: no server
        yield {TRACKING_ENV: "off"}
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        check_reachable()
        yield {TRACKING_ENV: "on"}
    elif not concurrent:
        yield {TRACKING_ENV: "on"}
    else:
        layout = Layout(root)
        with server(f"sqlite:///{layout.store}", layout.artifacts, proxy=False) as uri:
            yield {TRACKING_ENV: "on", "MLFLOW_TRACKING_URI": uri}


def checked_overrides(root: Path, overrides: list[str]) -> None:
    """StageInputError, naming the key, unless ``overrides`` give a valid params.yaml."""
    try:
        apply_overrides(read_yaml(Layout(root).params.read_text(), "params.yaml"), overrides)
    except ConfigError as exc:
        raise StageInputError(str(exc)) from None


def experiment_name(flow_run_name: str | None, flow_run_id: str | None) -> str:
    """A DVC experiment name (a git ref name) from the flow run's name and id: ``prefect-<name>-<the
    id's first 8 hex digits>``."""
    # Prefect's two-word run names repeat, and `dvc exp save` refuses a name it has: found only at the
    # end of a sweep. The id makes it unique; the name keeps it readable.
    tag = re.sub(r"[^0-9a-f]", "", (flow_run_id or uuid.uuid4().hex).lower())[:8]
    return "prefect-" + re.sub(r"[^A-Za-z0-9_-]+", "-", flow_run_name or "run").strip("-") + f"-{tag}"


def git(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {root}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def untracked(root: Path) -> list[str]:
    """The files git would add in ``root``: untracked and not ignored."""
    return [n for n in git(root, "ls-files", "-o", "--exclude-standard", "-z").decode().split("\0") if n]


@contextmanager
def experiment_workspace(root: Path, name: str, overrides: list[str]) -> Iterator[tuple[Path, dict[str, str]]]:
    """A DVC experiment's workspace, as `dvc exp run --temp` makes one: a git worktree of ``root``'s
    HEAD under .prunekd/experiments/ with the workspace's uncommitted changes, ``root``'s DVC cache,
    its outputs checked out, and ``overrides`` applied to params.yaml the way `dvc exp run -S`
    applies them; with the environment its stages get (DVC_ROOT, so they log into ``root``'s MLflow
    store; DVC_EXP_NAME, so their runs are tagged). Removed at the end: the outputs stay in the cache."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides as set_like_dvc_exp_run

    try:
        head = git(root, "rev-parse", "--verify", "HEAD^{commit}").decode().strip()
    except RuntimeError:
        raise StageInputError(f"{root}: a run with overrides is a DVC experiment, which needs a git commit") from None
    from prunekd.io import OutsideProjectError, inside

    try:  # cleared and written: never through a link out of the project
        folder = inside(root / ".prunekd" / "experiments" / name, root)
    except OutsideProjectError as exc:
        raise StageInputError(str(exc)) from None
    if folder.exists():  # left by a killed attempt of this flow run: inside the project, ours to clear
        shutil.rmtree(folder)
    git(root, "worktree", "prune")
    git(root, "worktree", "add", "--detach", str(folder), head)
    try:
        changes = git(root, "diff", "HEAD", "--binary")
        if changes:
            git(folder, "apply", "--binary", "--whitespace=nowarn", stdin=changes)
        for file in untracked(root):
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / file, folder / file)
        cache = dvc(root, "cache", "dir")
        if cache.returncode != 0 or dvc(folder, "config", "--local", "cache.dir", cache.stdout.strip()).returncode:
            raise RuntimeError(f"cannot share {root}'s DVC cache with the experiment: {cache.stderr.strip()}")
        dvc(folder, "checkout", "--allow-missing")  # what the cache lacks, its stage makes
        try:
            set_like_dvc_exp_run(str(folder / "params.yaml"), overrides)
        except InvalidArgumentError as exc:
            raise StageInputError(f"overrides {overrides}: {exc}") from None
        yield folder, {DVC_ROOT_ENV: str(root), DVC_EXP_ENV: name, "DVC_EXP_BASELINE_REV": head}
    finally:
        git(root, "worktree", "remove", "--force", str(folder))


def save_experiment(folder: Path, name: str) -> None:
    """Record the experiment workspace ``folder`` as DVC experiment ``name`` (its refs are the
    repository's: a worktree shares them), so `dvc exp show` lists it and `dvc exp apply` restores it."""
    include = [arg for file in untracked(folder) for arg in ("--include-untracked", file)]
    proc = dvc(folder, "exp", "save", "--name", name, *include)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc exp save {name} failed: {proc.stderr.strip()}")
    get_run_logger().info("saved as DVC experiment %s: dvc exp show; dvc exp apply %s", name, name)


def publish_report(root: Path) -> None:
    results, report = Layout(root).results, Layout(root).report
    if results.is_file():
        import pandas as pd

        table = pd.read_csv(results).round(4).astype(object).where(lambda d: d.notna(), None)
        create_table_artifact(table.to_dict(orient="records"), key="prunekd-results",
                              description="One row per retrain run plus the teacher")
    if report.is_file():
        create_markdown_artifact(report.read_text(), key="prunekd-report", description="prunekd report")


class StageThreads(ThreadPoolTaskRunner):
    """Local threads, a stage each, that say how many stages they run at once (``stages``)."""

    def __init__(self, max_workers: int | None = None):
        super().__init__(max_workers=max_workers)
        self.stages = max_workers


def task_runner(workers: int, dask_address: str | None):
    if dask_address:
        import cloudpickle
        from prefect_dask import DaskTaskRunner

        # Workers need not import this file: ship its functions by value.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        return DaskTaskRunner(address=dask_address)
    return StageThreads(max_workers=workers)


def run_stages(root: Path, workers: int, retries: int, distributed: bool, store_root: Path,
               env: dict[str, str]) -> dict[str, str]:
    """Run every stale stage of ``root``'s dvc.yaml, each as its own task run, independent stages
    concurrently; returns stage -> state. ``store_root``: the project whose MLflow store a shared
    server serves; ``env``: for every stage's process."""
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    LIVE.reset()
    stages = dvc_stages(root)
    stale = frozenset(stale_stages(root))
    runner = run_stage.with_options(retries=retries, retry_delay_seconds=5,
                                    retry_condition_fn=retry_unless_input_error)
    # A stage neither stale nor downstream of a stale one cannot run: it is reported, not scheduled
    # (a task run apiece costs the API a round of calls; a sweep has hundreds of such stages).
    certain = surely_cached(stages, stale)
    if certain:
        get_run_logger().info("%d of %d stages up to date in dvc.lock: %s", len(certain), len(stages),
                              ", ".join(s.name for s in stages if s.name in certain))
    with tracking_server(store_root, may_run=len(certain) < len(stages), concurrent=workers > 1 or distributed) as server_env:
        env = server_env | env | {FLOW_RUN_ENV: str(flow_run.get_id() or "")}
        futures = {}
        try:
            for stage in timed_alone([s for s in stages if s.name not in certain]):
                # A timing stage waits for every stage before it, and every stage after it for it: a
                # training run beside it would slow the models it times. Only upstream failures stop
                # a stage: the others are waited for to end, however they end.
                upstream = [futures[n] for n in stage.upstream if n in futures]
                others = [f for n, f in futures.items()
                          if n not in stage.upstream and (is_timed(stage.name) or is_timed(n))]
                waits = upstream + [allow_failure(f) for f in others]
                futures[stage.name] = runner.submit(stage, str(root), threads, env, stale, upstream, wait_for=waits)
            for future in futures.values():
                future.wait()
        except BaseException:  # cancelled (Prefect's TerminationSignal), interrupted: the stages end with it
            LIVE.stop_all()
            raise
    states = {s.name: futures[s.name].state.name if s.name in futures else "Cached" for s in stages}
    errors = {name: stage_error(future) for name, future in futures.items() if not future.state.is_completed()}
    for error in errors.values():  # a stage that refused its input, or waited out the lock: that line is the answer
        if isinstance(error, NOT_RETRIED):
            raise error
    if errors:
        raise StagesFailed(failed_line(errors))
    return states


def stage_error(future) -> BaseException | None:
    """The exception a stage's task run failed with; None for one that never ran (an upstream failed)."""
    try:
        error = future.state.result(raise_on_failure=False)
    except Exception:  # a task run that never ran holds no result
        return None
    return error if isinstance(error, BaseException) else None


def last_line(error: BaseException) -> str:
    """The last line of ``error``'s message (a failed stage's: its stderr's last line), or its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def failed_line(errors: dict[str, BaseException | None]) -> str:
    """One line naming each stage not completed: a failed one with its error's last line, then the
    ones that never ran."""
    failed = [f"{name} failed: {last_line(error)}" for name, error in errors.items() if error is not None]
    skipped = [name for name, error in errors.items() if error is None]
    return "; ".join(failed + ([f"not run as a stage upstream failed: {', '.join(skipped)}"] if skipped else []))


@flow(name="prunekd-experiment")
def experiment(root: str = str(ROOT), workers: int = 1, retries: int = 1,
               distributed: bool = False, overrides: list[str] | None = None) -> dict[str, str]:
    """Run every stale stage of dvc.yaml, independent stages concurrently; returns stage -> state.

    ``distributed``: the task runner is a Dask cluster, so stages may run concurrently even
    with one worker requested, and must share an MLflow server.
    ``overrides``: ``section.key=value`` items; the run becomes a DVC experiment (module doc), its
    stages task runs as without overrides.
    """
    from prunekd.io import exclusive

    root_path = Path(root).resolve()
    workers, distributed = concurrency(workers, distributed)
    # one flow run per repository, however it was started (the command line, a served schedule, a
    # deployment): two would each find the same stages stale and run them twice
    with exclusive("flow", Layout(root_path).locks):
        if not overrides:
            states = run_stages(root_path, workers, retries, distributed, root_path, {})
            publish_report(root_path)
            return states
        name = experiment_name(flow_run.get_name(), flow_run.get_id())
        checked_overrides(root_path, overrides)
        with experiment_workspace(root_path, name, overrides) as (folder, env):
            get_run_logger().info("DVC experiment %s with %s, in %s", name, " ".join(overrides), folder)
            states = run_stages(folder, workers, retries, distributed, root_path, env)
            save_experiment(folder, name)
            publish_report(folder)
        return states


def concurrency(workers: int, distributed: bool) -> tuple[int, bool]:
    """How many stages this flow run runs at once, and whether on Dask: its task runner's (what
    ``configured`` built, when the flow was started or served), not the run's ``workers`` and
    ``distributed``, which a custom run of a deployment may set otherwise; a disagreement is logged.
    A runner this module did not build (the flow called as it is): the parameters."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if isinstance(runner, StageThreads) and runner.stages:
        actual = (runner.stages, False)
    elif type(runner).__name__ == "DaskTaskRunner":
        actual = (workers, True)
    else:
        return workers, distributed
    if actual != (workers, distributed):
        get_run_logger().warning("workers=%s, distributed=%s asked, but this flow runs %s (set when it was started "
                                 "or served: --workers, --dask); going by that", workers, distributed,
                                 "on Dask" if actual[1] else f"{actual[0]} stage(s) at a time")
    return actual


def configured(workers: int = 1, dask_address: str | None = None):
    """The flow with its task runner: a Dask cluster when an address is given, else local threads."""
    address = dask_address or os.environ.get(DASK_ENV)
    return experiment.with_options(task_runner=task_runner(workers, address))


def invalid_params(root: Path, overrides: list[str]) -> str | None:
    """Why ``root``'s params.yaml (with ``overrides``) cannot run, in one line; None if it can. The
    flow checks before any stage starts, as the check stage does under ``dvc repro``."""
    from prunekd.config import load_params

    try:
        load_params(Layout(root).params)
        checked_overrides(root, overrides)
    except (ConfigError, StageInputError) as exc:
        return str(exc)
    return None


def invalid_cron(cron: str) -> str | None:
    """Why ``cron`` is no schedule Prefect accepts, in one line; None if it is one. Checked as
    ``serve`` checks it, which would refuse it in a traceback."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        return f"--cron {cron!r}: {reason}; give five fields, minute hour day month weekday (e.g. '0 2 * * *')"
    return None


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address; None: none, an in-process scheduler) is this machine's
    loopback, which no other machine reaches."""
    import ipaddress

    if host is None or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: another machine, as far as can be told
        return False


def unusable_tracking(dask_address: str | None, dask_host: str | None) -> str | None:
    """Why the stages could not log to MLflow where the flow would send them, in one line; None if
    they can. An unreachable MLFLOW_TRACKING_URI would stop the flow only once it has started (in a
    traceback); without one, a Dask cluster's workers get the flow's own server on 127.0.0.1, which
    workers on other machines cannot reach."""
    from prunekd.tracking import TrackingError, check_reachable, enabled

    if not enabled():
        return None
    if os.environ.get("MLFLOW_TRACKING_URI"):
        try:
            check_reachable()
        except TrackingError as exc:
            return str(exc)
    elif dask_address and not is_loopback(dask_host):
        return (f"Dask scheduler {dask_address} is not on this machine and MLFLOW_TRACKING_URI is unset: its workers "
                "could not reach the MLflow server the flow starts on 127.0.0.1; set MLFLOW_TRACKING_URI to a "
                "tracking server they can reach (docs/guide.md, 'MLflow tracking server'), or PRUNEKD_TRACKING=off")
    return None


def unusable_service(args: argparse.Namespace, timeout: float = 5.0) -> str | None:
    """Why the flow could not start with these arguments, in one line; None if it can. Prefect
    and Dask would otherwise retry an address that does not answer for minutes, then fail in a
    traceback."""
    import socket
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    if args.workers < 1:
        return f"--workers: {args.workers} is not a number of stages to run at once (1 or more)"
    if args.retries < 0:
        return f"--retries: {args.retries} is not a number of retries (0 or more)"
    bad_cron = invalid_cron(args.cron) if args.command == "serve" else None
    if bad_cron:
        return bad_cron
    if not (Path(args.root) / "dvc.yaml").is_file():
        return f"--root: {args.root} has no dvc.yaml"
    bad_params = invalid_params(Path(args.root), args.overrides)
    if bad_params:
        return bad_params
    from prunekd.tracking import TrackingError, enabled

    try:
        enabled()  # PRUNEKD_TRACKING: on, off, or a one-line refusal
    except TrackingError as exc:
        return str(exc)
    address = args.dask or os.environ.get(DASK_ENV)
    where = urlsplit(address if "://" in address else f"tcp://{address}") if address else None
    unusable_store = unusable_tracking(address, where.hostname if where else None)
    if unusable_store:
        return unusable_store
    if address:
        try:
            socket.create_connection((where.hostname, where.port or 8786), timeout=timeout).close()
        except (OSError, ValueError) as exc:
            return f"Dask scheduler {address}: not reachable ({exc})"
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()  # the environment's, else the active profile's (`prefect config set`)
    if api:
        source = ("PREFECT_API_URL" if os.environ.get("PREFECT_API_URL")
                  else "PREFECT_API_URL in the Prefect profile: prefect config unset PREFECT_API_URL to run without it")
        try:
            urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=timeout).close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"Prefect API {api} ({source}): not reachable ({getattr(exc, 'reason', exc)})"
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="run", choices=["run", "serve"])
    p.add_argument("--workers", type=int, default=1, help="stages run at once (default 1)")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed stage (default 1)")
    p.add_argument("--dask", default=None, help=f"Dask scheduler address (or ${DASK_ENV})")
    p.add_argument("--cron", default="0 2 * * *", help="serve: cron schedule (default: 02:00 daily)")
    p.add_argument("--name", default="nightly", help="serve: deployment name")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a params.yaml override (repeatable): the run becomes a DVC experiment")
    p.add_argument("--root", default=str(ROOT), help="the repository to run (default: this one)")
    args = p.parse_args(argv)
    problem = unusable_service(args)
    if problem:
        print(f"flows/experiment.py: error: {problem}", file=sys.stderr)
        raise SystemExit(USER_ERROR)
    flow_ = configured(args.workers, args.dask)
    params = {"root": str(Path(args.root).resolve()), "workers": args.workers, "retries": args.retries,
              "distributed": bool(args.dask or os.environ.get(DASK_ENV)), "overrides": args.overrides}
    if args.command == "serve":
        flow_.serve(name=args.name, cron=args.cron, parameters=params)
        return
    from prunekd.errors import UserError
    from prunekd.io import exclusive, inside

    try:
        locks = Layout(params["root"]).locks
        inside(locks / "flow", Path(params["root"]))  # written: never through a link out of the project
        with exclusive("flow", locks):
            pass  # the flow holds the lock (``experiment``); asked here first, a busy one is said in one line
        states = flow_(**params)
    except (UserError, StageInputError, DvcWaitError) as exc:  # busy, a link out, a server gone, a lock held on
        print(f"flows/experiment.py: error: {exc}", file=sys.stderr)
        raise SystemExit(USER_ERROR) from None
    except StagesFailed as exc:  # each task run's log has the whole story: here, which stages and why
        print(f"flows/experiment.py: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print("\n".join(f"{name}: {state}" for name, state in states.items()))


if __name__ == "__main__":
    main()
