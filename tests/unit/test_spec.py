"""The spec: safe loading, validation, errors that say where and what to do."""

import json
import sys

import pytest

from search_spaces.loader import SpecError, load_spec, spec_from_text
from search_spaces.tune_space import param_space, trial_trainer_config
from tests.conftest import SPECS

GOOD = """
name: t
trainer: {model: mlp2d, data: grid25, steps: 10}
search:
  lr_g: {loguniform: [1.0e-4, 1.0e-3]}
  dg_ratio: {choice: ["1:1", "2:1", "1:2"]}
"""


def issues(text, overrides=None):
    with pytest.raises(SpecError) as e:
        spec_from_text(text, "s.yaml", overrides)
    return e.value.issues


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_shipped_spec_validates_and_translates(path):
    """Each YAML in search_spaces/ is a valid spec that Ray Tune accepts."""
    spec = load_spec(path)
    assert param_space(spec).keys() == spec.search.keys()


def test_good_spec_fills_defaults_and_derives_metric():
    """Absent sections take defaults; the metric follows the data (mixtures rank by mix_score)."""
    spec = spec_from_text(GOOD)
    assert spec.trainer.steps == 10 and spec.sweep.num_samples == 8
    assert (spec.metric, spec.mode) == ("mix_score", "max")


def test_unknown_key_names_field_and_line():
    """A misspelt key is rejected with its field path and line."""
    (i,) = issues("name: t\ntrainer:\n  lr_gg: 0.1\n")
    assert i.path == "trainer.lr_gg" and i.line == 3 and "unknown key" in i.message


def test_out_of_range_value_names_field_and_line():
    """A value outside its range says what is allowed."""
    (i,) = issues("name: t\ntrainer:\n  lr_g: -1\n")
    assert i.path == "trainer.lr_g" and i.line == 3 and "greater than 0" in i.message


def test_bad_literal_lists_allowed_values():
    """An enumeration lists its choices."""
    (i,) = issues("name: t\ntrainer:\n  model: resnet\n")
    assert "dcgan28" in i.message and "mlp2d" in i.message


def test_search_of_unknown_setting_is_rejected():
    """Only trainer settings can be searched."""
    (i,) = issues("name: t\nsearch:\n  lr_x: {choice: [1]}\n")
    assert i.path == "search.lr_x" and i.line == 3 and "searchable settings" in i.message


def test_search_range_outside_trainer_bounds_is_rejected():
    """A range whose end is not a valid trainer value is caught before anything runs."""
    (i,) = issues("name: t\nsearch:\n  lr_d: {loguniform: [1.0e-5, 2]}\n")
    assert i.path.startswith("search.lr_d") and "less than or equal to 1" in i.message


def test_loguniform_needs_positive_low_and_one_distribution():
    """Distributions check their own arguments."""
    assert "low must be > 0" in issues("name: t\nsearch:\n  lr_d: {loguniform: [0, 1]}\n")[0].message
    assert "exactly one" in issues("name: t\nsearch:\n  lr_d: {uniform: [0.1, 1], choice: [1]}\n")[0].message


def test_bad_dg_ratio_format():
    """The D:G ratio is 'n_d:n_g'."""
    assert "n_d:n_g" in issues("name: t\ntrainer:\n  dg_ratio: 3\n")[0].message


def test_model_and_data_must_fit():
    """An MLP for 2-D points cannot train on MNIST."""
    assert "cannot train on" in issues("name: t\ntrainer: {model: mlp2d, data: mnist}\n")[0].message


def test_metric_must_be_reported_for_the_data():
    """The sweep metric must be one the trainer reports."""
    assert "choose one of" in issues("name: t\nsweep: {metric: accuracy}\n")[0].message


def test_python_tags_are_refused():
    """YAML loads safely: no object construction."""
    assert "not allowed" in issues("name: !!python/object/apply:os.system [echo hi]\n")[0].message


def test_aliases_are_refused():
    """No anchors/aliases, so no billion-laughs expansion."""
    text = (
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    )
    assert "aliases" in issues(text)[0].message


