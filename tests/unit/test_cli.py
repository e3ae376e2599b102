"""The CLI: exit codes and messages, through typer's CliRunner (no Ray started)."""

import json

from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()


def test_validate_good_spec_exits_0_and_reports_json(tmp_path):
    """`ganops validate --json` prints the resolved spec on stdout."""
    r = runner.invoke(app, ["validate", "search_spaces/dcgan.yaml", "--json", "--set", "sweep.num_samples=3"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["valid"] and out["spec"]["sweep"]["num_samples"] == 3


def test_bad_spec_exits_2_with_place_and_no_traceback(tmp_path):
    """A broken spec: exit 2, file:line and field path, no traceback."""
    p = tmp_path / "bad.yaml"
    p.write_text("name: t\ntrainer:\n  lr_g: zero\n")
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 2
    assert f"{p}:3 trainer.lr_g" in r.output and "Traceback" not in r.output


def test_sweep_with_bad_spec_launches_nothing(tmp_path, ganops_home):
    """`ganops sweep` on a bad spec exits 2 before Ray or MLflow are touched."""
    p = tmp_path / "bad.yaml"
    p.write_text("name: t\nsearch:\n  lr_q: {choice: [1]}\n")
    r = runner.invoke(app, ["sweep", str(p)])
    assert r.exit_code == 2 and "search.lr_q" in r.output
    assert not ganops_home.exists()  # no MLflow store, no Ray storage


def test_bad_override_exits_2():
    """A malformed --set is a usage error."""
    r = runner.invoke(app, ["validate", "search_spaces/dcgan.yaml", "--set", "trainer.steps"])
    assert r.exit_code == 2 and "key.path=value" in r.output


def test_sample_unknown_run_exits_2_and_creates_no_store(ganops_home):
    """Sampling in a place where nothing has run says there is no store there, and creates none."""
    r = runner.invoke(app, ["sample", "nope_00000", "--out", "x.npy"])
    assert r.exit_code == 2 and "no MLflow store at" in r.output and "--tracking-uri" in r.output
    assert not ganops_home.exists() and not (ganops_home.parent / "x.npy").exists()


def test_a_bad_quality_gate_is_a_usage_error_and_launches_nothing(tmp_path):
    """`--require` is checked against the spec before anything starts: exit 2, a clear message."""
    p = tmp_path / "s.yaml"
    p.write_text("name: t\ntrainer: {model: mlp2d, data: grid25}\n")
    r = runner.invoke(app, ["sweep", str(p), "--require", "fid<30"])
    assert (
        r.exit_code == 2
        and "'fid' is not reported for data 'grid25'" in r.output
        and "Nothing was launched" in r.output
    )
    r = runner.invoke(app, ["sweep", str(p), "--require", "modes is 25"])
    assert r.exit_code == 2 and "write METRIC OP NUMBER" in r.output
