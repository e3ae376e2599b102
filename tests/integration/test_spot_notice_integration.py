"""A spot interruption notice makes a running trial checkpoint at once, between two evals:
a fake IMDSv2 on 127.0.0.1 plays EC2's metadata service for the trial's workers."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import watch_store
from tests.fake_imds import FakeImds

pytestmark = pytest.mark.integration

SPEC = """
name: spotnotice
trainer: {model: mlp2d, data: grid25, steps: 2000, eval_every: 500, batch_size: 256, width: 64, eval_samples: 500}
sweep: {num_samples: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null, plateau: null, mode_collapse: null}
"""


@pytest.mark.timeout(600)
def test_notice_checkpoints_between_evals_and_the_trial_goes_on(ganops_home, tmp_path):
    (tmp_path / "spot.yaml").write_text(SPEC)
    with FakeImds() as imds:
        env = {
            **os.environ,
            "GANOPS_HOME": str(ganops_home),
            "GANOPS_IMDS_ENDPOINT": imds.url,
            "GANOPS_IMDS_POLL_S": "0.2",
        }
        err = (tmp_path / "sweep.err").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "sweep", "spot.yaml", "--json"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        client = watch_store(ganops_home / "mlflow.db", proc)
        assert client is not None, (tmp_path / "sweep.err").read_text()[-3000:]
        deadline = time.monotonic() + 240
        run_id = None
        while proc.poll() is None and time.monotonic() < deadline:  # arm after the first eval
            time.sleep(0.2)
            exp = client.get_experiment_by_name("spotnotice")
            runs = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'trial'") if exp else []
            if runs and client.get_metric_history(runs[0].info.run_id, "step"):
                run_id = runs[0].info.run_id
                imds.arm("terminate")
                break
        assert run_id is not None, (tmp_path / "sweep.err").read_text()[-3000:]
        out, _ = proc.communicate(timeout=300)
        err.close()
    assert proc.returncode == 0, (tmp_path / "sweep.err").read_text()[-3000:]
    result = json.loads(out)
    assert result["trials"][0]["status"] == "done"
    steps = [int(m.step) for m in client.get_metric_history(run_id, "step")]
    off_cycle = [s for s in steps if s % 500]
    # one checkpoint, on notice, then back to the schedule
    assert len(off_cycle) == 1 and 500 < off_cycle[0] < 2000, steps
    assert [s for s in steps if s % 500 == 0] == [500, 1000, 1500, 2000]
    notice = json.loads(client.get_run(run_id).data.tags["ganops.spot_notice"])
    assert notice["step"] == off_cycle[0] and notice["action"] == "terminate"
