"""`ganops submit` against a cluster that has ONLY Ray and torch, with token auth on.

The head runs from a virtual env holding `torch` and `ray[default]` at the client's versions
and nothing else (no ganops, mlflow, typer, torchmetrics, mlxtend, ...): the job must bring
what ganops needs (pip runtime env, pinned to this client's versions). The env is built once
and cached in ~/.cache/ganops-tests (or $GANOPS_TEST_CACHE); a broken one is rebuilt. The head's
pip reads a local wheelhouse of those pins (tests/wheelhouse.py) instead of the index, as a
cluster with its own package mirror would: what the job installs is the same, minus minutes of
resolving and downloading."""

import importlib.metadata as md
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator import jobs, tracking
from search_spaces.loader import spec_from_text
from tests.conftest import stop_processes
from tests.integration.test_jobs_integration import _free_port
from tests.wheelhouse import offline_pip_env, wheelhouse

pytestmark = pytest.mark.integration

RAY = md.version("ray")
TORCH = md.version("torch").split("+")[0]  # 2.13.0+cpu: pip takes the local CPU wheel for torch==2.13.0
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
CACHE = Path(os.environ.get("GANOPS_TEST_CACHE", Path.home() / ".cache" / "ganops-tests"))
BARE = CACHE / f"bare-ray-{RAY}-torch-{TORCH}-py{PY}"

BARE_SPEC = """
name: bare-quick
trainer: {model: mlp2d, data: grid25, steps: 300, eval_every: 150, batch_size: 128, width: 32, eval_samples: 300}
search:
  lr_d: {grid: [1.0e-3, 2.0e-4]}
sweep: {num_samples: 1}
resources: {cpus_per_worker: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null}
"""

# What the bare Python must have (Ray's pip runtime env needs virtualenv: ray[default] brings it)
# and must NOT have (what the job is to install).
HEALTHY = (
    f"import ray, torch, virtualenv; assert ray.__version__ == {RAY!r}, ray.__version__; "
    f"assert torch.__version__.split('+')[0] == {TORCH!r}, torch.__version__"
)


def _healthy(venv: Path) -> bool:
    py = venv / "bin" / "python"
    return py.exists() and subprocess.run([str(py), "-c", HEALTHY], capture_output=True, timeout=300).returncode == 0


def _relocate(venv: Path, to: Path) -> None:
    """A venv's scripts name the path it is built at (shebangs, activate): point them at `to`, where it will be."""
    for f in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if f.is_file() and not f.is_symlink():
            data = f.read_bytes()
            if b"\0" not in data and str(venv).encode() in data:
                f.write_bytes(data.replace(str(venv).encode(), str(to).encode()))


