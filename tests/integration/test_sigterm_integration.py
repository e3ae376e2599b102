"""SIGTERM keeps the story (issue 15, item 3): `ganops sweep --json` terminated after its first
eval exits 143, prints the trials so far, leaves no run RUNNING (each KILLED with reason
`terminated`), and `ganops resume` finishes the sweep with every step of every trial: trials
trained by Ray Train workers (resumed from Ray Train's checkpoints) and trials trained in their
own Tune process (`resources.in_process`, resumed from Tune's)."""

import json
import os
import signal
import subprocess
import sys

import pytest

from orchestrator import tracking
from tests.conftest import watch_first_eval

pytestmark = pytest.mark.integration

# Two trials one after the other; the first is terminated after its first eval (of four).
SPEC = """
name: terminated
trainer: {model: mlp2d, data: grid25, steps: 2000, eval_every: 500, batch_size: 128, width: 32, eval_samples: 300}
search:
  lr_d: {grid: [1.0e-3, 2.0e-4]}
sweep: {num_samples: 1, max_concurrent_trials: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null}
"""
EVAL_STEPS = [500, 1000, 1500, 2000]


def _trial_runs(client):
    exp = client.get_experiment_by_name("terminated")
    runs = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'trial'") if exp else []
    return sorted(runs, key=lambda r: r.data.tags["ganops.trial_id"])


def _steps(client, run_id, key="step"):
    return [int(m.step) for m in client.get_metric_history(run_id, key)]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("in_process", [False, True], ids=["ray-train", "in-process"])
def test_sigterm_closes_every_run_prints_the_trials_so_far_and_resume_finishes_the_sweep(
    ganops_home, tmp_path, in_process
):
    """SIGTERM after the first eval: exit 143, JSON with the trials so far, every run KILLED
    (stop_reason terminated); `ganops resume` then finishes every trial with all its steps."""
    (tmp_path / "spec.yaml").write_text(SPEC + f"resources: {{in_process: {str(in_process).lower()}}}\n")
    env = {**os.environ, "GANOPS_HOME": str(ganops_home)}
    log = tmp_path / "sweep.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "sweep", "spec.yaml", "--json"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            client = watch_first_eval(ganops_home / "mlflow.db", proc, _trial_runs, log)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 143, log.read_text()[-3000:]
    printed = json.loads(out)
    assert printed["interrupted"] == {
        "reason": "terminated",
        "signal": "SIGTERM",
        "exit_code": 143,
        "resume": f"ganops resume {printed['sweep_id']}",
    }
    (trial,) = [t for t in printed["trials"] if t["run_id"]]
    assert trial["status"] == "unfinished" and trial["stop_reason"] == "terminated" and 500 <= trial["step"] < 2000, (
        printed["trials"]
    )

    parent = tracking.find_sweep_run(client, printed["sweep_id"])
    assert parent.info.status == "KILLED" and parent.data.tags["stop_reason"] == "terminated"
    runs = _trial_runs(client)
    assert runs and all(r.info.status == "KILLED" and r.data.tags["stop_reason"] == "terminated" for r in runs), [
        (r.info.status, r.data.tags.get("stop_reason")) for r in runs
    ]
    stopped_at = _steps(client, runs[0].info.run_id)[-1]

    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", printed["sweep_id"], "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert [t["status"] for t in result["trials"]] == ["done", "done"], result["trials"]
    runs = _trial_runs(client)
    assert len(runs) == 2 and runs[0].info.run_id == trial["run_id"]  # the terminated trial kept its run
    for run in runs:
        assert run.info.status == "FINISHED" and "stop_reason" not in run.data.tags, run.data.tags
        assert _steps(client, run.info.run_id) == EVAL_STEPS  # each eval exactly once
    assert int(runs[0].data.tags["ganops.resumed_from_step"]) >= stopped_at  # from its checkpoint
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
