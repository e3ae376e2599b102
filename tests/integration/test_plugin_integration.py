"""Trainer plugins end to end through the CLI: the example package (installed, found by its
entry point) sweeps, samples and reports; the single-file example sweeps; a plugin that raises
fails its own trial, not the sweep."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHORT = [
    "--set",
    "trainer.steps=40",
    "--set",
    "trainer.eval_every=20",
    "--set",
    "trainer.eval_samples=200",
    "--set",
    "trainer.batch_size=16",
]


def _ganops(args, env, cwd, timeout=600):
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return r


def _env(tmp_path, pythonpath=()):
    env = {**os.environ, "GANOPS_HOME": str(tmp_path / "home")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(REPO), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env


@pytest.mark.timeout(900)
def test_the_example_package_sweeps_samples_and_reports(tmp_path):
    """examples/sngan_hinge, installed into its own site dir, is found as `model: sngan` (its
    entry point); a 2-trial sweep trains it with its Params searched and logged, then
    `ganops sample` and `ganops report` work on its best trial."""
    site = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(REPO / "examples" / "sngan_hinge"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    env = _env(tmp_path, [site])
    r = _ganops(["sweep", str(REPO / "examples" / "sngan_hinge" / "sngan.yaml"), *SHORT, "--json"], env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    trials = result["trials"]
    assert len(trials) == 2 and {t["status"] for t in trials} == {"done"}, trials
    client = MlflowClient(result["tracking_uri"])
    run = client.get_run(trials[0]["run_id"])
    assert run.data.params["model"] == "sngan" and run.data.params["params.g_channels"] == "32"
    assert {run.data.params["params.d_channels"] for run in (client.get_run(t["run_id"]) for t in trials)} <= {
        "16",
        "32",
    }
    assert "critic_real" in run.data.metrics and "d_x" not in run.data.metrics and "fid" in run.data.metrics

    best = min(trials, key=lambda t: t["metrics"]["fid"])
    r = _ganops(["sample", best["trial_id"], "--n", "16", "--out", "best.png", "--json"], env, tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["shape"] == [16, 1, 28, 28], r.stderr[-2000:]
    r = _ganops(["report", result["sweep_id"], "--out", "report.html", "--json"], env, tmp_path)
    assert r.returncode == 0 and (tmp_path / "report.html").stat().st_size > 10_000, r.stderr[-2000:]


FAILING = """
from pydantic import BaseModel
from torch import nn
from trainers.plugin import GanPlugin


class Boom(nn.Module):
    def __init__(self, inner, fail):
        super().__init__()
        self.inner, self.fail, self.calls = inner, fail, 0

    def forward(self, z):
        self.calls += 1
        if self.fail and self.calls > 3:
            raise RuntimeError("plugin G blew up on purpose")
        return self.inner(z)


class Flaky(GanPlugin):
    class Params(BaseModel):
        fail: bool = False

    def build(self):
        G = nn.Sequential(nn.Linear(self.cfg.latent_dim, 784), nn.Tanh(), nn.Unflatten(1, (1, 28, 28)))
        D = nn.Sequential(nn.Flatten(), nn.Linear(784, 1))
        return Boom(G, self.params.fail), D
