import os
from pathlib import Path

import pytest

# No phoning home and no chatter from the real Ray / MLflow the tests start.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "search_spaces").glob("*.yaml"))


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
