"""A real sweep on a real local Ray, recorded in a real MLflow store, checked through MLflow's client."""

import io
import json
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import ray
from mlflow import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from orchestrator.api import run_sweep, spec_from_text
from orchestrator.cli import app
from orchestrator.ray_local import private_temp_dir, session_dir

pytestmark = pytest.mark.integration

TINY_DCGAN = """
name: tiny-dcgan
trainer: {model: dcgan28, data: mnist, steps: 4, eval_every: 2, batch_size: 16, width: 8, eval_samples: 200}
search:
  lr_g: {loguniform: [1.0e-4, 1.0e-3]}
  real_label: {choice: [0.9, 1.0]}
sweep: {num_samples: 2, seed: 1}
stopping: {mode_collapse: null}  # 4 iterations: a fresh G draws one class
"""


FAKE_KEY_ID = "AKIAGANOPSFAKE0000000"
FAKE_SECRET = "ganops-fake-secret-never-logged-0123456789"


@pytest.fixture(scope="module")
def local_ray():
    # Fake credentials in the environment of the sweep and of every Ray worker: nothing the
    # sweep writes may contain them (checked by the two-worker test).
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    mp.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    mp.setenv("MLFLOW_TRACKING_TOKEN", FAKE_SECRET)
    # Started as `ganops sweep` starts a local Ray: in a private temp dir (orchestrator/ray_local.py).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=private_temp_dir())
    yield
    ray.shutdown()
    mp.undo()