def bare_venv() -> Path:
    """The cached bare env (torch + ray[default] only), built into a temp name and renamed into
    place, so a half-built one is never picked up."""
    if _healthy(BARE):
        return BARE
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"{BARE.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--prompt", BARE.name, str(tmp)], check=True, timeout=300)
    r = subprocess.run(
        [
            str(tmp / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"torch=={TORCH}",
            f"ray[default]=={RAY}",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    if _healthy(BARE):  # another test run built it meanwhile: keep that one (a head may run from it)
        shutil.rmtree(tmp, ignore_errors=True)
        return BARE
    _relocate(tmp, to=BARE)
    shutil.rmtree(BARE, ignore_errors=True)  # a broken one
    os.rename(tmp, BARE)
    assert _healthy(BARE), f"the bare env at {BARE} does not import ray {RAY}, torch {TORCH} and virtualenv"
    return BARE


def _env(**extra: str) -> dict[str, str]:
    """This environment without any Ray token or auth setting, plus `extra`."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", **extra}


def _api_ready(address: str, token: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:  # the Jobs API answers once the dashboard is up
        try:
            req = urllib.request.Request(f"{address}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Jobs API at {address} did not answer within {timeout} s")
        time.sleep(1)


@pytest.fixture(scope="module")
def bare_head(tmp_path_factory):
    """A Ray head started from the bare env, token auth on; yields (address, token)."""
    venv = bare_venv()
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mlflow"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode != 0 and "No module named 'mlflow'" in r.stderr, "the bare env must not have mlflow"
    temp = tmp_path_factory.mktemp("barehead")
    token = secrets.token_hex(16)
    port, dash, agent = _free_port(), _free_port(), _free_port()
    # `python` on the head's PATH is the bare env's, as on a cluster node: the probe and the job run it.
    env = _env(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        **offline_pip_env(wheelhouse()),  # the job's pip runtime env installs from it
    )
    r = subprocess.run(
        [
            str(venv / "bin" / "ray"),
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent}",
            "--include-dashboard=true",
            "--num-cpus=2",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    address = f"http://127.0.0.1:{dash}"
    try:
        _api_ready(address, token)
        yield address, token
    finally:
        stop_processes(str(temp))


def cli(*args, env: dict[str, str], timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def _submit_timed(args: list[str], env: dict[str, str], timeout: float):
    """`ganops submit ...` with each stderr line's arrival time (seconds from the start)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "submit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: lines.extend((time.monotonic() - start, ln) for ln in proc.stderr), daemon=True
    )
    reader.start()
    try:
        stdout = proc.stdout.read()
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    return proc.returncode, stdout, lines


def _at(lines, text: str) -> float | None:
    return next((t for t, ln in lines if text in ln), None)


@pytest.mark.timeout(300)
def test_a_token_cluster_refuses_a_submit_without_the_token(bare_head, tmp_path):
    address, token = bare_head
    (tmp_path / "spec.yaml").write_text(BARE_SPEC)
    empty_home = tmp_path / "home"
    empty_home.mkdir()  # no ~/.ray/auth_token there
    args = ["submit", str(tmp_path / "spec.yaml"), "--address", address, "--home", str(tmp_path / "cluster_home")]

    r = cli(*args, env=_env(HOME=str(empty_home)))
    said = " ".join(r.stderr.split())  # the console wraps long lines
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"the cluster at {address} requires a token and this client has none" in said
    assert "set RAY_AUTH_TOKEN" in said and "RAY_AUTH_TOKEN_PATH" in said and "~/.ray/auth_token" in said

    r = cli(*args, env=_env(HOME=str(empty_home), RAY_AUTH_TOKEN="0" * 32))
    assert r.returncode == 2 and "refused the token this client sent (from RAY_AUTH_TOKEN)" in " ".join(
        r.stderr.split()
    ), r.stderr
    assert "0" * 32 not in r.stderr

    r = cli(*args, env=_env(HOME=str(empty_home), RAY_AUTH_TOKEN_PATH=str(tmp_path / "nothing")))
    assert r.returncode == 2 and "RAY_AUTH_TOKEN_PATH names a file that cannot be read" in " ".join(r.stderr.split()), (
        r.stderr
    )
    assert token not in r.stdout + r.stderr
    assert not (tmp_path / "cluster_home").exists()  # nothing ran


@pytest.mark.timeout(1500)
def test_submit_brings_ganops_requirements_to_a_bare_cluster(bare_head, tmp_path):
    address, token = bare_head
    (tmp_path / "spec.yaml").write_text(BARE_SPEC)
    home = tmp_path / "cluster_home"
    # The token from a file, as `ray get-auth-token` leaves it (RAY_AUTH_TOKEN would do as well).
    (tmp_path / "home" / ".ray").mkdir(parents=True)
    (tmp_path / "home" / ".ray" / "auth_token").write_text(token)
    env = _env(HOME=str(tmp_path / "home"))

    rc, stdout, lines = _submit_timed(
        [str(tmp_path / "spec.yaml"), "--address", address, "--home", str(home), "--wait", "--json"], env, timeout=1400
    )
    text = " ".join("".join(ln for _, ln in lines).split())  # the console wraps long lines
    assert rc == 0, text[-4000:]
    out = json.loads(stdout)
    runtime = out["job"]["runtime"]
    assert (
        runtime["already_there"] is False
        and runtime["cluster_python"] == PY
        and runtime["probe_job"].startswith("ganops-probe-")
    )
    for name in ("mlflow", "typer", "torchmetrics", "mlxtend"):
        assert f"{name}=={md.version(name)}" in runtime["installed"], runtime
    # Tune's and Train's packages: ray[default] lacks them
    assert f"ray[default,train,tune]=={RAY}" in runtime["installed"]
    assert f"cluster lacks {len(runtime['installed'])} packages: job installs" in text
    assert (
        out["job"]["status"] == "SUCCEEDED"
        and len(out["trials"]) == 2
        and {t["status"] for t in out["trials"]} == {"done"}
    )
    assert token not in stdout + text

    # The sweep's runs are in the cluster's MLflow store: one parent, two finished trials.
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    parent = tracking.find_sweep_run(client, out["sweep_id"])
    assert parent is not None and parent.info.status == "FINISHED"
    assert sorted(r.info.status for r in tracking.trial_runs(client, parent)) == ["FINISHED", "FINISHED"]
    # The probe job is not one of the sweep's jobs.
    assert jobs.sweep_id_for(spec_from_text(BARE_SPEC)) == out["job"]["job_id"]

    probed, running, done = _at(lines, "cluster lacks"), _at(lines, ": RUNNING"), _at(lines, ": SUCCEEDED")
    print(
        f"\nbare cluster, first submit: probe answered at {probed:.0f} s, job RUNNING (pip env built) at "
        f"{running:.0f} s, SUCCEEDED at {done:.0f} s"
    )


# build (or check) the cached env by hand: python -m tests.integration.test_bare_cluster_integration
if __name__ == "__main__":
    print(bare_venv())
