"""`ganops submit | status | logs | cancel` against a real Ray head (`ray start --head` on
127.0.0.1, free ports, its own temp dir), through the Ray Jobs API."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator import jobs, tracking
from search_spaces.loader import spec_from_text
from tests.conftest import mlflow_store_ready, stop_processes

pytestmark = pytest.mark.integration

QUICK = """
name: jobs-quick
trainer: {model: mlp2d, data: grid25, steps: 400, eval_every: 200, batch_size: 128, width: 32, eval_samples: 300}
search:
  lr_d: {grid: [1.0e-3, 2.0e-4]}
sweep: {num_samples: 1}
resources: {cpus_per_worker: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null}
"""

LONG = """
name: jobs-long
trainer: {model: mlp2d, data: grid25, steps: 2000, eval_every: 250, batch_size: 256, width: 64, eval_samples: 500}
search:
  lr_d: {grid: [1.0e-3]}
sweep: {num_samples: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    temp = tmp_path_factory.mktemp("rayhead")
    port, dash, agent = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run(
        [
            "ray",
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            # not the fixed default 52365: another Ray on the machine may hold it
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
        deadline = time.monotonic() + 60
        while True:  # the Jobs API answers once the dashboard is up
            try:
                jobs._client(address).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
        yield address
    finally:
        stop_processes(str(temp))


def cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _trial_runs(home: Path, sweep_id: str):
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    parent = tracking.find_sweep_run(client, sweep_id)
    return client, parent, (tracking.trial_runs(client, parent) if parent else [])


@pytest.mark.timeout(900)
def test_submit_waits_gates_and_is_idempotent(ray_head, tmp_path):
    (tmp_path / "quick.yaml").write_text(QUICK)
    home = tmp_path / "cluster_home"
    spec = str(tmp_path / "quick.yaml")

    r = cli("submit", spec, "--address", ray_head, "--home", str(home), "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["job_id"] == first["sweep_id"] == jobs.sweep_id_for(spec_from_text(QUICK)) and not first["existing"]
    # This head runs the project's own Python: it has every pin, so the job installs nothing.
    assert (
        first["runtime"]["installed"] == []
        and first["runtime"]["already_there"] is True
        and "nothing installed" in r.stderr
    )

    # The same spec again: the same job, not a second sweep; this time wait for it and gate on it.
    r = cli(
        "submit",
        spec,
        "--address",
        ray_head,
        "--home",
        str(home),
        "--wait",
        "--json",
        "--require",
        "step>=400",
        "--require",
        "mix_score>=0",
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["job"]["existing"] and out["job"]["job_id"] == first["job_id"] and out["job"]["status"] == "SUCCEEDED"
    assert out["gate"]["passed"] and len(out["trials"]) == 2 and {t["status"] for t in out["trials"]} == {"done"}
    assert out["sweep_id"] == first["sweep_id"]

    # The job's sweep is in the cluster's MLflow store: one parent, two finished trials.
    client, parent, runs = _trial_runs(home, first["sweep_id"])
    assert parent is not None and parent.info.status == "FINISHED"
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert {r.data.tags["ganops.trial_id"] for r in runs} == {t["trial_id"] for t in out["trials"]}

    # Done is done: a third submission starts nothing.
    r = cli("submit", spec, "--address", ray_head, "--home", str(home), "--json")
    assert json.loads(r.stdout)["existing"]
    assert [
        j.submission_id for j in jobs._client(ray_head).list_jobs() if j.submission_id.startswith(first["sweep_id"])
    ] == [first["job_id"]]

    r = cli("status", first["job_id"], "--address", ray_head, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "SUCCEEDED"
    r = cli("logs", first["job_id"], "--address", ray_head)
    assert r.returncode == 0 and first["sweep_id"] in r.stdout
    # The same under the `job` noun, following: an ended job's whole log, then exit 0. A job has no
    # terminal, so its sweep wrote plain progress lines (one per trial event) into that log.
    r = cli("job", "logs", first["job_id"], "--address", ray_head, "--follow")
    assert r.returncode == 0 and first["sweep_id"] in r.stdout
    assert " started: lr_d " in r.stdout and "done at step 400/400: mix_score " in r.stdout, r.stdout[-3000:]

    # A gate the best trial misses: exit 1 with the verdict.
    r = cli("submit", spec, "--address", ray_head, "--home", str(home), "--wait", "--json", "--require", "mix_score>2")
    assert r.returncode == 1 and json.loads(r.stdout)["gate"]["passed"] is False


@pytest.mark.long
@pytest.mark.timeout(900)
def test_cancel_then_resubmit_resumes_the_sweep(ray_head, tmp_path):
    (tmp_path / "long.yaml").write_text(LONG)
    home = tmp_path / "cluster_home"
    spec = str(tmp_path / "long.yaml")
    handle = jobs.submit(spec_from_text(LONG), ray_head, home=str(home))

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until the trial has logged an eval
        time.sleep(0.25)
        if mlflow_store_ready(home / "mlflow.db"):
            try:
                client, parent, runs = _trial_runs(home, handle.sweep_id)
            except Exception:  # noqa: BLE001 - the job may be creating the store's tables right now
                continue
            if runs and client.get_metric_history(runs[0].info.run_id, "step"):
                break
    else:
        pytest.fail("the submitted trial never logged an eval")

    r = cli("cancel", handle.job_id, "--address", ray_head)
    assert r.returncode == 0, r.stderr
    assert jobs.wait(handle.job_id, ray_head, timeout_s=60).status == "STOPPED"
    r = cli("status", handle.job_id, "--address", ray_head)
    assert r.returncode == 1 and "STOPPED" in r.stderr

    # Submitting the same spec continues the stopped sweep in a new job.
    r = cli(
        "submit",
        spec,
        "--address",
        ray_head,
        "--home",
        str(home),
        "--wait",
        "--json",
        "--require",
        "step>=2000",
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["job"]["resumes"] == handle.job_id and out["job"]["job_id"] == f"{handle.sweep_id}-resume-1"
    client, parent, runs = _trial_runs(home, handle.sweep_id)
    assert len(runs) == 1 and parent.data.tags["ganops.resumes"] == "1"
    run = client.get_run(runs[0].info.run_id)
    assert run.info.status == "FINISHED" and int(run.data.tags["ganops.resumed_from_step"]) >= 250
    assert [int(m.step) for m in client.get_metric_history(run.info.run_id, "step")] == list(range(250, 2001, 250))


def test_unreachable_cluster_is_a_usage_error(tmp_path):
    (tmp_path / "quick.yaml").write_text(QUICK)
    r = cli("submit", str(tmp_path / "quick.yaml"), "--address", f"http://127.0.0.1:{_free_port()}")
    assert r.returncode == 2 and "cannot reach the Ray Jobs API" in r.stderr
