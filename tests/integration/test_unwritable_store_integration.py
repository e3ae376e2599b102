"""The sweep's local Ray storage (GANOPS_HOME/ray) becomes unwritable mid-sweep (issue 15,
item 8): after the first eval the directory is moved aside and a regular file takes its
place, so every write under it fails (ENOTDIR) as on a full or read-only disk. The sweep
gives up with a clear message naming the path and `ganops resume`, no traceback, exit 1, and
the evals logged so far stay in MLflow. With the directory back, `ganops resume` finishes the
trial, and its MLflow run holds every eval step exactly once.

Why a file in the directory's place rather than `chmod a-w`, a small tmpfs or `chattr +i`:
the tests run as root (permission bits are ignored), CI's containers may lack CAP_SYS_ADMIN
(no mount), and `chattr` needs ext4; replacing the directory works for any user anywhere."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import watch_first_eval

pytestmark = pytest.mark.integration

SPEC = """
name: unwritable
trainer: {model: mlp2d, data: grid25, steps: 2000, eval_every: 500, batch_size: 128, width: 32, eval_samples: 300}
sweep: {num_samples: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null, plateau: null, mode_collapse: null}
"""
EVAL_STEPS = [500, 1000, 1500, 2000]


def _trial_runs(client):
    exp = client.get_experiment_by_name("unwritable")
    return client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'trial'") if exp else []


def _steps(client, run_id):
    return [int(m.step) for m in client.get_metric_history(run_id, "step")]


@pytest.mark.timeout(900)
def test_sweep_fails_cleanly_when_its_storage_turns_unwritable_and_resumes_once_it_is_back(ganops_home, tmp_path):
    """Storage unwritable after the first eval: exit 1, a message with the path and `ganops
    resume`, no traceback, the first eval kept; storage back: resume exits 0, each eval once."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    env = {**os.environ, "GANOPS_HOME": str(ganops_home)}
    store, aside = ganops_home / "ray", tmp_path / "ray.aside"
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
            store.rename(aside)
            store.write_text("not a directory: the sweep's storage is unwritable\n")
            out, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr_text = log.read_text()
    assert proc.returncode == 1, stderr_text[-3000:]
    flat = " ".join(stderr_text.split())
    assert str(store) in flat and "ganops resume" in flat, stderr_text[-3000:]
    # Ray logs each save it could not make, with its traceback, while the trial runs; what
    # ganops prints after the sweep ends is the message alone.
    ending = stderr_text[stderr_text.rindex("cannot be written") :]
    assert "Traceback" not in ending and "ganops resume" in ending, stderr_text[-3000:]
    (trial,) = _trial_runs(client)
    assert _steps(client, trial.info.run_id)[:1] == [500]  # the first eval is kept
    exp = client.get_experiment_by_name("unwritable")
    parent = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'sweep'")[0]
    assert parent.info.status == "FAILED"
    sweep_id = parent.data.tags["ganops.sweep_id"]
    assert f"ganops resume {sweep_id}" in flat

    store.unlink()  # space freed / permissions fixed: the storage is back
    aside.rename(store)
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", sweep_id, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert [t["status"] for t in json.loads(r.stdout)["trials"]] == ["done"]
    trial = client.get_run(trial.info.run_id)
    assert trial.info.status == "FINISHED" and "stop_reason" not in trial.data.tags, trial.data.tags
    assert _steps(client, trial.info.run_id) == EVAL_STEPS  # each eval exactly once
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
