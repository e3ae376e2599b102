import os
from pathlib import Path

import pytest

# No phoning home and no chatter from the real Ray / MLflow the tests start.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
# Every process this test run starts inherits this mark (Ray's, MLflow's, PostgreSQL's, moto's):
# `no_servers_left_behind` finds a module's leftovers by it, and nobody else's processes.
RUN_MARK = f"GANOPS_TEST_RUN={os.getpid()}"
os.environ["GANOPS_TEST_RUN"] = str(os.getpid())

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "search_spaces").glob("*.yaml"))


def pytest_collection_modifyitems(config, items):
    """Tiers: `python -m pytest -m "not slow"` is the fast tier (unit tests and the `core`
    integration tests); the full suite is every test. Every integration test is `integration`,
    and `slow` unless marked `core`."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
            if item.get_closest_marker("core") is None:
                item.add_marker(pytest.mark.slow)


# What a module's servers leave running when they do not stop: Ray (its daemons and workers), an
# `mlflow server` and its uvicorn workers, moto's S3, PostgreSQL.
SERVER_NEEDLES = (
    *("raylet", "gcs_server", "ray::", "ray/_private", "ray/dashboard"),
    *("mlflow", "uvicorn", "moto", "postgres"),
)


def servers_of_this_run() -> dict[int, str]:
    """pid -> command line of the server processes this test run started (they carry RUN_MARK)."""
    out = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if RUN_MARK.encode() + b"\0" not in (proc / "environ").read_bytes() + b"\0":
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(proc.name) != os.getpid() and any(n in cmd for n in SERVER_NEEDLES):
            out[int(proc.name)] = cmd
    return out


@pytest.fixture(scope="module", autouse=True)
def no_servers_left_behind(request):
    """A server a module started and did not stop (a Ray cluster, an mlflow server, PostgreSQL)
    would slow every later test on a 2-core machine, and push CI past its limit: once the
    module's own fixtures are torn down, whatever of this run's servers it left is given 20 s
    to go, then killed, with a warning naming it."""
    import signal
    import time
    import warnings

    before = set(servers_of_this_run())
    yield
    deadline = time.monotonic() + 20
    while (left := {p: c for p, c in servers_of_this_run().items() if p not in before}) and time.monotonic() < deadline:
        time.sleep(0.25)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        names = "; ".join(sorted({c[:120] for c in left.values()})[:5])
        what = f"{request.module.__name__} left {len(left)} server processes running (killed): {names}"
        warnings.warn(what, stacklevel=1)


# Credentials moto accepts; never real ones (tests check they reach no output or MLflow field).
FAKE_CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def aws_env(monkeypatch):
    """Only FAKE_CREDS in the AWS_* environment (no real profile or endpoint leaks in)."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    for k, v in FAKE_CREDS.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def ganops_home(tmp_path, monkeypatch):
    """Embedded defaults (MLflow store, Ray storage) under a fresh temp dir."""
    home = tmp_path / "ganops_runs"
    monkeypatch.setenv("GANOPS_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


def pids_whose_cmdline_has(*needles: str) -> list[int]:
    """Processes whose command line contains every needle, e.g. one Ray cluster's temp dir or
    session name (`ray stop` would stop every Ray on the machine, other tests' too)."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmd for n in needles) and int(proc.name) != os.getpid():
            out.append(int(proc.name))
    return out


def stop_processes(*needles: str, grace: float = 3) -> None:
    """SIGTERM the processes whose command line has every needle (one Ray cluster's temp dir),
    SIGKILL whatever is left after `grace` seconds, and return once all are gone: polled, where
    a fixed 3 s sleep followed each signal (Ray's gcs_server outlives a SIGTERM by over 10 s)."""
    import signal
    import time

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        for pid in pids_whose_cmdline_has(*needles):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids_whose_cmdline_has(*needles) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not pids_whose_cmdline_has(*needles):
            return


def mlflow_store_ready(db: Path) -> bool:
    """True once a sweep's SQLite MLflow store exists AND holds its first run. Opening the store
    earlier would race the sweep's schema migrations (two processes migrating one file: the
    sweep dies with an alembic error), so a test watching a sweep waits for this first."""
    import sqlite3

    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
    except sqlite3.Error:  # no runs table yet, or locked mid-migration
        return False


def watch_store(db: Path, proc, timeout: float = 240):
    """An MlflowClient on a sweep's SQLite store once `mlflow_store_ready` (constructing one
    earlier creates and migrates the file under the sweep's feet); None if `proc` exits or
    `timeout` passes first."""
    import time

    from mlflow import MlflowClient

    deadline = time.monotonic() + timeout
    while not mlflow_store_ready(db):
        if proc.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.25)
    return MlflowClient(f"sqlite:///{db}")


def watch_first_eval(db: Path, proc, trial_runs, log: Path, timeout: float = 240):
    """An MlflowClient on a sweep's SQLite store once its first trial (`trial_runs(client)`) has
    logged an eval (metric `step`) while `proc` still runs: the moment to kill, signal or break
    something. Fails the test with the sweep's log otherwise."""
    import time

    client = watch_store(db, proc)
    assert client is not None, log.read_text()[-3000:]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        runs = trial_runs(client)
        if runs and client.get_metric_history(runs[0].info.run_id, "step"):
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the sweep ended before its first eval was seen: {log.read_text()[-3000:]}"
    return client


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory):
    """One GANOPS_CACHE for the test run, holding the MNIST feature classifier: trained once
    (~10-25 s here), then loaded by every test that scores MNIST-like images."""
    from trainers.metrics import load_feature_extractor

    cache = tmp_path_factory.mktemp("ganops_cache")
    load_feature_extractor(cache)
    return cache