def trial_runs(client, result):
    runs = client.search_runs(
        [result.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    return {r.data.tags["ganops.trial_id"]: r for r in runs}


@pytest.mark.core
def test_sweep_records_parent_and_child_runs_with_metrics_images_and_generator(local_ray, ganops_home):
    """Each trial is a child run of the sweep's run with its params, per-eval metrics, a sample grid per
    eval and a generator."""
    log = io.StringIO()  # not a terminal, as a CI log: plain progress lines, not a Live table
    result = run_sweep(spec_from_text(TINY_DCGAN), spec_text=TINY_DCGAN, console=Console(file=log, width=200))
    assert len(result.trials) == 2 and all(t.status == "done" for t in result.trials)
    for t in result.trials:  # one line per trial event, as it happens
        for pattern in (
            rf"trial {t.trial_id} started: lr_g \S+, real_label \S+",
            rf"trial {t.trial_id} eval step 2/4: fid \S+",
            rf"trial {t.trial_id} done at step 4/4: fid \S+",
        ):
            assert re.search(pattern, log.getvalue()), (pattern, log.getvalue())
    assert re.search(r"sweep: 0 running, 2 done, 0 stopped, 0 failed, 0 pending; best fid \S+", log.getvalue()), (
        log.getvalue()
    )
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["ganops.kind"] == "sweep"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "leaderboard.md",
        "leaderboard.csv",
        "spec",
        "contact_sheet.png",
    }
    children = trial_runs(client, result)
    assert set(children) == {t.trial_id for t in result.trials}
    for t in result.trials:
        run = children[t.trial_id]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["lr_g"]) == pytest.approx(t.config["lr_g"])
        assert run.data.params["steps"] == "4"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "fid")] == [2, 4]
        for key in ("loss_d", "loss_d_real", "loss_d_fake", "loss_g", "d_x", "d_g_z"):
            assert len(client.get_metric_history(run.info.run_id, key)) == 2, key
        images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
        assert sum(p.endswith(".png") and "step+2+" in p for p in images) == 1
        assert sum(p.endswith(".png") and "step+4+" in p for p in images) == 1
        assert [a.path for a in client.list_artifacts(run.info.run_id, "generator")] == ["generator/generator.pt"]
        # Issue 16: the trial's best eval (first of the lowest fids), its generator and its step.
        fids = [(m.value, m.step) for m in client.get_metric_history(run.info.run_id, "fid")]
        best_fid, best_step = min(fids, key=lambda vs: vs[0])
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "best_step")] == [
            (2, 2.0),
            (4, float(best_step)),
        ]
        assert [a.path for a in client.list_artifacts(run.info.run_id, "generator_best")] == [
            "generator_best/generator.pt"
        ]
        assert t.best_step == best_step and t.best_metrics is not None
        assert t.best_metrics["fid"] == pytest.approx(best_fid) and t.best_metrics["step"] == best_step
        assert "loss_d" in t.best_metrics  # that eval's whole report (Ray's history), not only its fid
        assert t.metrics["best_fid"] == pytest.approx(best_fid) and t.judged[1] == best_step
        # Issue 16 part 4: where the trial's time went, cumulative; the worker started inside its run.
        timers = run.data.metrics
        for key in ("setup_seconds", "evaluator_seconds", "checkpoint_seconds", "mlflow_seconds"):
            assert 0 < timers[key] < (run.info.end_time - run.info.start_time) / 1000, key
        assert run.info.start_time / 1000 < timers["worker_entered_at"] < run.info.end_time / 1000
    best = result.best
    assert best is not None and best.best_metrics is not None
    assert best.best_metrics["fid"] == min(t.best_metrics["fid"] for t in result.trials if t.best_metrics)

    # `ganops compare` reads the same sweep back from MLflow, best first.
    runner = CliRunner()
    r = runner.invoke(app, ["compare", result.sweep_id, "--json"])
    assert r.exit_code == 0, r.output
    table = json.loads(r.stdout)
    assert [t["trial_id"] for t in table["trials"]] == [t.trial_id for t in result.trials]
    assert runner.invoke(app, ["compare", "no-such-sweep"]).exit_code == 2

    # `ganops sample` by Ray trial id: raw samples in [-1, 1] and a PNG grid; the best eval's
    # generator by default, the latest with --latest, each with its step.
    r = runner.invoke(app, ["sample", best.trial_id, "--n", "10", "--out", "s.npy", "--json"])
    assert r.exit_code == 0, r.output
    assert {k: json.loads(r.stdout)[k] for k in ("generator", "step")} == {"generator": "best", "step": best.best_step}
    r = runner.invoke(app, ["sample", best.trial_id, "--n", "2", "--out", "l.npy", "--json", "--latest"])
    assert r.exit_code == 0 and {k: json.loads(r.stdout)[k] for k in ("generator", "step")} == {
        "generator": "latest",
        "step": 4,
    }, r.output
    x = np.load("s.npy")
    assert x.shape == (10, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    r = runner.invoke(app, ["sample", best.run_id, "--n", "16", "--out", "s.png"])
    assert r.exit_code == 0, r.output
    assert json.loads(runner.invoke(app, ["sample", best.run_id, "--n", "3", "--out", "p.npy", "--json"]).stdout)[
        "shape"
    ] == [3, 1, 28, 28]


def test_two_worker_trial_trains_and_reports_mixture_scores(local_ray, ganops_home):
    """A trial can use 2 Ray Train workers (gradients averaged) on a 2-CPU machine."""
    text = """
name: two-workers
trainer: {model: mlp2d, data: grid25, steps: 6, eval_every: 3, batch_size: 64, width: 32}
sweep: {num_samples: 1}
resources: {workers_per_trial: 2, cpus_per_worker: 1}
"""
    result = run_sweep(spec_from_text(text))
    (t,) = result.trials
    assert t.status == "done" and t.step == 6
    assert {"modes", "hq_pct", "reverse_kl", "mix_score"} <= set(t.metrics)
    client = MlflowClient(result.tracking_uri)
    assert [m.step for m in client.get_metric_history(t.run_id, "modes")] == [3, 6]

    r = CliRunner().invoke(app, ["sample", t.trial_id, "--n", "50", "--out", "pts.npy"])
    assert r.exit_code == 0, r.output
    assert np.load("pts.npy").shape == (50, 2)

    # No credential reaches MLflow (params, tags, metrics, artifacts), Ray's storage, or any
    # file of Ray's session (its logs record every trial's runtime environment), which only
    # this user can reach.
    session = session_dir()
    private = session.parent.parent  # Ray makes its own temp dir (session.parent) world-writable
    assert private.name.startswith("ganops-ray-") and stat.S_IMODE(private.stat().st_mode) == 0o700
    logs = [p for p in session.rglob("*") if p.is_file()]
    assert sum(p.suffix in (".log", ".out", ".err") for p in logs) > 10  # the scan saw Ray's logs
    written = [p for p in ganops_home.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written) and any("checkpoint" in str(p) for p in written)
    written += logs
    for p in written:
        data = p.read_bytes()
        assert FAKE_SECRET.encode() not in data and FAKE_KEY_ID.encode() not in data, p


# Three DCGAN trials that differ only in D's SGD learning rate (the balance rules' three fates).
THREE_FATES = """
name: three-fates
trainer: {model: dcgan28, data: mnist, steps: 400, eval_every: 40, batch_size: 64, width: 16, eval_samples: 200, \
optimizer_d: sgd, momentum: 0.9}
search:
  lr_d: {grid: [1.0, 1.0e-2, 1.0e-4]}
sweep: {num_samples: 1}
stopping: {mode_collapse: null}
"""


@pytest.mark.core
def test_balance_rules_stop_the_diverging_and_the_d_dominated_trial_and_let_the_healthy_one_finish(
    local_ray, ganops_home
):
    """One real Tune run, three DCGAN trials that differ only in D's SGD learning rate:
    lr_d 1.0 blows up (non-finite loss: FAILED, divergence), 1e-2 lets D overpower G
    (KILLED, d_overpowers, with the evidence), 1e-4 trains to its end (FINISHED)."""
    result = run_sweep(spec_from_text(THREE_FATES))
    by_lr = {t.config["lr_d"]: t for t in result.trials}
    client = MlflowClient(result.tracking_uri)

    diverged = by_lr[1.0]
    assert diverged.status == "stopped" and diverged.stop_reason.startswith("divergence"), diverged
    run = client.get_run(diverged.run_id)
    assert run.info.status == "FAILED" and run.data.tags["stop_reason"] == "divergence"
    assert (
        "non-finite" in run.data.tags["divergence"]
        or "inf" in run.data.tags["divergence"]
        or "nan" in run.data.tags["divergence"]
    )

    dominated = by_lr[1.0e-2]
    assert dominated.status == "stopped" and dominated.stop_reason.startswith("d_overpowers"), dominated
    assert dominated.step < 400
    run = client.get_run(dominated.run_id)
    assert run.info.status == "KILLED" and run.data.tags["stop_reason"] == "d_overpowers"
    evidence = json.loads(run.data.tags["stop_evidence"])
    assert evidence["d_g_z_geo"] < 0.05 and evidence["d_x"] > 0.95 and evidence["loss_g"] > 3.0

    healthy = by_lr[1.0e-4]
    assert healthy.status == "done" and healthy.step == 400 and healthy.stop_reason is None, healthy
    assert client.get_run(healthy.run_id).info.status == "FINISHED"
    assert result.best.trial_id == healthy.trial_id

    with open(client.download_artifacts(result.parent_run_id, "leaderboard.md")) as f:
        board = f.read()
    assert "d_overpowers" in board and "divergence" in board
    # ranked by each trial's best eval: its value and step, beside how far the trial trained
    assert "| rank | trial | status | fid | at step | steps |" in board, board
    best_row = next(line for line in board.splitlines() if f"| {healthy.trial_id} |" in line)
    assert best_row.startswith("| 1 |") and f"| {healthy.judged[1]} | 400 |" in best_row, board
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["ganops.best_step"] == str(healthy.judged[1])
    assert parent.data.metrics["best_fid"] == result.value(healthy)


@pytest.mark.core
def test_in_process_trials_train_in_their_tune_process_with_the_same_fates_and_checkpoints(local_ray, ganops_home):
    """`resources.in_process`: the three fates above, each trial trained inside its Tune trial's
    process (no Ray Train run: nothing under the sweep's `train/` storage), reporting to Tune
    straight, with the same outcomes: divergence stopped and FAILED, the D-dominated trial
    stopped by the board's order and KILLED, the healthy one FINISHED with its best eval, and
    each trial's newest two checkpoints kept in its Tune trial directory."""
    result = run_sweep(spec_from_text(THREE_FATES + "resources: {in_process: true}\n"))
    by_lr = {t.config["lr_d"]: t for t in result.trials}
    client = MlflowClient(result.tracking_uri)
    diverged, dominated, healthy = by_lr[1.0], by_lr[1.0e-2], by_lr[1.0e-4]
    assert diverged.status == "stopped" and diverged.stop_reason.startswith("divergence"), diverged
    assert client.get_run(diverged.run_id).info.status == "FAILED"
    assert dominated.status == "stopped" and dominated.stop_reason.startswith("d_overpowers"), dominated
    assert dominated.step < 400 and client.get_run(dominated.run_id).info.status == "KILLED"
    assert healthy.status == "done" and healthy.step == 400 and result.best.trial_id == healthy.trial_id
    run = client.get_run(healthy.run_id)
    assert run.info.status == "FINISHED"
    assert [int(m.step) for m in client.get_metric_history(healthy.run_id, "fid")] == list(range(40, 401, 40))
    assert {a.path for a in client.list_artifacts(healthy.run_id)} >= {"generator", "generator_best", "images"}

    sweep_dir = Path(result.storage) / result.sweep_id
    assert not (sweep_dir / "train").exists()  # no Ray Train run was started
    (trial_dir,) = [d for d in sweep_dir.iterdir() if d.is_dir() and healthy.trial_id in d.name]
    kept = sorted(d.name for d in trial_dir.glob("checkpoint_*"))
    assert kept == ["checkpoint_000008", "checkpoint_000009"], kept  # 10 evals, the newest two kept
    assert {p.name for p in (trial_dir / kept[-1]).iterdir()} >= {"state.pt", "generator.pt"}


def test_mixture_quality_stops_a_grid25_trial_whose_generator_never_leaves_its_first_blob(local_ray, ganops_home):
    """A 2-D mixture trial whose G barely moves (lr_g 1e-7) keeps every sample in the first
    blob it drew, inside one mode's cell (eff_modes 1): the mixture rule, on by default, stops
    it once past its collapse warm-up (shortened here; the sample-quality floors' warm-up is
    pushed past the end, and d_overpowers is off, so the collapse check is the one that acts),
    and the run ends KILLED with the rule and the sample evidence."""
    text = """
name: frozen-g
trainer: {model: mlp2d, data: grid25, steps: 400, eval_every: 50, batch_size: 256, width: 32, latent_dim: 16, \
lr_g: 1.0e-7}
sweep: {num_samples: 1}
stopping: {d_overpowers: null, mixture_quality: {after_step: 100000, collapse_after_step: 100}}
"""
    result = run_sweep(spec_from_text(text))
    (trial,) = result.trials
    assert trial.status == "stopped" and trial.stop_reason.startswith("mixture_quality"), trial
    assert 150 <= trial.step < 400  # the first full window past the warm-up is the evals at 100 and 150
    run = MlflowClient(result.tracking_uri).get_run(trial.run_id)
    assert run.info.status == "KILLED" and run.data.tags["stop_reason"] == "mixture_quality"
    evidence = json.loads(run.data.tags["stop_evidence"])
    assert evidence["evals"] == 2 and evidence["floor"] == 1.5 and evidence["eff_modes"] < 1.5, evidence
    assert run.data.metrics["eff_modes"] < 1.5 and run.data.metrics["near_pct"] > 90
