"""A sweep watched while it runs: the `ganops sweep` process on its own local Ray, and
`ganops compare` / `ganops report` / the parent run's contact sheet read from MLflow meanwhile."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import watch_store  # noqa: E402

pytestmark = pytest.mark.integration

# Two trials one after the other: the first one's end draws the contact sheet while the
# second is still training.
SPEC = """
name: live
trainer: {model: mlp2d, data: grid25, steps: 4000, eval_every: 1000, batch_size: 256, width: 64, eval_samples: 500}
search:
  lr_d: {grid: [1.0e-3, 2.0e-4]}
sweep: {num_samples: 1, max_concurrent_trials: 1}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null}
"""


def cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.long
def test_contact_sheet_compare_and_report_while_the_sweep_runs(ganops_home, tmp_path):
    (tmp_path / "live.yaml").write_text(SPEC)
    env = {**os.environ, "GANOPS_HOME": str(ganops_home)}
    err = open(tmp_path / "sweep.err", "w")  # noqa: SIM115 - the sweep's stderr, shown if the test fails
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "sweep",
            "live.yaml",
            "--json",
            "--require",
            "mix_score>=0",
            "--require",
            "step>=4000",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    try:
        client = watch_store(ganops_home / "mlflow.db", proc)
        assert client is not None, (tmp_path / "sweep.err").read_text()[-3000:]
        seen = None
        deadline = time.monotonic() + 240
        while seen is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
            exp = client.get_experiment_by_name("live")
            parents = client.search_runs([exp.experiment_id], "tags.`ganops.kind` = 'sweep'") if exp else []
            if (
                parents
                and parents[0].info.status == "RUNNING"
                and any(a.path == "contact_sheet.png" for a in client.list_artifacts(parents[0].info.run_id))
            ):
                seen = parents[0]
        assert seen is not None, (
            f"no contact sheet on the parent run while the sweep was running (exit {proc.poll()}):\n"
            f"{(tmp_path / 'sweep.err').read_text()[-3000:]}"
        )
        sweep_id = seen.data.tags["ganops.sweep_id"]

        r = cli("compare", sweep_id, "--json", env=env)
        assert r.returncode == 0, r.stderr
        table = json.loads(r.stdout)
        assert table["status"] == "RUNNING" and len(table["trials"]) >= 1

        r = cli("report", sweep_id, "--out", str(tmp_path / "r.html"), "--json", env=env)
        assert r.returncode == 0, r.stderr
        page = (tmp_path / "r.html").read_text()
        assert "This sweep is still running" in page and 'class="contact-sheet"' in page
    finally:
        out, _ = proc.communicate(timeout=300)
        err.close()
    assert proc.returncode == 0, (tmp_path / "sweep.err").read_text()[-3000:]  # the sweep ran and its quality gate held
    final = json.loads(out)
    assert len(final["trials"]) == 2
    assert final["gate"]["passed"] and [c["require"] for c in final["gate"]["conditions"]] == [
        "mix_score>=0",
        "step>=4000",
    ]
