"""The sweep's local Ray storage (GANOPS_HOME/ray), or its local MLflow store
(GANOPS_HOME/mlflow.db), becomes unwritable mid-sweep (issue 15, item 8).

Ray storage: after the first eval the directory is moved aside and a regular file takes its
place, so every write under it fails (ENOTDIR) as on a full or read-only disk. The sweep
gives up with a clear message naming the path and `ganops resume`, no traceback, exit 1, and
the evals logged so far stay in MLflow. With the directory back, `ganops resume` finishes the
trial, and its MLflow run holds every eval step exactly once.

Why a file in the directory's place rather than `chmod a-w`, a small tmpfs or `chattr +i`:
the tests run as root (permission bits are ignored), CI's containers may lack CAP_SYS_ADMIN
(no mount), and `chattr` needs ext4; replacing the directory works for any user anywhere.

MLflow store: after the first eval a directory takes the place of SQLite's rollback journal
(`mlflow.db-journal`), so SQLite can neither write nor read the database ("disk I/O error"), as
on a failing disk, for any user. The trial trains on and keeps its writes in the sweep's spool;
the sweep ends with exit 1 and a message naming the store and `ganops resume`; with the
journal's place free again, resume uploads what was kept and every eval is there once."""

import json
import os
import subprocess
import sys
import time

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


def _sweep(tmp_path, env, log):
    """The sweep as a user starts it, its stderr into `log`."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "sweep", "spec.yaml", "--json"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def _resume(tmp_path, env, sweep_id):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", sweep_id, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.timeout(900)
def test_sweep_fails_cleanly_when_its_storage_turns_unwritable_and_resumes_once_it_is_back(ganops_home, tmp_path):
    """Storage unwritable after the first eval: exit 1, a message with the path and `ganops
    resume`, no traceback, the first eval kept; storage back: resume exits 0, each eval once."""
    env = {**os.environ, "GANOPS_HOME": str(ganops_home)}
    store, aside = ganops_home / "ray", tmp_path / "ray.aside"
    log = tmp_path / "sweep.log"
    proc = _sweep(tmp_path, env, log)
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
    r = _resume(tmp_path, env, sweep_id)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [t["status"] for t in json.loads(r.stdout)["trials"]] == ["done"]
    trial = client.get_run(trial.info.run_id)
    assert trial.info.status == "FINISHED" and "stop_reason" not in trial.data.tags, trial.data.tags
    assert _steps(client, trial.info.run_id) == EVAL_STEPS  # each eval exactly once
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def _block_journal(journal, wait_s=30.0):
    """A directory where SQLite writes its rollback journal: every later query fails. A write
    in flight holds the journal file for a moment, so wait for it to go."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return journal.mkdir()
        except FileExistsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


@pytest.mark.timeout(900)
def test_sweep_keeps_its_evals_when_the_local_mlflow_store_fails_and_resume_uploads_them(ganops_home, tmp_path):
    """mlflow.db unreadable and unwritable after the first eval: the trial trains to the end,
    exit 1 with a message naming the store and `ganops resume`, no traceback at the end; the
    store back: resume exits 0 and the trial's run holds every eval exactly once."""
    env = {
        **os.environ,
        "GANOPS_HOME": str(ganops_home),
        "GANOPS_TRACKING_WAIT_S": "5",
        "GANOPS_SPOOL_RETRY_S": "2",
    }
    db, log = ganops_home / "mlflow.db", tmp_path / "sweep.log"
    journal = db.with_name(db.name + "-journal")
    proc = _sweep(tmp_path, env, log)
    try:
        client = watch_first_eval(db, proc, _trial_runs, log)
        exp = client.get_experiment_by_name("unwritable")
        parent = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'sweep'")[0]
        (trial,) = _trial_runs(client)
        sweep_id = parent.data.tags["ganops.sweep_id"]
        _block_journal(journal)  # from here SQLite answers every query with "disk I/O error"
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr_text = log.read_text()
    assert proc.returncode == 1, stderr_text[-3000:]
    flat = " ".join(stderr_text.split())
    ending = stderr_text[stderr_text.rindex("stopped answering") :]
    assert "Traceback" not in ending, stderr_text[-3000:]
    assert str(db) in flat and f"ganops resume {sweep_id}" in flat, stderr_text[-3000:]
    spooled = list((ganops_home / "ray" / sweep_id / "spool").rglob("*.json"))
    assert spooled, "the evals after the failure were not kept"

    journal.rmdir()  # the disk is back
    r = _resume(tmp_path, env, sweep_id)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [t["status"] for t in json.loads(r.stdout)["trials"]] == ["done"]
    assert _steps(client, trial.info.run_id) == EVAL_STEPS  # each eval exactly once, none lost
    assert client.get_run(trial.info.run_id).info.status == "FINISHED"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
