"""Each trial keeps its best eval's generator (issue 16): the worker's bookkeeping and artifacts,
the driver's ranking and gate, and what `ganops sample` loads. Real MLflow (SQLite), real torch."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from orchestrator import tracking
from orchestrator.cli import app
from orchestrator.gate import evaluate, parse
from orchestrator.jobs import result_from_dict
from orchestrator.results import SweepResult, TrialSummary, best_eval
from search_spaces.loader import spec_from_text
from trainers import loop
from trainers.best_eval import BEST_DIR, BestEval
from trainers.checkpoint import load_state
from trainers.config import TrainerConfig
from trainers.cost import Rate
from trainers.data import make_data
from trainers.models import build_models, gan_for
from trainers.precision import build_precision
from trainers.step import build_ema, build_optimizers, build_schedulers
from trainers.trial_log import MlflowSink

runner = CliRunner()


# ---- the worker's bookkeeping --------------------------------------------------------------------


def test_best_eval_keeps_the_first_of_the_best_finite_scores_by_mode():
    """Only a strictly better finite score moves the best; NaN, inf and a missing metric never do."""
    low = BestEval("fid", "min")
    steps = [(10, 50.0), (20, math.nan), (30, 20.0), (40, 20.0), (50, 35.0), (60, math.inf)]
    assert [low.update(s, {"fid": v}) for s, v in steps] == [True, False, True, False, False, False]
    assert low.report() == {"best_step": 30, "best_fid": 20.0}
    assert not low.update(70, {"loss_g": 0.1})
    high = BestEval("modes", "max")
    assert [high.update(s, {"modes": v}) for s, v in [(1, 5.0), (2, 8.0), (3, 7.0)]] == [True, True, False]
    assert high.report() == {"best_step": 2, "best_modes": 8.0}
    assert BestEval(None).report() == {} and not BestEval(None).update(1, {"fid": 1.0})
    with pytest.raises(ValueError, match="min .* or max"):
        BestEval("fid", "lowest")


def _worker(tmp_path, uri: str, run_id: str) -> loop._Worker:
    """A rank-0 worker of a 2-D mixture trial whose sweep ranks by loss_g, built as loop._setup does
    (without Ray: its eval's rank-0 part is what this file tests)."""
    cfg = TrainerConfig(model="mlp2d", data="ring8", steps=30, eval_every=10, eval_samples=500)
    cpu = torch.device("cpu")
    torch.manual_seed(cfg.seed)
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    w = loop._Worker(
        cfg,
        gan_for(cfg),
        {"metric": "loss_g", "mode": "min"},
        0,
        1,
        cpu,
        G,
        D,
        opt_g,
        opt_d,
        build_schedulers(opt_g, opt_d, cfg),
        build_ema(G, cfg),
        build_precision(cfg.precision, cpu),
        torch.Generator().manual_seed(cfg.seed),
        make_data(cfg),
    )
    w.best, w.rate = BestEval("loss_g", "min"), Rate()
    w.sink, w.noise = MlflowSink(uri, run_id), loop.fixed_noise(cfg)
    return w


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A trial run through three real evals whose loss_g improves at step 20 and worsens at 30;
    G's weights differ at each eval. Returns (client, run id, {step: G's state}, {step: report},
    the folder of each eval's files). One store for the module: its tests only read it."""
    tmp_path = tmp_path_factory.mktemp("best_eval")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(tracking.ensure_experiment(client, "best-eval", uri)).info.run_id
    w = _worker(tmp_path, uri, run_id)
    weights, reports = {}, {}
    for step, loss_g in [(10, 1.0), (20, 0.5), (30, 0.9)]:
        with torch.no_grad():
            for p in w.G.parameters():
                p.add_(0.1)
        w.step = step
        metrics = {"loss_g": loss_g, "step": step, "train_seconds": 1.0, "cost_usd": 0.0, "spot_saved_usd": 0.0}
        out = tmp_path / f"eval{step}"
        out.mkdir()
        loop._rank0_eval(w, metrics, {"loss_g"}, out)
        weights[step] = {k: v.clone() for k, v in w.G.state_dict().items()}
        reports[step] = metrics
    return client, run_id, weights, reports, tmp_path


