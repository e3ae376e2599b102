"""A worker node dies mid-trial on a real multi-node Ray (`ray.cluster_utils.Cluster`) whose
storage is S3 (moto's server on 127.0.0.1): the trial finishes on a new node from its last
checkpoint in S3, its MLflow run has every eval step exactly once, and it has a cost.

The head offers no CPU and the `ganops_driver` resource, as `ganops cluster` configures it,
so the trial driver and the sweep's trial board live on the head; the workers' node carries
the price labels a spot node gets. Tune itself is told not to retry a trial: the sweep can only finish if the driver
survived the node's death and Ray Train restarted the workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAKE_CREDS, watch_store  # noqa: E402

pytestmark = pytest.mark.integration

BUCKET = "ganops-nodeloss"
SPOT_LABELS = {
    "ganops.io/usd-per-hour": "0.9050",
    "ganops.io/on-demand-usd-per-hour": "7.2000",
    "ganops.io/market": "spot",
}


def spec_text(steps: int, eval_every: int) -> str:
    return f"""
name: nodeloss
trainer: {{model: mlp2d, data: grid25, steps: {steps}, eval_every: {eval_every}, batch_size: 256, width: 64, \
eval_samples: 500}}
sweep: {{num_samples: 1, max_failures: 3}}
stopping: {{d_overpowers: null, d_fooled: null, mixture_quality: null, plateau: null, mode_collapse: null}}
storage: s3://{BUCKET}/sweeps
"""


def run_node_loss(tmp_path: Path, *, steps: int = 4000, eval_every: int = 500, kill_after_step: int = 1000) -> dict:
    """Run the scenario; returns what happened (for the test's assertions and bench/node_loss.py).

    Sets AWS_* in os.environ for the Ray processes it starts (fake credentials, moto's URL)."""
    import boto3
    import ray
    from ray.cluster_utils import Cluster

    from infra.aws.storage import ensure_bucket
    from infra.local_services import moto_s3

    home = tmp_path / "ganops_runs"
    (tmp_path / "nodeloss.yaml").write_text(spec_text(steps, eval_every))
    with moto_s3(tmp_path / "moto.log", FAKE_CREDS) as moto:
        os.environ.update({**FAKE_CREDS, "AWS_ENDPOINT_URL": moto.url, "GANOPS_HOME": str(home)})
        ensure_bucket(BUCKET, "us-east-1")
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "resources": {"ganops_driver": 100}, "include_dashboard": False},
        )
        try:
            worker = cluster.add_node(num_cpus=2, labels=SPOT_LABELS)
            err = (tmp_path / "sweep.err").open("w")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "orchestrator.cli",
                    "sweep",
                    "nodeloss.yaml",
                    "--address",
                    cluster.address,
                    "--json",
                ],
                cwd=tmp_path,
                env=dict(os.environ),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            client = watch_store(home / "mlflow.db", proc)
            run_id, step_at_kill, killed_at = None, None, None
            deadline = time.monotonic() + 300
            while step_at_kill is None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.25)
                if client is None:
                    break
                exp = client.get_experiment_by_name("nodeloss")
                runs = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'trial'") if exp else []
                if runs:
                    run_id = runs[0].info.run_id
                    logged = [int(m.step) for m in client.get_metric_history(run_id, "step")]
                    if logged and max(logged) >= kill_after_step:
                        step_at_kill, killed_at = max(logged), time.monotonic()
                        cluster.remove_node(worker)  # the spot reclaim: every process of the node dies
            if step_at_kill is None:
                proc.kill()
                raise AssertionError(
                    f"the trial never reached step {kill_after_step}:\n{(tmp_path / 'sweep.err').read_text()[-3000:]}"
                )
            time.sleep(1.0)
            cluster.add_node(num_cpus=2, labels=SPOT_LABELS)  # the autoscaler's replacement
            back_at = None
            while proc.poll() is None and time.monotonic() < deadline + 300:
                time.sleep(0.25)
                logged = [int(m.step) for m in client.get_metric_history(run_id, "step")]
                if back_at is None and max(logged) > step_at_kill:
                    back_at = time.monotonic()
            out, _ = proc.communicate(timeout=60)
            err.close()
            run = client.get_run(run_id)
            s3 = boto3.client("s3")
            keys = [
                o["Key"]
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])
            ]
            return {
                "returncode": proc.returncode,
                "stderr": (tmp_path / "sweep.err").read_text()[-3000:],
                "result": json.loads(out) if out.strip() else None,
                "run": run,
                "steps": [int(m.step) for m in client.get_metric_history(run_id, "step")],
                "cost": [m.value for m in client.get_metric_history(run_id, "cost_usd")],
                "parent": client.get_run(run.data.tags["mlflow.parentRunId"]),
                "step_at_kill": step_at_kill,
                "seconds_to_progress": (back_at - killed_at) if back_at else None,
                "s3_keys": keys,
            }
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()


@pytest.mark.timeout(900)  # Ray Train starts twice (~15 s each) on a 3-node Ray
def test_trial_survives_losing_its_node_with_s3_checkpoints(tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("GANOPS_HOME", str(tmp_path / "ganops_runs"))  # restored after the test
    for k in (*FAKE_CREDS, "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(k, "unset")  # run_node_loss sets them; monkeypatch puts them back
    r = run_node_loss(tmp_path)
    assert r["returncode"] == 0, r["stderr"]
    trials = r["result"]["trials"]
    assert len(trials) == 1 and trials[0]["status"] == "done" and trials[0]["step"] == 4000
    # one value per eval step: nothing lost, nothing logged twice across the restart
    assert r["steps"] == list(range(500, 4001, 500))
    run = r["run"]
    assert run.info.status == "FINISHED"
    resumed = int(run.data.tags["ganops.resumed_from_step"])
    assert 500 <= resumed <= r["step_at_kill"]  # from the last checkpoint in S3, not from scratch
    # the checkpoints and Tune's experiment state are in the bucket
    assert any(k.endswith("/state.pt") and "/train/" in k for k in r["s3_keys"]), r["s3_keys"][:20]
    assert any("experiment_state" in k for k in r["s3_keys"]), r["s3_keys"][:20]
    # cost: the spot node's price for the CPU the worker held, growing with time
    assert r["cost"] == sorted(r["cost"]) and r["cost"][-1] > 0
    assert run.data.tags["ganops.cost"].endswith("USD/h")
    assert (
        r["parent"].data.metrics["cost_usd"] == pytest.approx(r["result"]["cost_usd"]) and r["result"]["cost_usd"] > 0
    )
    assert r["result"]["spot_saved_usd"] > r["result"]["cost_usd"]  # 7.20 vs 0.905 per hour
    # no credential anywhere in what MLflow holds
    for text in (json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(r["parent"].data.tags)):
        assert "testing" not in text
