"""The S3 endpoint goes away mid-sweep (a proxy in front of moto's server is taken down after
the first eval): the sweep gives up with a clear message and exit 1, the parent run is
FAILED, nothing logged is lost. With the endpoint back, `ganops resume` finishes the trial,
and its MLflow run holds every eval step exactly once."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import FAKE_CREDS, watch_store
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration

SPEC = """
name: s3fault
trainer: {model: mlp2d, data: grid25, steps: 2000, eval_every: 250, batch_size: 256, width: 64, eval_samples: 500}
sweep: {num_samples: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null, plateau: null, mode_collapse: null}
storage: s3://ganops-fault/sweeps
"""


@pytest.mark.long
@pytest.mark.timeout(900)
def test_sweep_fails_cleanly_when_s3_goes_away_and_resumes_when_it_is_back(ganops_home, tmp_path, monkeypatch):
    import boto3

    from infra.local_services import moto_s3

    (tmp_path / "f.yaml").write_text(SPEC)
    with moto_s3(tmp_path / "moto.log", FAKE_CREDS) as moto:
        for k, v in FAKE_CREDS.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        boto3.client("s3").create_bucket(Bucket="ganops-fault")
        proxy = FaultProxy(int(moto.url.rsplit(":", 1)[1])).up()
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "GANOPS_HOME": str(ganops_home)}
        err = (tmp_path / "sweep.err").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "sweep", "f.yaml", "--json"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        client = watch_store(ganops_home / "mlflow.db", proc)
        assert client is not None, (tmp_path / "sweep.err").read_text()[-3000:]
        exp = None
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
            exp = client.get_experiment_by_name("s3fault")
            runs = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'trial'") if exp else []
            if runs and client.get_metric_history(runs[0].info.run_id, "step"):
                proxy.down()
                break
        out, _ = proc.communicate(timeout=600)
        err.close()
        stderr = (tmp_path / "sweep.err").read_text()
        assert proc.returncode == 1, stderr[-3000:]
        assert "became unreachable mid-sweep" in stderr and "ganops resume" in stderr
        assert "testing" not in stderr.replace("testing for existence", "")  # pyarrow's wording, not a credential
        parent = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'sweep'")[0]
        assert parent.info.status == "FAILED"
        sweep_id = parent.data.tags["ganops.sweep_id"]
        trial = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'trial'")[0]
        logged_before = [int(m.step) for m in client.get_metric_history(trial.info.run_id, "step")]
        assert logged_before and logged_before[0] == 250

        proxy.up()  # the endpoint is back
        assert f"ganops resume {sweep_id} --storage s3://ganops-fault/sweeps" in " ".join(stderr.split())
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "resume",
                sweep_id,
                "--storage",
                "s3://ganops-fault/sweeps",
                "--json",
                "--require",
                "step>=2000",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        proxy.down()
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert [t["status"] for t in result["trials"]] == ["done"]
    trial = client.get_run(trial.info.run_id)
    assert trial.info.status == "FINISHED" and "stop_reason" not in trial.data.tags
    assert [int(m.step) for m in client.get_metric_history(trial.info.run_id, "step")] == list(range(250, 2001, 250))
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