def test_the_loop_logs_the_best_evals_generator_and_reports_its_step(evaluated):
    """An eval that beats the best logs generator_best/ too; every eval reports best_step and best_<metric>."""
    client, run_id, _, reports, tmp_path = evaluated
    assert [(r["best_step"], r["best_loss_g"]) for r in reports.values()] == [(10, 1.0), (20, 0.5), (20, 0.5)]
    # the timers: the evaluator is built once (first eval); checkpoint and MLflow time only grow
    ev = [r["evaluator_seconds"] for r in reports.values()]
    assert ev[0] > 0 and ev[0] == ev[1] == ev[2]
    ckpt, logged = ([r[k] for r in reports.values()] for k in ("checkpoint_seconds", "mlflow_seconds"))
    assert 0 < ckpt[0] < ckpt[1] < ckpt[2]  # each eval's checkpoint counts in its own report
    assert logged[0] == 0 < logged[1] < logged[2]  # each eval's MLflow write counts in the next one's
    history = client.get_metric_history(run_id, "best_step")
    assert [(m.step, m.value) for m in history] == [(10, 10.0), (20, 20.0), (30, 20.0)]
    assert [a.path for a in client.list_artifacts(run_id, BEST_DIR)] == [f"{BEST_DIR}/generator.pt"]
    best = client.download_artifacts(run_id, f"{BEST_DIR}/generator.pt", str(tmp_path / "dl"))
    assert open(best, "rb").read() == (tmp_path / "eval20" / "generator.pt").read_bytes()
    latest = client.download_artifacts(run_id, "generator/generator.pt", str(tmp_path / "dl2"))
    assert open(latest, "rb").read() == (tmp_path / "eval30" / "generator.pt").read_bytes()


def test_the_best_eval_survives_a_restore_from_the_checkpoint(evaluated):
    """The step-30 checkpoint's meta holds the best (step 20): the loop's restore brings it back, and
    a resumed trial's worse eval is not the best."""
    from ray.train import Checkpoint

    client, run_id, *_, tmp_path = evaluated
    assert load_state(tmp_path / "eval30" / loop.CHECKPOINT_FILE)["meta"]["best_step"] == 20
    w = _worker(tmp_path, client.tracking_uri, run_id)
    loop._restore(w, [Checkpoint.from_directory(str(tmp_path / "eval30"))])
    assert w.step == 30 and w.best.report() == {"best_step": 20, "best_loss_g": 0.5}
    assert not w.best.update(40, {"loss_g": 0.7}) and w.best.update(50, {"loss_g": 0.4})
    fresh = BestEval("loss_g", "min")
    fresh.restore({"cost_usd": 1.0})  # a checkpoint from before ganops kept the best
    assert fresh.report() == {}


