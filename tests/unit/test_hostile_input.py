"""Hostile or careless input (issue 15, item 5): every case exits 2 with a message before anything
launches, and what MLflow or a trial hands back is shown as written, never run by rich or the terminal."""

import importlib.util
import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
OK = "name: t\ntrainer: {model: mlp2d, data: grid25, steps: 2}\nsweep: {num_samples: 1}\n"
# 189 bytes of YAML that expand to 9**6 = 531,441 strings.
LAUGHS = (
    "[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
    "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
)


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def _refused(argv: list[str], *expected: str) -> str:
    """Run the CLI: exit 2, no traceback, every `expected` in the output; the output."""
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and not isinstance(r.exception, Exception)
    for e in expected:
        assert e in r.output, r.output
    return r.output


def test_deeply_nested_yaml_is_refused_not_a_recursion_error(tmp_path, ganops_home):
    """2,000 `[` ran PyYAML's composer out of stack; the nesting is measured first."""
    p = _spec(tmp_path, "name: t\ndescription: " + "[" * 2000 + "\n")
    _refused(["validate", str(p)], f"{p}:2", "nests deeper than")
    _refused(["sweep", str(p)], "Nothing was launched")
    assert not ganops_home.exists()


def test_a_q_too_small_for_its_range_is_refused_not_an_overflow(tmp_path):
    """quniform [1e-4, 0.1, 1e-320]: x / q overflows, so the spec says so instead of OverflowError."""
    p = _spec(tmp_path, OK + "search:\n  lr_g: {quniform: [1.0e-4, 0.1, 1.0e-320]}\n")
    _refused(["validate", str(p)], "search.lr_g", "too small")
    p = _spec(tmp_path, OK + "search:\n  lr_g: {uniform: [1.0e-4, .inf]}\n")
    _refused(["validate", str(p)], "search.lr_g", "finite")


def test_a_file_whose_size_says_nothing_is_read_only_to_the_limit(tmp_path):
    """The limit is on what is read, not on what stat says: /proc files say 0 bytes (kallsyms holds megabytes)."""
    big = Path("/proc/kallsyms")
    if not big.is_file() or big.stat().st_size != 0:
        pytest.skip("needs Linux's /proc/kallsyms")
    _refused(["validate", str(big)], "larger than 1,000,000 bytes")


def test_set_values_with_aliases_are_refused_and_messages_echo_little(tmp_path):
    """`--set` gets the file's checks (no aliases), and no message repeats more than a glance of a value."""
    p = _spec(tmp_path, OK)
    out = _refused(["validate", str(p), "--set", f"search.lr_g={{choice: [{LAUGHS}]}}"], "aliases")
    assert len(out) < 1_000  # the value expanded into a 3 MB message before
    huge = "y" * 100_000
    out = _refused(["validate", str(p), "--set", f"search.lr_g={{choice: ['{huge}']}}"], "\u2026")
    assert len(out) < 2_000
    out = _refused(["validate", str(p), "--json", "--set", f"trainer.{huge}=1"])
    assert len(out) < 3_000


@pytest.mark.parametrize(
    "yaml_text, where",
    [
        ("sweep: {seed: -1}\n", "sweep.seed"),
        (f"sweep: {{seed: {2**32}}}\n", "sweep.seed"),
        (f"trainer: {{seed: {2**64}}}\n", "trainer.seed"),
        (f"search:\n  seed: {{choice: [1, {2**40}]}}\n", "search.seed"),
        (f"tracking: {{experiment: {'e' * 600}}}\n", "tracking.experiment"),
    ],
    ids=["negative-search-seed", "search-seed-past-32-bits", "trainer-seed-past-torch", "searched-seed", "experiment"],
)
def test_fields_that_would_fail_after_launch_are_refused_by_validate(tmp_path, ganops_home, yaml_text, where):
    """Seeds numpy, Optuna or torch refuse, and experiment names MLflow's database refuses, fail validate."""
    p = _spec(tmp_path, OK.replace("sweep: {num_samples: 1}\n", "") + yaml_text)
    _refused(["validate", str(p)], where)
    _refused(["sweep", str(p)], where, "Nothing was launched")
    assert not ganops_home.exists()


@pytest.mark.parametrize("command", ["sample", "compare", "report", "resume", "encode"])
def test_ids_with_quotes_are_refused_before_mlflow_is_asked(command, tmp_path, monkeypatch, ganops_home):
    """An id with a quote broke MLflow's filter string (a traceback); on a store only MLflow reads, it exits 2."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (tmp_path / "mlruns").mkdir()
    _refused([command, "x'y", "--tracking-uri", (tmp_path / "mlruns").as_uri()], "x'y", "is not an id")


def test_a_sweep_id_that_leaves_the_storage_root_is_refused(tmp_path, ganops_home):
    """`--sweep-id ../../x` (and `resume ../../x`) would name a directory outside the storage root."""
    p = _spec(tmp_path, OK)
    _refused(["sweep", str(p), "--sweep-id", "../../x"], "../../x")
    _refused(["resume", "../../x"], "../../x")
    _refused(["sweep", str(p), "--sweep-id", "a\nb"])
    assert not ganops_home.exists()


HOSTILE = {
    "stop_reason": "[/oops]",
    "link": "[link=http://evil.example]here[/link]",
    "osc8": "\x1b]8;;http://evil.example\x07click\x1b]8;;\x07",
    "colour": "\x1b[31mred\x1b[0m\x07",
}


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory):
    """A real SQLite MLflow store holding a sweep whose trials' stop reasons are markup and escapes."""
    spec = importlib.util.spec_from_file_location("cli_latency", REPO / "bench" / "cli_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    home = tmp_path_factory.mktemp("hostile") / "ganops_runs"
    sweep_id = bench.build_sweep(home, trials=len(HOSTILE))
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string="tags.`ganops.kind` = 'trial'"
    )
    for run, reason in zip(sorted(runs, key=lambda r: r.data.tags["ganops.trial_id"]), HOSTILE.values()):
        client.set_tag(run.info.run_id, "stop_reason", reason)
    client.set_tag(runs[0].info.run_id, "ganops.sampled", "not json")  # edited in the UI: shown as nothing sampled
    return uri, sweep_id