def test_not_a_mapping_and_broken_yaml():
    """Non-mapping documents and syntax errors get a line."""
    assert "mapping" in issues("- 1\n- 2\n")[0].message
    i = issues("name: t\ntrainer: {lr_g: 1\n")[0]
    assert "not valid YAML" in i.message and i.line


def test_missing_name_is_required():
    """`name` has no default."""
    (i,) = issues("trainer: {steps: 5}\n")
    assert i.path == "name" and "required" in i.message


def test_overrides_apply_and_are_validated():
    """--set values are parsed as YAML and validated like the file."""
    spec = spec_from_text(
        GOOD, overrides=["trainer.steps=7", "sweep.num_samples=3", "search.lr_g.loguniform=[1e-4, 2e-4]"]
    )
    assert spec.trainer.steps == 7 and spec.sweep.num_samples == 3 and spec.search["lr_g"].loguniform == (1e-4, 2e-4)
    assert "must look like" in issues(GOOD, ["trainer.steps"])[0].message
    assert "not a section" in issues(GOOD, ["name.x=1"])[0].message
    assert issues(GOOD, ["trainer.steps=0"])[0].path == "trainer.steps"


def test_spec_hash_ignores_layout():
    """Same settings, same hash, whatever the YAML's order or comments."""
    a = spec_from_text("name: t\ntrainer: {steps: 5, lr_g: 0.001}\n")
    b = spec_from_text("# comment\ntrainer:\n  lr_g: 1.0e-3\n  steps: 5\nname: t\n")
    assert a.spec_hash == b.spec_hash != spec_from_text("name: t\ntrainer: {steps: 6}\n").spec_hash


def test_trial_config_merges_sampled_values_and_casts_q_ints():
    """A trial's config is the fixed settings plus the sampled ones, validated."""
    spec = spec_from_text("name: t\nsearch:\n  width: {quniform: [8, 32, 8]}\n  lr_g: {uniform: [0.001, 0.002]}\n")
    cfg = trial_trainer_config(spec, {"width": 16.0, "lr_g": 0.0015})
    assert (
        cfg["width"] == 16
        and isinstance(cfg["width"], int)
        and cfg["lr_g"] == 0.0015
        and cfg["steps"] == spec.trainer.steps
    )


def test_missing_file_and_non_utf8(tmp_path):
    """A missing or binary file is a spec error, not a traceback."""
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(SpecError, match="UTF-8"):
        load_spec(p)


def test_trial_bigger_than_cluster_is_refused_up_front():
    """A trial that no cluster node set can hold is a clear error, not a hang."""
    from orchestrator.sweep import SweepError, check_fits

    spec = spec_from_text("name: t\nresources: {workers_per_trial: 3, cpus_per_worker: 1}\n")
    with pytest.raises(SweepError, match="needs 3 CPU"):
        check_fits(spec, {"CPU": 2.0})
    check_fits(spec, {"CPU": 4.0})
    gpu = spec_from_text("name: t\nresources: {gpus_per_worker: 1}\n")
    with pytest.raises(SweepError, match="GPU"):
        check_fits(gpu, {"CPU": 2.0})


def test_pbt_mutates_the_searched_settings_a_running_trial_can_change():
    """scheduler: pbt mutates, by default, every searched setting that can change in flight."""
    spec = spec_from_text(GOOD + "  width: {choice: [64, 128]}\nsweep: {scheduler: pbt}\n")
    assert spec.pbt_mutations == ["lr_g", "dg_ratio"]  # width would need new networks


@pytest.mark.parametrize(
    "extra,message",
    [
        ("sweep: {scheduler: pbt, search_alg: optuna}", "PBT samples its initial population itself"),
        ("sweep: {scheduler: pbt, pbt: {mutate: [width]}}", "'width' cannot change inside a running trial"),
        ("sweep: {scheduler: pbt, pbt: {mutate: [lr_d]}}", "'lr_d' is not searched"),
    ],
)
def test_pbt_settings_that_cannot_work_are_refused(extra, message):
    (i,) = issues(GOOD + extra + "\n")
    assert message in i.message


