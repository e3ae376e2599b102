"""CLI conventions (issue 19): fast imports, --version, completion, tables on stdout, the `job`
noun, `sweeps`, `schema`, unknown ids that create nothing, progress lines without a terminal,
and `cluster check` / the preflight of `cluster up|down` against moto."""

import importlib.util
import io
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator import local_store
from orchestrator.cli import app
from orchestrator.format import event_line, summary_line
from tests.conftest import FAKE_CREDS

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "infra" / "clusters" / "aws-spot-gpu.yaml"
runner = CliRunner()


def _bench():
    spec = importlib.util.spec_from_file_location("cli_latency", REPO / "bench" / "cli_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished 8-trial sweep written through MlflowClient with ganops' tags (the bench's builder);
    (uri, sweep id)."""
    home = tmp_path_factory.mktemp("store") / "ganops_runs"
    sweep_id = _bench().build_sweep(home)
    return f"sqlite:///{home / 'mlflow.db'}", sweep_id


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_cli_and_validate_import_no_ray_mlflow_torch_or_pandas():
    """`ganops --help` and `ganops validate` answer without importing ray (ray.tune), mlflow, torch or pandas."""
    code = (
        "import sys; from typer.testing import CliRunner; from orchestrator.cli import app; "
        "r = CliRunner().invoke(app, ['validate', 'search_spaces/dcgan.yaml']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('ray', 'ray.tune', 'mlflow', 'torch', 'pandas') if m in sys.modules))"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_version_comes_from_the_package_metadata():
    """`ganops --version` prints the installed distribution's version."""
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"ganops {version('ganops')}"


def test_shell_completion_is_offered():
    """typer's --install-completion / --show-completion are there."""
    r = runner.invoke(app, ["--help"])
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout


def test_job_verbs_live_under_job_and_the_old_names_still_work_hidden():
    """`ganops job submit|status|logs|cancel`; the top-level names answer but are not listed."""
    r = runner.invoke(app, ["job", "--help"])
    assert r.exit_code == 0 and all(v in r.stdout for v in ("submit", "status", "logs", "cancel"))
    top = runner.invoke(app, ["--help"]).stdout
    assert "job " in top and "submit " not in top
    for verb in ("submit", "status", "logs", "cancel"):
        assert runner.invoke(app, [verb, "--help"]).exit_code == 0
    assert "--follow" in runner.invoke(app, ["job", "logs", "--help"]).stdout


def test_status_of_a_job_where_no_cluster_listens_exits_2_fast():
    """An address nobody listens on is answered before Ray is imported, with what to do."""
    code = (
        "import sys; from typer.testing import CliRunner; from orchestrator.cli import app; "
        "r = CliRunner().invoke(app, ['job', 'status', 'nope', '--address', 'http://127.0.0.1:9']); "
        "print(r.exit_code, 'ray' in sys.modules); print(r.output)"
    )
    r = _python(code)
    first, _, said = r.stdout.partition("\n")
    assert first == "2 False", r.stdout + r.stderr
    assert "cannot reach the Ray Jobs API" in said and "ray start --head" in " ".join(said.split())


@pytest.mark.parametrize(
    "argv", [["compare", "nope"], ["report", "nope"], ["sample", "nope_00000", "--out", "x.png"], ["sweeps"]]
)
def test_read_commands_where_nothing_ran_create_nothing(argv, ganops_home):
    """With no store, compare/report/sample exit 2 (sweeps: none yet, exit 0); no mlflow.db, no folder, no file."""
    r = runner.invoke(app, argv)
    assert r.exit_code == (0 if argv == ["sweeps"] else 2), r.output
    assert "Traceback" not in r.output
    assert list(ganops_home.parent.iterdir()) == []


def test_unknown_ids_in_a_store_exit_2_and_leave_it_untouched(store):
    """An unknown sweep or run in an existing store: exit 2 with where to look; the store file is not written."""
    uri, _ = store
    db = local_store.sqlite_path(uri)
    before = db.stat().st_mtime_ns
    r = runner.invoke(app, ["compare", "nope", "--tracking-uri", uri])
    assert r.exit_code == 2 and "ganops sweeps" in r.output
    r = runner.invoke(app, ["sample", "nope_00000", "--tracking-uri", uri, "--out", "x.png"])
    assert r.exit_code == 2 and "leaderboard" in r.output
    r = runner.invoke(app, ["sample", "models:/nope@best", "--tracking-uri", uri, "--out", "x.png"])
    assert r.exit_code == 2 and "registered model 'nope'" in r.output
    assert db.stat().st_mtime_ns == before


def test_local_store_reads_what_mlflow_reads(store):
    """The read-only SQLite path gives the runs, tags, latest metrics and statuses MlflowClient gives."""
    from mlflow import MlflowClient

    from orchestrator import tracking

    uri, sweep_id = store
    client = MlflowClient(uri)
    parent = tracking.find_sweep_run(client, sweep_id)
    local_parent, local_children = local_store.sweep_runs(uri, sweep_id)
    assert local_parent.info.run_id == parent.info.run_id and local_parent.data.tags == parent.data.tags
    by_mlflow = {r.info.run_id: r for r in tracking.trial_runs(client, parent)}
    assert [r.info.run_id for r in local_children] == list(by_mlflow)  # same order: newest first
    for r in local_children:
        theirs = by_mlflow[r.info.run_id]
        assert (r.info.status, r.data.tags, r.data.metrics) == (
            theirs.info.status,
            theirs.data.tags,
            theirs.data.metrics,
        )
    assert local_store.sweep_runs(uri, parent.info.run_id)[0].info.run_id == parent.info.run_id  # by run id too
    assert local_store.sweep_runs(uri, "nope") == (None, [])
    assert local_store.sweep_runs("http://127.0.0.1:5000", sweep_id) is None  # a server: MLflow answers
    # the report's curves: every trial's metric histories in one query, as get_metric_history gives them
    keys = ("loss_d", "fid", "step")
    histories = local_store.metric_histories(uri, parent.info.run_id, keys)
    assert set(histories) == set(by_mlflow)
    for rid in by_mlflow:
        for k in keys:
            assert histories[rid].get(k, []) == sorted((m.step, m.value) for m in client.get_metric_history(rid, k))
    assert local_store.metric_histories("http://127.0.0.1:5000", parent.info.run_id, keys) is None


def test_compare_table_goes_to_stdout_and_hints_to_stderr(store):
    """`ganops compare` pipes: the table on stdout, the next-step hint on stderr."""
    uri, sweep_id = store
    r = runner.invoke(app, ["compare", sweep_id, "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    assert f"{sweep_id} (FINISHED): best fid (min) first" in r.stdout and "bench_00000" in r.stdout
    assert "Next: ganops sample bench_00000" in r.stderr and "Next:" not in r.stdout
    out = json.loads(runner.invoke(app, ["compare", sweep_id, "--tracking-uri", uri, "--json"]).stdout)
    assert len(out["trials"]) == 8 and out["trials"][0]["trial_id"] == "bench_00000"


def test_sweeps_lists_status_trials_best_and_start(store):
    """`ganops sweeps --json`: one entry per sweep with its status, trial count, best trial and start time."""
    uri, sweep_id = store
    r = runner.invoke(app, ["sweeps", "--tracking-uri", uri, "--json"])
    assert r.exit_code == 0, r.output
    [s] = json.loads(r.stdout)
    assert (s["sweep_id"], s["status"], s["trials"], s["metric"], s["best_trial"]) == (
        sweep_id,
        "FINISHED",
        8,
        "fid",
        "bench_00000",
    )
    assert s["best"] == pytest.approx(80.3) and s["start_time"]
    human = runner.invoke(app, ["sweeps", "--tracking-uri", uri])
    assert sweep_id in human.stdout and "FINISHED" in human.stdout


def test_schema_prints_the_specs_json_schema():
    """`ganops schema` is the pydantic JSON Schema of SweepSpec, with its field descriptions."""
    from search_spaces.spec import SweepSpec

    r = runner.invoke(app, ["schema"])
    assert r.exit_code == 0
    schema = json.loads(r.stdout)
    assert set(SweepSpec.model_json_schema()["properties"]) <= set(schema["properties"])


def test_progress_lines_read_as_one_event_each():
    """The plain progress formatter: trial, event, step of steps, metric, reason."""
    assert (
        event_line(45.2, "a_00000", "eval", step=200, steps=1000, metric="fid", value=87.31)
        == "[   45s] trial a_00000 eval step 200/1000: fid 87.31"
    )
    assert event_line(3, "a_00001", "started", detail="lr_g 0.0002") == "[    3s] trial a_00001 started: lr_g 0.0002"
    assert (
        event_line(90, "a_00001", "stopped", step=400, steps=1000, metric="fid", value=210.0, detail="d_overpowers")
        == "[   90s] trial a_00001 stopped at step 400/1000: fid 210; d_overpowers"
    )
    assert (
        summary_line(30, {"running": 2, "done": 1}, "fid", ("a_00000", 45.2))
        == "[   30s] sweep: 2 running, 1 done, 0 stopped, 0 failed, 0 pending; best fid 45.2 (a_00000)"
    )


def test_sweep_progress_without_a_terminal_writes_a_line_per_event(tmp_path, monkeypatch):
    """SweepProgress driven with real Tune Trial objects: no Live table on a non-terminal, one flushed line per event,
    summaries."""
    from ray.tune.experiment import Trial

    from orchestrator.progress import SweepProgress

    monkeypatch.setenv("GANOPS_PROGRESS_EVERY_S", "0.000001")
    sink = io.StringIO()
    p = SweepProgress(
        metric="fid",
        mode="min",
        steps=100,
        searched=["lr_g"],
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        console=Console(file=sink, width=200),
        experiment_ids=["0"],
    )
    a, b = (
        Trial("__fake", config={"lr_g": lr}, trial_id=tid, stub=True)
        for tid, lr in (("t_00000", 2e-4), ("t_00001", 1e-3))
    )
    p.setup()
    assert p.live is None
    p.on_trial_start(0, [a, b], a)
    p.on_trial_start(0, [a, b], b)
    p.on_trial_result(1, [a, b], a, {"step": 50, "fid": 90.0})
    p.on_trial_result(1, [a, b], a, {"step": 60, "loss_d": 0.7})  # not an eval: no line
    p.on_step(2, [a, b])
    a.update_last_result({"step": 100, "fid": 80.0})  # as Tune does before it calls the callbacks
    p.on_trial_result(3, [a, b], a, a.last_result)
    p.on_trial_complete(3, [a, b], a)
    b.update_last_result({"step": 20})
    p.on_trial_error(4, [a, b], b)
    p.on_experiment_end([a, b])
    lines = [ln.split("] ", 1)[1] for ln in sink.getvalue().splitlines()]
    assert lines == [
        "trial t_00000 started: lr_g 0.0002",
        "trial t_00001 started: lr_g 0.001",
        "trial t_00000 eval step 50/100: fid 90",
        "sweep: 2 running, 0 done, 0 stopped, 0 failed, 0 pending; best fid 90 (t_00000)",
        "trial t_00000 eval step 100/100: fid 80",
        "trial t_00000 done at step 100/100: fid 80",
        "trial t_00001 failed at step 20/100",
        "sweep: 0 running, 1 done, 0 stopped, 1 failed, 0 pending; best fid 80 (t_00000)",
    ]


def test_live_table_shows_the_best_trials_and_counts_the_rest(tmp_path):
    """On a terminal the live table lists the best TABLE_ROWS trials, best first, and how many
    more there are; the head line's counts and best come from every trial."""
    from ray.tune.experiment import Trial

    from orchestrator.progress import TABLE_ROWS, SweepProgress

    n = TABLE_ROWS + 15
    p = SweepProgress(
        metric="fid",
        mode="min",
        steps=100,
        searched=["lr_g"],
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        console=None,
        experiment_ids=["0"],
    )
    trials = [Trial("__fake", config={"lr_g": 1e-4}, trial_id=f"t_{i:05d}", stub=True) for i in range(n)]
    for i, t in enumerate(trials):
        p.on_trial_start(0, trials, t)
        p.on_trial_result(1, trials, t, {"step": 50, "fid": float(1000 - i)})  # the last started is the best
    p.on_trial_result(2, trials, trials[0], {"step": 60, "fid": 1.0})  # a trial's newest value moves it up
    p.on_trial_result(2, trials, trials[1], {"step": 60, "fid": float("nan")})  # a NaN goes last
    sink = io.StringIO()
    Console(file=sink, width=200, color_system=None).print(p._render())
    lines = sink.getvalue().splitlines()
    rows = [ln.split()[0] for ln in lines if ln.startswith("t_")]
    assert rows == ["t_00000", *[f"t_{i:05d}" for i in range(n - 1, n - TABLE_ROWS, -1)]]
    assert f"running {n}" in lines[0] and "best fid 1 (t_00000)" in lines[0]
    assert f"... and {n - TABLE_ROWS} more trial(s)" in lines[-1]
    assert p._counts()["running"] == n and p._ranked_trial_ids(n)[-1] == "t_00001"


def test_live_progress_ranks_trials_by_their_best_eval_not_their_latest(tmp_path):
    """GAN quality oscillates: a trial whose latest eval got worse still stands by its best eval
    (best_<metric>, reported with every eval), as the sweep's result and leaderboard judge it;
    the plain line says where the best was and the table shows it beside the latest."""
    from ray.tune.experiment import Trial

    from orchestrator.progress import SweepProgress

    sink = io.StringIO()
    p = SweepProgress(
        metric="fid",
        mode="min",
        steps=100,
        searched=["lr_g"],
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        console=Console(file=sink, width=200),
        experiment_ids=["0"],
    )
    a, b = (Trial("__fake", config={"lr_g": 1e-4}, trial_id=f"t_0000{i}", stub=True) for i in range(2))
    p.setup()  # stderr is not a terminal here: plain lines
    p.on_trial_start(0, [a, b], a)
    p.on_trial_start(0, [a, b], b)
    p.on_trial_result(1, [a, b], a, {"step": 50, "fid": 30.0, "best_fid": 30.0, "best_step": 50})
    p.on_trial_result(1, [a, b], b, {"step": 50, "fid": 40.0, "best_fid": 40.0, "best_step": 50})
    p.on_trial_result(2, [a, b], a, {"step": 100, "fid": 60.0, "best_fid": 30.0, "best_step": 50})
    p.on_trial_result(2, [a, b], b, {"step": 100, "fid": 50.0, "best_fid": 40.0, "best_step": 50})
    assert p.best() == ("t_00000", 30.0) and p._ranked_trial_ids(2) == ["t_00000", "t_00001"]
    assert "trial t_00000 eval step 100/100: fid 60; best 30 at step 50" in sink.getvalue()
    table = io.StringIO()
    Console(file=table, width=200, color_system=None).print(p._render())
    row = next(ln for ln in table.getvalue().splitlines() if ln.startswith("t_00000"))
    assert row.split()[2:5] == ["100/100", "60", "30"] and "(50)" in row
    p.on_trial_result(3, [a, b], b, {"step": 100, "fid": 50.0})  # a trial without best_<metric>: its latest
    assert p.best() == ("t_00000", 30.0) and p.rows["t_00001"]["best"] == 50.0


@pytest.mark.parametrize("mode", ["min", "max"])
def test_standings_rank_as_best_first_does_while_values_change(mode):
    """The driver's kept-in-order standings give metric_names.best_first's order (missing and
    non-finite last, ties by first seen) after every update, without re-sorting."""
    import math
    import random

    from orchestrator.results import Standings
    from trainers.metric_names import best_first

    rng = random.Random(7)
    st, latest = Standings(mode), {}
    for _ in range(400):
        tid = f"t{rng.randrange(60)}"
        value = rng.choice([None, math.nan, math.inf, float(rng.randrange(20)), rng.random()])
        latest[tid] = value
        st.update(tid, value)
        order = best_first(list(latest), lambda t: latest[t], mode)
        assert st.top(len(latest)) == order
        assert st.best() == (
            (order[0], latest[order[0]])
            if isinstance(latest[order[0]], float) and math.isfinite(latest[order[0]])
            else None
        )


# -- cluster preflight against moto ------------------------------------------------------------
@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup (seconds of timeouts)
    monkeypatch.setenv("GANOPS_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("verb", ["up", "down"])
def test_cluster_up_and_down_check_credentials_before_asking(verb, no_aws_credentials, tmp_path):
    """Without credentials `cluster up|down` exit 2 saying so, before any question, creating nothing."""
    r = runner.invoke(app, ["cluster", verb, str(PROFILE)], input="y\n")
    assert r.exit_code == 2, r.output
    said = " ".join(r.output.split())
    assert "credentials: none found" in said and "Continue?" not in said and "Terminate" not in said
    assert "ganops cluster check" in said and not (tmp_path / "home").exists()


def test_cluster_down_creates_no_security_group(aws_env, tmp_path, monkeypatch):
    """`cluster down` on a profile never brought up: nothing to tear down, exit 1, and no group appears."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("GANOPS_HOME", str(tmp_path / "home"))
    with mock_aws():
        r = runner.invoke(app, ["cluster", "down", str(PROFILE), "-y"])
        groups = boto3.client("ec2", region_name="us-east-1").describe_security_groups()["SecurityGroups"]
    assert r.exit_code == 1 and "nothing to tear down" in " ".join(r.output.split()), r.output
    assert not any(g["GroupName"].startswith("ganops") for g in groups)
    assert not (tmp_path / "home").exists()


def test_cluster_check_reports_what_is_missing_then_ready(aws_env, tmp_path, monkeypatch):
    """`cluster check --json` (moto): the missing instance profile fails it (exit 1); once created, ready (exit 0). No
    credential printed."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("GANOPS_HOME", str(tmp_path / "home"))
    with mock_aws():
        r = runner.invoke(app, ["cluster", "check", str(PROFILE), "--json"])
        assert r.exit_code == 1, r.output
        out = json.loads(r.stdout)
        checks = {c["name"]: c for c in out["checks"]}
        assert (
            not out["ready"]
            and checks["instance profile"]["ok"] is False
            and "create-instance-profile" in checks["instance profile"]["detail"]
        )
        assert checks["credentials"]["ok"] and checks["credentials accepted"]["ok"] and checks["boto3"]["ok"]
        assert checks["security group"]["ok"] is None and checks["bucket"]["ok"] is None  # `up` makes them
        boto3.client("iam", region_name="us-east-1").create_instance_profile(InstanceProfileName="ganops-node")
        r = runner.invoke(app, ["cluster", "check", str(PROFILE)])
    assert r.exit_code == 0, r.output
    assert "ready to launch" in r.stdout and "instance profile" in r.stdout
    assert all(v not in r.output for v in FAKE_CREDS.values() if v != "us-east-1")


def test_install_hints_keep_their_extras():
    """An error quoting `pip install 'ganops[aws]'` prints the [aws] (rich would eat it as markup)."""
    code = (
        "import sys; sys.modules['boto3'] = None; from typer.testing import CliRunner; from orchestrator.cli import "
        "app; "
        f"r = CliRunner().invoke(app, ['cluster', 'prices', {str(PROFILE)!r}]); print(r.exit_code); print(r.output)"
    )
    r = _python(code)
    assert r.stdout.startswith("2\n") and "pip install 'ganops[aws]'" in r.stdout, r.stdout + r.stderr
