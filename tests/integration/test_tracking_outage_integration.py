"""A tracking server that goes away mid-sweep (issue 15, item 4): a real `mlflow server` is
killed after the trial's first eval.

- Back a minute later: the sweep waits for it, uploads what the trial kept (trainers/spool.py)
  and exits 0; nothing is lost and every run ends FINISHED.
- Never back while the sweep runs: training finishes, the sweep exits 1 naming `ganops resume`,
  the writes wait in the sweep's spool; once the server is back, `ganops resume` uploads them
  and closes every run.

MLflow's own retries are cut to one (MLFLOW_HTTP_REQUEST_MAX_RETRIES) so the spool is what
saves the writes; with MLflow's default (~4 min of retries) a one-minute outage only blocks.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from infra.local_services import RestartableMlflowServer
from trainers.spool import pending, spool_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SPEC = """
name: NAME
trainer: {model: mlp2d, data: grid25, steps: 1500, eval_every: 500, batch_size: 64, width: 32, eval_samples: 300}
search:
  lr_d: {grid: [1.0e-3]}
sweep: {num_samples: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null}
tracking: {uri: URI}
"""
EVALS = [500, 1000, 1500]


@pytest.fixture
def server(tmp_path):
    s = RestartableMlflowServer(tmp_path / "mlflow", workers=1)
    s.up()
    yield s
    s.down()


def _sweep(tmp_path, ganops_home, server, name: str, wait_s: int, *args: str) -> subprocess.Popen:
    (tmp_path / f"{name}.yaml").write_text(SPEC.replace("NAME", name).replace("URI", server.url))
    env = {
        **os.environ,
        "GANOPS_HOME": str(ganops_home),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "GANOPS_SPOOL_RETRY_S": "2",
        "GANOPS_TRACKING_WAIT_S": str(wait_s),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / f"{name}.log").open("w"),
        text=True,
    )


def _trial(client: MlflowClient, name: str):
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'trial'") if exp else []
    return runs[0] if runs else None


def _kill_after_first_eval(server, proc, name: str, log) -> None:
    client = MlflowClient(server.url)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        run = _trial(client, name)
        if run is not None and client.get_metric_history(run.info.run_id, "step"):
            server.down(kill=True)
            return
        time.sleep(0.5)
    raise AssertionError(f"no first eval to kill the server after: {log.read_text()[-3000:]}")


def _wait_for_line(log, text: str, proc, timeout: float) -> None:
    """Until `text` is in the sweep's log (rich may wrap it), the sweep exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and text not in " ".join(log.read_text().split()):
        time.sleep(0.5)


def _nothing_lost(server, name: str) -> None:
    """Every eval, image, loss point and the generator are in MLflow once; every run FINISHED."""
    client = MlflowClient(server.url)
    run = _trial(client, name)
    assert run is not None
    rid = run.info.run_id
    assert [int(m.step) for m in client.get_metric_history(rid, "step")] == EVALS
    assert [int(m.step) for m in client.get_metric_history(rid, "loss_d")] == list(range(10, 1501, 10))
    images = [a.path for a in client.list_artifacts(rid, "images") if a.path.endswith(".png")]
    assert len(images) == len(EVALS), images
    assert [a.path for a in client.list_artifacts(rid, "generator")], "the generator was lost"
    assert run.info.status == "FINISHED", run.data.tags
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and parent.data.tags["ganops.trials"] == "1"


def test_server_back_a_minute_later_loses_nothing_and_the_sweep_succeeds(tmp_path, ganops_home, server):
    log = tmp_path / "back.log"
    proc = _sweep(tmp_path, ganops_home, server, "back", 300, "sweep", "back.yaml", "--json")
    try:
        _kill_after_first_eval(server, proc, "back", log)
        # Back once the sweep, its training done and the later writes kept, waits for the server:
        # polled, where a fixed minute was slept (the minute stays the most it is away).
        _wait_for_line(log, "does not answer; waiting up to", proc, timeout=60)
        server.up()
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    (trial,) = json.loads(out)["trials"]
    assert trial["step"] == 1500, trial
    uploaded = re.search(r"uploaded (\d+) writes the trials kept", " ".join(log.read_text().split()))
    assert uploaded and int(uploaded.group(1)) > 0, "the spool was never used: the test proves nothing"
    _nothing_lost(server, "back")
    assert pending(spool_root(str(ganops_home / "ray"), json.loads(out)["sweep_id"])) == 0


def test_server_gone_for_the_whole_sweep_keeps_everything_for_resume(tmp_path, ganops_home, server):
    log = tmp_path / "gone.log"
    proc = _sweep(tmp_path, ganops_home, server, "gone", 5, "sweep", "gone.yaml")
    try:
        _kill_after_first_eval(server, proc, "gone", log)
        proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 1, text[-3000:]
    said = re.search(r"`ganops resume (\S+)`", " ".join(text.split()))  # rich may wrap the message anywhere
    assert said, text[-3000:]
    sweep_id = said.group(1)
    root = spool_root(str(ganops_home / "ray"), sweep_id)
    assert pending(root) >= 4, "the evals after the first (metrics, images, generator) and the closing are kept"
    assert "Traceback" not in text
    server.up()
    client = MlflowClient(server.url)
    assert _trial(client, "gone").info.status == "RUNNING"  # its closing waits in the spool
    proc = _sweep(tmp_path, ganops_home, server, "gone-resume", 5, "resume", sweep_id, "--tracking-uri", server.url)
    proc.communicate(timeout=600)
    assert proc.returncode == 0, (tmp_path / "gone-resume.log").read_text()[-3000:]
    assert pending(root) == 0
    _nothing_lost(server, "gone")