@pytest.mark.parametrize(
    "resources,message",
    [
        ("{in_process: true, workers_per_trial: 2}", "in_process trains one CPU worker"),
        ("{in_process: true, gpus_per_worker: 0.5}", "in_process trains one CPU worker"),
    ],
)
def test_in_process_needs_one_cpu_worker(resources, message):
    (i,) = issues(f"name: t\nresources: {resources}\n")
    assert i.path.startswith("resources") and message in i.message


def test_in_process_is_refused_with_pbt_and_kept_otherwise():
    (i,) = issues(GOOD + "sweep: {scheduler: pbt}\nresources: {in_process: true}\n")
    assert i.path == "resources.in_process" and "leave in_process out with scheduler: pbt" in i.message
    assert spec_from_text("name: t\nresources: {in_process: true, cpus_per_worker: 2}\n").resources.in_process


def test_pbt_needs_a_mutable_searched_setting():
    (i,) = issues(
        "name: t\ntrainer: {model: mlp2d, data: grid25}\nsearch:\n  width: {choice: [64, 128]}\nsweep: {scheduler: "
        "pbt}\n"
    )
    assert "at least one searched setting it can mutate" in i.message


def test_pbt_explores_choices_by_neighbour_and_keeps_ranges_inside_their_bounds():
    """Choices mutate to a neighbouring value (a string can't be multiplied by 1.2); a
    range setting perturbed past its end is clamped back into the searched range."""
    from orchestrator.pbt import build_pbt

    spec = spec_from_text(GOOD + "sweep: {scheduler: pbt}\n")
    pbt = build_pbt(spec, board=None, storage="/tmp", param_space=param_space(spec))
    assert pbt._hyperparam_mutations["dg_ratio"] == ["1:1", "2:1", "1:2"]
    assert pbt._custom_explore_fn({"lr_g": 1.2e-3, "dg_ratio": "1:1"})["lr_g"] == 1.0e-3
    assert pbt._custom_explore_fn({"lr_g": 0.8e-4, "dg_ratio": "1:1"})["lr_g"] == 1.0e-4


def test_tracking_uri_with_a_password_is_refused_without_echoing_it():
    """A password in tracking.uri would be logged with the spec: refused at its line, env vars suggested."""
    with pytest.raises(SpecError) as e:
        spec_from_text('name: t\ntracking: {uri: "https://bob:hunter2@mlflow.example:443"}\n')
    text = e.value.render()
    assert "<spec>:2 tracking.uri" in text and "MLFLOW_TRACKING_PASSWORD" in text and "hunter2" not in text
    assert spec_from_text("name: t\ntracking: {uri: http://127.0.0.1:5000}\n").tracking.uri == "http://127.0.0.1:5000"


KNOBS = """
name: knobs
trainer:
  model: mlp2d
  data: ring8
  steps: 10
  loss: wgan-gp
  gp_lambda: 10
  dg_ratio: "5:1"           # n_critic = 5
  soft_labels: true
  label_flip: 0.05
  clip_grad_norm: 10.0
  lr_decay: linear
  lr_decay_final: 0.1
  ema: 0.999
search:
  loss: {choice: [nonsaturating, minimax, hinge, wgan-gp]}
  clip_grad_norm: {choice: [null, 1.0]}
  ema: {choice: [null, 0.99, 0.999]}
  lr_decay: {grid: [none, exponential]}
  label_flip: {uniform: [0.0, 0.2]}
"""


