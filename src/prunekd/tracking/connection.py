"""Whether a tracking store can be used, checked before any data is loaded; and a private
``mlflow server`` for the duration of a block (the flow's, when parallel stages share one store)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from ._store import EXPERIMENT, TrackingError, tracking_uri

# What MLFLOW_TRACKING_URI may start with (database URIs may name a driver: postgresql+psycopg2://).
STORE_SCHEMES = {"http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks"}
# MLflow's client retries a failing server for minutes (7 retries, exponential backoff, 120 s
# timeouts); a stage that checked the server first gives it a bounded budget for the whole run.
# One retry, 12 s a request: a server that stops answering mid-run fails the stage in under 30 s.
BOUNDED_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "12"}


def _auth_headers() -> dict[str, str]:
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        import base64

        pair = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def api_problem(uri: str, timeout: float) -> str | None:
    """None if ``uri`` answers a real MLflow API call within ``timeout`` s; else what went wrong.
    A health page is not enough: a proxy whose backend is down answers, and so may a hung server."""
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_auth_headers()), timeout=timeout) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:  # MLflow says "no such experiment" with 404 and its own JSON
        body = exc.read() if exc.code == 404 else b""
        if not body:
            return f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
    try:
        answer = json.loads(body)
    except ValueError:
        return "its answer is not MLflow's (not JSON)"
    if not isinstance(answer, dict) or not {"experiment", "error_code"} & set(answer):
        return "its answer is not MLflow's (JSON without an experiment or an error_code)"
    return None


def check_reachable(uri: str | None = None, timeout: float = 5.0) -> str:
    """Fail at once, with one clear line, if the tracking store cannot be used.

    Called before any data is loaded or any epoch trained: MLflow's own client would retry
    a failing server for minutes, after the training it was meant to record.
    """
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        for key, value in BOUNDED_HTTP.items():
            os.environ.setdefault(key, value)
        problem = api_problem(uri, timeout)
        if problem:
            raise TrackingError(
                f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable: {problem}. Start it "
                "(docs/guide.md, 'MLflow tracking server') or unset MLFLOW_TRACKING_URI to log to ./mlflow.db")
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow tracking store {uri}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow tracking store {uri}: folder {folder} is not writable")
        store = Path(uri.removeprefix("sqlite:///"))
        if store.is_file():
            import sqlite3

            try:
                # resolved: MLflow's relative form (sqlite:///mlflow.db, from the working folder) has no file URI
                with contextlib.closing(sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True,
                                                        timeout=timeout)) as db:
                    db.execute("select count(*) from sqlite_master").fetchone()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise TrackingError(f"MLflow tracking store {uri}: not a usable SQLite database ({exc}); move "
                                        "it away, or point MLFLOW_TRACKING_URI elsewhere") from None
                raise TrackingError(f"MLflow tracking store {uri}: locked by another process for over {timeout:g} s "
                                    "(a stage, or an `mlflow ui`, writing to it); wait for it or stop it, then "
                                    "rerun") from None
            except sqlite3.DatabaseError as exc:
                raise TrackingError(f"MLflow tracking store {uri}: not a usable SQLite database ({exc}); move it "
                                    "away, or point MLFLOW_TRACKING_URI elsewhere") from None
    elif "://" in uri and uri.split("://")[0].split("+")[0] not in STORE_SCHEMES:
        raise TrackingError(f"MLflow tracking store {uri} (MLFLOW_TRACKING_URI): unknown scheme; use "
                            "http(s)://host:port or sqlite:////absolute/path.db")
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listens_on(proc: subprocess.Popen, port: int) -> bool:
    """Whether ``proc`` (or a process it started) listens on ``port``. An answer on a port proves
    nothing by itself: another server may have taken the port between ``free_port`` and the bind."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for member in family:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in member.net_connections(kind="tcp")):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return False


# MLflow's job runner (seven worker processes, for its GenAI features) is nothing prunekd uses: off, a
# server starts in a third of the time and leaves the cores to training
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
PORT_TRIES = 3  # a port chosen here and taken by another process first: try again on another


@contextmanager
def server(backend_uri: str, artifacts: Path, *, proxy: bool = True, port: int | None = None,
           timeout: float = 120) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 for the duration of the block; yields its URI.

    ``proxy``: clients send artifacts through the server to ``artifacts`` (the team setup);
    otherwise clients write them straight to ``artifacts`` (a shared folder). Without ``port``, a
    free one; one that another process takes first is given up for another, up to PORT_TRIES times.
    """
    where = ["--artifacts-destination", str(artifacts)] if proxy else \
            ["--default-artifact-root", Path(artifacts).resolve().as_uri(), "--no-serve-artifacts"]
    deadline = time.monotonic() + timeout
    for attempt in range(1, PORT_TRIES + 1):
        chosen = port or free_port()
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(chosen),
               "--workers", "1", "--backend-store-uri", backend_uri, *where]
        # its log goes to a file, not a pipe: a pipe nobody reads while the block runs fills (64 KiB
        # of log) and then blocks the server, and every stage logging through it, for good
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True,
                                    env=os.environ | SERVER_ENV)
            uri = f"http://127.0.0.1:{chosen}"
            try:
                if _started(proc, log, chosen, uri, deadline, timeout,
                            last=port is not None or attempt == PORT_TRIES):
                    yield uri
                    return
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    # reaped, not left a zombie; one stuck in the kernel past this is given up on, not awaited
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=10)


def _started(proc: subprocess.Popen, log: IO[str], port: int, uri: str, deadline: float, timeout: float, *,
             last: bool) -> bool:
    """Wait until ``proc`` serves ``uri``: True; False if it exited, or another process answers on
    its port, and another port may be tried. ``log``: the file its stderr goes to."""
    while True:
        if proc.poll() is not None:
            if not last:
                return False
            log.seek(0)
            raise TrackingError(f"mlflow server exited with {proc.returncode}: {log.read()[-2000:]}")
        try:
            check_reachable(uri, timeout=2)
        except TrackingError:
            pass
        else:
            if listens_on(proc, port):
                return True
            if not last:  # another process answers there: this server can never bind it
                return False
            raise TrackingError(f"port {port} on 127.0.0.1 is taken by another process: mlflow server cannot "
                                "listen there; choose another port")
        if time.monotonic() > deadline:
            raise TrackingError(f"mlflow server did not answer on {uri} within {timeout:.0f} s") from None
        time.sleep(0.5)
