"""A sweep survives the death of its driver: `ganops sweep` is SIGKILLed mid-run, then
`ganops resume` finishes it. The finished trial is not re-run, the interrupted one continues
from its checkpoint in the same MLflow run, and every eval step is logged exactly once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from orchestrator import tracking
from tests.conftest import pids_whose_cmdline_has, watch_store

pytestmark = pytest.mark.integration

# Two trials one after the other: the first finishes, the second is killed after its second
# eval (step 500 of 2,000).
SPEC = """
name: resumable
trainer: {model: mlp2d, data: grid25, steps: 2000, eval_every: 250, batch_size: 256, width: 64, eval_samples: 500}
search:
  lr_d: {grid: [1.0e-3, 2.0e-4]}
sweep: {num_samples: 1, max_concurrent_trials: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null}
"""
EVAL_STEPS = list(range(250, 2001, 250))


def _trial_runs(client):
    exp = client.get_experiment_by_name("resumable")
    runs = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'trial'") if exp else []
    return sorted(runs, key=lambda r: r.data.tags["ganops.trial_id"])


def _steps(client, run_id, key="step"):
    return [int(m.step) for m in client.get_metric_history(run_id, key)]


def _ray_processes_of(pid: int) -> list[int]:
    """The processes of the local Ray cluster a driver started (its session is named after the driver's pid)."""
    return pids_whose_cmdline_has("session_", f"_{pid}/")


@pytest.mark.timeout(900)  # two trials, a kill and a resume, each start of Ray Train ~15 s
def test_sigkilled_sweep_resumes_without_losing_or_repeating_anything(ganops_home, tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    env = {**os.environ, "GANOPS_HOME": str(ganops_home)}
    log = (tmp_path / "sweep.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "sweep", "spec.yaml", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        client = watch_store(ganops_home / "mlflow.db", proc)
        assert client is not None, (tmp_path / "sweep.log").read_text()[-3000:]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            runs = _trial_runs(client)
            if len(runs) == 2 and len(_steps(client, runs[1].info.run_id)) >= 2:
                break
        assert proc.poll() is None, (
            f"the sweep ended before it could be killed: {(tmp_path / 'sweep.log').read_text()[-3000:]}"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Its local Ray goes down with it (Ray's processes share the driver's fate).
    deadline = time.monotonic() + 60
    while _ray_processes_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _ray_processes_of(proc.pid)

    first, second = _trial_runs(client)
    assert first.info.status == "FINISHED" and _steps(client, first.info.run_id) == EVAL_STEPS
    assert second.info.status == "RUNNING"
    killed_at = _steps(client, second.info.run_id)
    assert 500 <= killed_at[-1] < 2000
    parent = tracking.find_sweep_run(client, first.data.tags["ganops.sweep_id"])
    assert parent.info.status == "RUNNING"  # nobody closed it: the process died

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "resume",
            parent.data.tags["ganops.sweep_id"],
            "--json",
            "--require",
            "step>=2000",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert [t["status"] for t in result["trials"]] == ["done", "done"] and result["gate"]["passed"]

    runs = _trial_runs(client)
    assert [x.info.run_id for x in runs] == [first.info.run_id, second.info.run_id]  # no new runs
    assert client.get_run(first.info.run_id).info.end_time == first.info.end_time  # not re-run
    resumed = client.get_run(second.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert int(resumed.data.tags["ganops.resumed_from_step"]) >= 500  # from its checkpoint, not from scratch
    for key in ("step", "mix_score"):
        assert _steps(client, second.info.run_id, key) == EVAL_STEPS, key  # each eval exactly once
    # the losses also go to MLflow every log_every (10) steps: each point exactly once, none missing,
    # though the steps between the checkpoint and the kill were trained twice
    assert sorted(_steps(client, second.info.run_id, "loss_g")) == list(range(10, 2001, 10))
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert client.get_run(parent.info.run_id).data.tags["ganops.resumes"] == "1"

    # A finished sweep has nothing to resume: a clear message and exit 2.
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", parent.data.tags["ganops.sweep_id"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "already finished" in r.stderr


def test_resume_of_an_unknown_sweep_is_a_usage_error(ganops_home, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", "no-such-sweep"],
        cwd=tmp_path,
        env={**os.environ, "GANOPS_HOME": str(ganops_home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "no sweep 'no-such-sweep'" in r.stderr