def test_compare_shows_mlflow_markup_as_written_and_strips_escapes(hostile_store):
    """`[/oops]` crashed compare and `[link=...]` became a hyperlink; ESC sequences reached the terminal."""
    uri, sweep_id = hostile_store
    r = runner.invoke(app, ["compare", sweep_id, "--tracking-uri", uri])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "[/oops]" in r.output and "[link=http://evil.example]here[/link]" in r.output
    assert "click" in r.output and "red" in r.output
    assert "\x1b" not in r.output and "\x07" not in r.output and "evil.example\x07" not in r.output


def test_sweeps_table_shows_mlflow_tags_as_written(hostile_store):
    """The sweeps table prints a sweep's tags as text, not markup, and survives a mode that is neither min nor max."""
    from mlflow import MlflowClient

    uri, sweep_id = hostile_store
    client = MlflowClient(uri)
    parent = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string="tags.`ganops.kind` = 'sweep'"
    )[0]
    client.set_tag(parent.info.run_id, "ganops.metric", "[/m]\x1b[2J")
    client.set_tag(parent.info.run_id, "ganops.mode", "[/mode]")  # not min or max: listed as min
    try:
        r = runner.invoke(app, ["sweeps", "--tracking-uri", uri])
        assert r.exit_code == 0, (r.output, r.exception)
        assert "[/m] (min)" in r.output and "\x1b" not in r.output
    finally:
        client.set_tag(parent.info.run_id, "ganops.metric", "fid")
        client.set_tag(parent.info.run_id, "ganops.mode", "min")


def test_progress_lines_and_live_table_show_foreign_text_as_written(tmp_path):
    """A searched string or a trial's error: no escape sequence in the CI log, no markup in the live table."""
    from ray.tune.experiment import Trial

    from orchestrator.progress import SweepProgress

    sink = io.StringIO()
    p = SweepProgress(
        metric="fid",
        mode="min",
        steps=100,
        searched=["act"],
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        console=Console(file=sink, width=200),
        experiment_ids=["0"],
    )
    t = Trial("__fake", config={"act": "\x1b]0;pwned\x07[/oops]\nfake line"}, trial_id="t_00000", stub=True)
    p.setup()
    p.on_trial_start(0, [t], t)
    assert sink.getvalue().count("\n") == 1 and "\x1b" not in sink.getvalue()
    assert "[/oops] fake line" in sink.getvalue()
    table = io.StringIO()
    Console(file=table, width=200, color_system=None).print(p._render())
    assert "[/oops]" in table.getvalue() and "\x1b" not in table.getvalue()


def test_the_leaderboard_shows_trial_errors_as_written():
    """A trial's error (or a job's result from a cluster) in the leaderboard: text, not markup."""
    import orchestrator.cli as cli
    from orchestrator.results import SweepResult, TrialSummary

    result = SweepResult(
        sweep_id="s-1",
        experiment="e",
        experiment_id="1",
        parent_run_id="0" * 32,
        tracking_uri="sqlite:///x.db",
        storage="x",
        metric="fid",
        mode="min",
        wall_seconds=1.0,
        first_result_seconds=None,
        trials=[
            TrialSummary(
                trial_id="t_00000",
                run_id=None,
                status="failed",
                config={"act": "[link=http://evil.example]x[/link]"},
                metrics={},
                step=3,
                error="ValueError: [/oops]\x1b[2J",
            )
        ],
    )
    out = io.StringIO()
    saved = cli.table_out
    cli.table_out = Console(file=out, width=200, color_system=None)
    try:
        cli._print_leaderboard(result)
    finally:
        cli.table_out = saved
    assert "[/oops]" in out.getvalue() and "[link=http://evil.example]x[/link]" in out.getvalue()
    assert "\x1b" not in out.getvalue()


@pytest.mark.parametrize(
    "field, uri",
    [
        ("tracking.uri", "https://hunter2token@mlflow.example"),
        ("tracking.uri", "https://mlflow.example/?token=hunter2token"),
        ("tracking.uri", "postgresql://mlflow:hunter2token@db.example/mlflow"),
        ("storage", "s3://AKIAHUNTER2:hunter2token@bucket/prefix"),
    ],
    ids=["token-in-userinfo", "token-query", "database-password", "s3-key-and-secret"],
)
def test_credentials_in_a_spec_uri_are_refused_without_being_repeated(tmp_path, field, uri):
    """A spec's URIs go to MLflow params, tags and --json: a credential in one is refused, in the file or a --set."""
    section, _, key = field.rpartition(".")
    text = OK + (f"{section}:\n  {key}: '{uri}'\n" if section else f"{key}: '{uri}'\n")
    out = _refused(["validate", str(_spec(tmp_path, text)), "--json"], field)
    assert "hunter2" not in out
    out = _refused(["validate", str(_spec(tmp_path, OK)), "--set", f"{field}={uri}"], field)
    assert "hunter2" not in out


def test_printed_tracking_uris_carry_no_token(ganops_home):
    """A --tracking-uri with a token in it is printed without the token."""
    r = runner.invoke(app, ["sweeps", "--tracking-uri", f"sqlite:///{ganops_home}/m.db?token=hunter2token"])
    assert r.exit_code == 0 and "no sweeps in" in r.output and "hunter2" not in r.output