def test_spec_with_the_training_knobs_validates_and_searches_the_loss():
    """The knobs of issue 3 are trainer settings like any other: fixed in `trainer:`, searched
    under `search:` (loss as a choice), and each sampled trial's config validates."""
    spec = spec_from_text(KNOBS)
    assert (spec.trainer.loss, spec.trainer.ema, spec.trainer.d_steps) == ("wgan-gp", 0.999, 5)
    space = param_space(spec)
    assert set(space) == {"loss", "clip_grad_norm", "ema", "lr_decay", "label_flip"}
    assert sorted(space["loss"].categories) == ["hinge", "minimax", "nonsaturating", "wgan-gp"]
    for loss in ("hinge", "minimax"):
        cfg = trial_trainer_config(
            spec, {"loss": loss, "clip_grad_norm": None, "ema": None, "lr_decay": "exponential", "label_flip": 0.1}
        )
        assert (cfg["loss"], cfg["clip_grad_norm"], cfg["ema"]) == (loss, None, None)


def test_unknown_loss_and_out_of_range_knobs_name_the_field():
    assert issues("name: t\ntrainer: {loss: wgan}\n")[0].path == "trainer.loss"
    bad = issues("name: t\ntrainer: {model: mlp2d, data: grid25}\nsearch:\n  label_flip: {uniform: [0.0, 0.7]}\n")[0]
    assert "label_flip" in bad.message and "0.7" in bad.message


def test_probability_metrics_are_refused_for_critic_losses():
    """d_x / d_g_z are not reported under hinge / wgan-gp: ranking by them would find nothing."""
    msg = issues("name: t\ntrainer: {loss: hinge}\nsweep: {metric: d_x}\n")[0].message
    assert "critic_real" in msg
    searched = "name: t\nsearch:\n  loss: {choice: [nonsaturating, wgan-gp]}\nsweep: {metric: d_g_z}\n"
    assert "wgan-gp" in issues(searched)[0].message
    spec_from_text("name: t\ntrainer: {loss: minimax}\nsweep: {metric: d_x}\n")


# ---- `ganops validate`: every problem in one run ----

MANY = """name: t
trainer:
  lr_g: zero
  stpes: 10
search:
  lr_x: {choice: [1]}
  lr_d: {loguniform: [0, 1]}
sweep:
  metric: nope
  num_sampels: 3
"""


def test_every_problem_is_reported_in_one_run():
    """Field errors, misspellings and the cross-field checks they would have hidden all come at once, by line."""
    got = [(i.path, i.line) for i in issues(MANY)]
    assert got == [
        ("trainer.lr_g", 3),
        ("trainer.stpes", 4),
        ("search.lr_x", 6),
        ("search.lr_d", 7),
        ("sweep.metric", 9),
        ("sweep.num_sampels", 10),
    ]


def test_gathering_invents_no_problem_from_a_dropped_value():
    """A misspelt `model` is not read as the default dcgan28 (which cannot train on grid25): one issue, not two."""
    (i,) = issues("name: t\ntrainer: {modle: mlp2d, data: grid25}\nsearch:\n  lr_g: {choice: [0.001]}\n")
    assert i.path == "trainer.modle" and "did you mean 'model'?" in i.message


@pytest.mark.parametrize(
    "text, where, near",
    [
        ("name: t\ntrainer:\n  lr_gg: 0.1\n", "trainer.lr_gg", "lr_g"),
        ("name: t\nstopping:\n  d_overpowers: {patiense: 2}\n", "stopping.d_overpowers.patiense", "patience"),
        ("name: t\nsearch:\n  lr_d: {loguniformm: [1.0e-4, 1.0e-3]}\n", "search.lr_d.loguniformm", "loguniform"),
        ("name: t\nsweeps: {num_samples: 2}\n", "sweeps", "sweep"),
        ("name: t\nsearch:\n  lr_gg: {choice: [0.001]}\n", "search.lr_gg", "lr_g"),
    ],
)
def test_a_misspelt_key_gets_the_nearest_valid_key(text, where, near):
    """difflib's nearest field name at that path, in any section (search keys: the trainer's settings)."""
    (i,) = issues(text)
    assert i.path == where and f"did you mean {near!r}?" in i.message


def test_an_unknown_key_with_no_near_name_lists_the_keys_there():
    (i,) = issues("name: t\nresources: {zzz: 1}\n")
    assert "keys here: workers_per_trial, cpus_per_worker, gpus_per_worker" in i.message