"""


@pytest.mark.timeout(900)
def test_the_single_file_example_sweeps_and_a_raising_plugin_fails_only_its_trial(tmp_path):
    """examples/single_file runs from a copy of its folder (the plugin found beside the spec);
    then a plugin that raises in one trial of two: that trial's run is FAILED with the error as
    tag ganops.error and the traceback as artifact, the other finishes, the sweep exits 0."""
    shutil.copytree(REPO / "examples" / "single_file", tmp_path / "plugin")
    env = _env(tmp_path)
    r = _ganops(["sweep", str(tmp_path / "plugin" / "spec.yaml"), *SHORT, "--json"], env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = json.loads(r.stdout)["trials"]
    assert [t["status"] for t in trials] == ["done"] and trials[0]["metrics"]["step"] == 40

    (tmp_path / "plugin" / "flaky.py").write_text(FAILING)
    (tmp_path / "plugin" / "flaky.yaml").write_text(
        "name: flaky\ntrainer: {model: flaky.py:Flaky, data: mnist, latent_dim: 8}\n"
        # the two trials side by side: one Ray Train start-up to wait for, not two in turn
        "search:\n  fail: {grid: [false, true]}\nsweep: {num_samples: 1}\nstopping: {mode_collapse: null}\n"
    )
    r = _ganops(["sweep", str(tmp_path / "plugin" / "flaky.yaml"), *SHORT, "--json"], env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    by_fail = {t["config"]["fail"]: t for t in result["trials"]}
    assert by_fail[False]["status"] == "done" and by_fail[True]["status"] == "failed", result["trials"]
    client = MlflowClient(result["tracking_uri"])
    failed = client.search_runs(
        [result["experiment_id"]], filter_string="tags.`ganops.error` LIKE '%blew up on purpose%'"
    )
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    text = client.download_artifacts(failed[0].info.run_id, "error/traceback.txt", str(tmp_path))
    assert "plugin G blew up on purpose" in Path(text).read_text()


CRASH_ONCE = """
from pathlib import Path

from pydantic import BaseModel
from torch import nn
from trainers.plugin import GanPlugin


class CrashOnce(nn.Module):
    def __init__(self, inner, marker):
        super().__init__()
        self.inner, self.marker, self.calls = inner, marker, 0

    def forward(self, z):
        self.calls += 1
        if self.calls > 30 and not Path(self.marker).exists():  # past the first checkpoint (step 20)
            Path(self.marker).write_text("crashed")
            raise RuntimeError("crashed once on purpose")
        return self.inner(z)


class Once(GanPlugin):
    class Params(BaseModel):
        marker: str = ""

    def build(self):
        G = nn.Sequential(nn.Linear(self.cfg.latent_dim, 784), nn.Tanh(), nn.Unflatten(1, (1, 28, 28)))
        D = nn.Sequential(nn.Flatten(), nn.Linear(784, 1))
        return CrashOnce(G, self.params.marker), D
"""


@pytest.mark.timeout(600)
def test_an_in_process_trial_that_crashes_is_restarted_from_its_newest_checkpoint(tmp_path):
    """`resources.in_process`: a trial whose process fails (here its plugin raises once, after
    the first eval's checkpoint) is restarted by Tune (sweep.max_failures) from its newest
    checkpoint, in the same MLflow run, and finishes; every eval is logged once."""
    (tmp_path / "once.py").write_text(CRASH_ONCE)
    marker = tmp_path / "crashed"
    (tmp_path / "once.yaml").write_text(
        f"name: once\ntrainer: {{model: once.py:Once, data: mnist, latent_dim: 8, params: {{marker: '{marker}'}}}}\n"
        "sweep: {num_samples: 1, max_failures: 1}\nstopping: {mode_collapse: null}\nresources: {in_process: true}\n"
    )
    env = _env(tmp_path)
    r = _ganops(["sweep", str(tmp_path / "once.yaml"), *SHORT, "--json"], env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.read_text() == "crashed"  # it did crash once
    (trial,) = json.loads(r.stdout)["trials"]
    assert trial["status"] == "done" and trial["metrics"]["step"] == 40, trial
    client = MlflowClient(json.loads(r.stdout)["tracking_uri"])
    run = client.get_run(trial["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["ganops.resumed_from_step"] == "20", run.data.tags
    assert "ganops.error" not in run.data.tags  # the crash's traceback stays as an artifact
    traceback = client.download_artifacts(run.info.run_id, "error/traceback.txt", str(tmp_path))
    assert "crashed once on purpose" in Path(traceback).read_text()
    assert [int(m.step) for m in client.get_metric_history(run.info.run_id, "fid")] == [20, 40]