def _sample(client: MlflowClient, tmp_path, *args: str) -> dict:
    out = str(tmp_path / "s.npy")
    r = runner.invoke(app, ["sample", *args, "--n", "8", "--out", out, "--tracking-uri", client.tracking_uri, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_sample_draws_the_best_evals_generator_unless_latest(evaluated):
    """`ganops sample RUN` loads the best eval's G (and says its step); --latest the last eval's."""
    from orchestrator.sample import fetch_generator

    client, run_id, weights, _, tmp_path = evaluated
    for args, which, step in [((), "best", 20), (("--latest",), "latest", 30)]:
        info = _sample(client, tmp_path, run_id, *args)
        assert (info["generator"], info["step"]) == (which, step)
        G, _, _, source = fetch_generator(client, run_id, latest=bool(args))
        assert source == {"generator": which, "step": step}
        assert all(torch.equal(v, weights[step][k]) for k, v in G.state_dict().items())
    r = runner.invoke(app, ["sample", run_id, "--out", str(tmp_path / "s.png"), "--tracking-uri", client.tracking_uri])
    assert r.exit_code == 0 and "best generator, step 20" in " ".join(r.output.split()), r.output


def test_sample_of_a_run_without_a_best_generator_falls_back_to_the_latest(evaluated):
    """Runs logged before ganops kept the best eval's generator still sample, from their latest."""
    client, run_id, *_, tmp_path = evaluated
    old = client.create_run(client.get_run(run_id).info.experiment_id).info.run_id
    client.log_artifact(old, client.download_artifacts(run_id, "generator/generator.pt", str(tmp_path)), "generator")
    info = _sample(client, tmp_path, old)
    assert (info["generator"], info["step"]) == ("latest", None)


def test_latest_with_a_registered_model_is_a_usage_error(evaluated):
    """A registered version is one generator: --latest with models:/ exits 2 saying what to pass."""
    client, *_, tmp_path = evaluated
    out = str(tmp_path / "x.png")
    r = runner.invoke(
        app, ["sample", "models:/ganops-x/1", "--latest", "--out", out, "--tracking-uri", client.tracking_uri]
    )
    assert r.exit_code == 2 and "trial's run or trial id" in r.output, r.output


# ---- the driver's ranking ------------------------------------------------------------------------


def _trial(tid: str, last: float, best: float | None, best_step: int | None = 40, status: str = "done"):
    bm = None if best is None else {"fid": best, "class_coverage": 9.0, "step": float(best_step or 0)}
    return TrialSummary(
        tid, f"r{tid}", status, {}, {"fid": last, "class_coverage": 10.0}, 100, None, None, best_step, bm
    )


def _result(*trials: TrialSummary) -> SweepResult:
    return SweepResult("s", "e", "1", "p", "sqlite:///x", "/tmp", "fid", "min", 1.0, None, list(trials))


def test_trials_are_ranked_by_their_best_eval_and_say_its_step():
    """A trial whose last eval is worse but whose best is better wins; old summaries rank by their last."""
    worse_last = _trial("a", last=60.0, best=20.0, best_step=40)
    steady = _trial("b", last=30.0, best=30.0, best_step=100)
    old = _trial("c", last=25.0, best=None, best_step=None)  # from before ganops kept the best
    result = _result(steady, old, worse_last)
    assert [t.trial_id for t in result.leaderboard()] == ["a", "c", "b"]
    assert result.best is worse_last and worse_last.judged == (worse_last.best_metrics, 40)
    assert old.judged == (old.metrics, 100)


def test_a_failed_trial_is_judged_by_its_last_report():
    """A good eval before a trial failed does not make it the sweep's winner."""
    failed = _trial("f", last=math.nan, best=5.0, status="failed")
    done = _trial("d", last=30.0, best=30.0)
    assert _result(failed, done).best is done and _result(failed).best is None


def test_the_gate_reads_the_best_trials_best_eval_and_names_its_step():
    """--require holds at the eval the trial was ranked by, and the verdict says which step."""
    gate = evaluate(parse(["fid<25", "class_coverage>=9"], spec_from_text("name: t\n")), _result(_trial("a", 60, 20)))
    assert gate["passed"] and gate["best_trial"] == "a" and gate["best_step"] == 40
    assert [c["value"] for c in gate["conditions"]] == [20.0, 9.0]
    # `step` asks how far the trial trained (CI's "it finished"), not where its best eval was
    gate = evaluate(parse(["step>=100", "fid<25"], spec_from_text("name: t\n")), _result(_trial("a", 60, 20)))
    assert gate["passed"] and [c["value"] for c in gate["conditions"]] == [100, 20.0], gate


def test_best_eval_reads_the_best_row_of_the_reports_history():
    """The driver takes the best eval's whole report from Ray's history (the later of a replayed step)."""
    history = pd.DataFrame(
        [
            {"step": 10, "fid": 40.0, "loss_g": 1.0, "config/lr_d": 1e-3},
            {"step": 20, "fid": 21.0, "loss_g": 0.8, "config/lr_d": 1e-3},
            {"step": 20, "fid": 20.0, "loss_g": 0.7, "config/lr_d": 1e-3},  # replayed after a restore
            {"step": 30, "fid": 35.0, "loss_g": 0.9, "best_step": 20, "best_fid": 20.0, "config/lr_d": 1e-3},
        ]
    )
    last = history.iloc[-1].to_dict()
    assert best_eval(history, last, "fid") == (20, {"step": 20.0, "fid": 20.0, "loss_g": 0.7})
    assert best_eval(None, last, "fid") == (20, {"fid": 20.0, "step": 20.0})  # no history at hand
    assert best_eval(history, {"step": 30, "fid": 35.0}, "fid") == (None, None)  # an older trial
    at_last = {"step": 30, "fid": 9.0, "best_step": 30, "best_fid": 9.0}
    assert best_eval(history, at_last, "fid") == (30, {"step": 30.0, "fid": 9.0, "best_step": 30.0, "best_fid": 9.0})


def test_json_keeps_every_old_field_and_round_trips_the_best_eval():
    """to_dict() only adds best_step/best_metrics; a job's JSON (old or new) rebuilds the result."""
    result = _result(_trial("a", 60.0, 20.0), _trial("b", 30.0, 30.0))
    d = json.loads(json.dumps(result.to_dict()))
    assert {"trial_id", "metrics", "step", "status", "best_step", "best_metrics"} <= set(d["trials"][0])
    assert d["best"]["trial_id"] == "a" and d["best"]["best_step"] == 40
    again = result_from_dict(d)
    assert (
        again.best is not None
        and again.best.trial_id == "a"
        and again.best.best_metrics
        == {
            "fid": 20.0,
            "class_coverage": 9.0,
            "step": 40.0,
        }
    )
    for t in d["trials"]:
        del t["best_step"], t["best_metrics"]
    old = result_from_dict(d)
    assert old.best is not None and old.best.trial_id == "b" and old.best.best_step is None


def test_the_leaderboard_shows_each_trials_best_eval_and_its_step(capsys):
    """The table's fid is the best eval's, `at step` says which eval, `step` how far the trial trained;
    the hint to sample the best generator names its step."""
    from orchestrator.cli import _print_leaderboard

    result = _result(_trial("b", last=30.0, best=30.0, best_step=100), _trial("a", last=60.0, best=20.0, best_step=40))
    result.trials = result.leaderboard()  # as the sweep leaves them
    _print_leaderboard(result)
    out = capsys.readouterr()
    header = next(line for line in out.out.splitlines() if "trial" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")][-3:] == ["at step", "step", "status"]
    rows = [[c.strip() for c in line.strip("│ ").split("│")] for line in out.out.splitlines() if line.startswith("│")]
    assert [(r[1], r[2], r[-3], r[-2]) for r in rows] == [("a", "20", "40", "100"), ("b", "30", "100", "100")]
    assert "look at the best generator (step 40)" in " ".join(out.err.split())


def test_compare_ranks_trials_by_their_best_eval_like_the_sweep(tmp_path):
    """`ganops compare` reads each trial run's best_<metric> and best_step (logged at every eval)
    and ranks by them, as the sweep does; a FAILED run keeps its last value; older runs without
    them keep theirs."""
    from mlflow.entities import Metric

    from tests.unit.test_cli_conventions import _bench

    home = tmp_path / "ganops_runs"
    sweep_id = _bench().build_sweep(home)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    runner = CliRunner()
    before = json.loads(runner.invoke(app, ["compare", sweep_id, "--tracking-uri", uri, "--json"]).stdout)["trials"]
    last, failed = before[-1], before[-2]
    client = MlflowClient(uri)
    # the last-ranked trial had a far better eval earlier; so did one that then failed
    for t in (last, failed):
        client.log_batch(t["run_id"], metrics=[Metric("best_fid", -1.0, 0, 100), Metric("best_step", 100, 0, 100)])
    client.set_terminated(failed["run_id"], "FAILED")
    r = runner.invoke(app, ["compare", sweep_id, "--tracking-uri", uri, "--json"])
    trials = json.loads(r.stdout)["trials"]
    assert trials[0]["trial_id"] == last["trial_id"] and trials[0]["fid"] == -1.0 and trials[0]["at_step"] == 100
    assert trials[0]["last_fid"] == last["fid"]
    by_id = {t["trial_id"]: t for t in trials}
    assert by_id[failed["trial_id"]]["fid"] == failed["fid"]  # a failed trial: its last report
    assert trials[1]["trial_id"] == before[0]["trial_id"] and trials[1]["at_step"] == trials[1]["step"]
    table = runner.invoke(app, ["compare", sweep_id, "--tracking-uri", uri]).stdout
    assert "at step" in table