def test_a_bad_set_value_is_blamed_on_the_flag_not_a_line():
    """`--set trainer.lr_g=abc` names the flag; a bad value in the file still names its line; bad flags
    all come at once."""
    with pytest.raises(SpecError) as e:
        spec_from_text(GOOD, "s.yaml", ["trainer.lr_g=abc", "trainer.steps", "trainer.steps.x=1"])
    text = e.value.render()
    assert "--set trainer.lr_g=abc: Input should be a valid number" in text and "s.yaml:" not in text
    assert (
        "--set trainer.steps: must look like key.path=value" in text
        and "--set trainer.steps.x=1: trainer.steps: is a value, not a section" in text
    )
    (i,) = issues("name: t\ntrainer:\n  lr_g: abc\n", ["trainer.steps=20"])
    assert (i.line, i.flag) == (3, None)


def test_a_spec_that_searches_nothing_is_valid_with_a_warning():
    """No search (or one value of each setting): N identical trials, said as a warning, not an error."""
    check = _check("name: t\ntrainer: {model: mlp2d, data: grid25}\nsweep: {num_samples: 4}\n")
    assert check.spec is not None and not check.errors
    (w,) = check.warnings
    assert "4 trials are identical" in w.message and w.path == "search"
    single = _check("name: t\ntrainer: {model: mlp2d, data: grid25}\nsearch:\n  lr_g: {choice: [0.001]}\n")
    assert "8 trials are identical" in single.warnings[0].message and single.warnings[0].line == 3
    assert not _check(GOOD).warnings and not _check("name: t\nsweep: {num_samples: 1}\n").warnings


def _check(text, overrides=(), packages=True, tmp=None):
    from search_spaces.loader import _check_text
    from search_spaces.spec import SweepSpec

    return _check_text(text, "s.yaml", list(overrides), SweepSpec, tmp, packages)


def test_a_missing_optional_package_is_an_error_with_its_extra(monkeypatch):
    """optuna search, s3:// storage: validate says which package and `pip install 'ganops[extra]'`,
    alongside the spec's other problems; the loader used by `sweep` does not ask."""
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "boto3", None)
    text = "name: t\ntrainer: {model: mlp2d, data: grid25, lr_g: 0}\nsweep: {search_alg: optuna}\n"
    check = _check(text, ["storage=s3://bucket/ganops"])
    got = {(i.path, i.line, i.flag): i.message for i in check.errors}
    assert "pip install 'ganops[optuna]'" in got[("sweep.search_alg", 3, None)]
    assert "pip install 'ganops[s3]'" in got[("storage", None, "storage=s3://bucket/ganops")]
    assert ("trainer.lr_g", 2, None) in got and check.spec is None
    assert not _check(text.replace(", lr_g: 0", ""), packages=False).errors


def test_validate_cli_reports_warnings_and_every_error(tmp_path):
    """`ganops validate`: warnings on stderr (exit 0) and in --json; errors all listed, exit 2, JSON says why."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    runner = CliRunner()
    p = tmp_path / "s.yaml"
    p.write_text("name: t\ntrainer: {model: mlp2d, data: grid25}\n")
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 0 and "8 trials are identical" in r.stderr and "valid" in r.stderr
    r = runner.invoke(app, ["validate", str(p), "--json"])
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["valid"] and out["trials"] == 8 and "identical" in out["warnings"][0]["message"]
    p.write_text(MANY)
    r = runner.invoke(app, ["validate", str(p), "--json", "--set", "trainer.beta1=abc"])
    out = json.loads(r.stdout)
    assert r.exit_code == 2 and not out["valid"] and len(out["errors"]) == 7
    assert {
        "path": "trainer.beta1",
        "line": None,
        "flag": "trainer.beta1=abc",
        "message": out["errors"][0]["message"],
    } == out["errors"][0]
    assert (
        "--set trainer.beta1=abc:" in r.stderr
        and f"{p}:10 sweep.num_sampels: unknown key; did you mean 'num_samples'?" in r.stderr
    )
