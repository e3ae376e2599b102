"""Registered-model URIs for `ganops sample` (no Ray; a fresh SQLite store at most)."""

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.registry import parse_model_uri, registered_name


@pytest.mark.parametrize(
    "uri, parsed",
    [
        ("models:/ganops-dcgan-mnist/3", ("ganops-dcgan-mnist", "3", None)),
        ("models:/ganops-dcgan-mnist@best", ("ganops-dcgan-mnist", None, "best")),
        ("models:/a.b_c/12/", ("a.b_c", "12", None)),
        ("models:/ganops-x", None),  # neither a version nor an alias
        ("models:/ganops-x/latest", None),  # stages and "latest" are not ganops' way to pick a version
        ("models:/m-0123abcd", None),
        ("runs:/abc/generator", None),
    ],
)
def test_model_uri_is_name_with_version_or_alias(uri, parsed):
    """Only models:/NAME/VERSION and models:/NAME@ALIAS name a registered generator."""
    assert parse_model_uri(uri) == parsed


def test_registered_model_is_named_after_the_spec():
    """One registered model per spec, versions from each sweep."""
    assert registered_name("dcgan-mnist") == "ganops-dcgan-mnist"


@pytest.mark.parametrize(
    "uri, says", [("models:/ganops-x", "not a model URI"), ("models:/ganops-nothing/1", "no registered model version")]
)
def test_sample_of_a_bad_or_unknown_model_uri_exits_2(ganops_home, uri, says):
    """`ganops sample models:/...` that names nothing: exit 2 and what to pass instead."""
    r = CliRunner().invoke(app, ["sample", uri, "--out", "x.png"])
    assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output


class _Planted:
    """What a hostile generator.pt would hold: unpickling it runs a command."""

    def __reduce__(self):
        import os

        return (os.system, ("touch planted-code-ran",))


def test_sample_refuses_a_generator_file_that_needs_unpickling(ganops_home, tmp_path):
    """A run whose generator.pt holds more than tensors and plain values: exit 2, nothing executed."""
    import torch
    from mlflow import MlflowClient

    from orchestrator import tracking

    uri = tracking.resolve_tracking_uri(None)
    client = MlflowClient(uri)
    run = client.create_run(tracking.ensure_experiment(client, "planted", uri)).info.run_id
    torch.save({"G": _Planted(), "config": {}}, tmp_path / "generator.pt")
    client.log_artifact(run, str(tmp_path / "generator.pt"), "generator")
    r = CliRunner().invoke(app, ["sample", run, "--out", "x.png"])
    assert r.exit_code == 2 and "loads safely" in r.output, r.output
    assert not (ganops_home.parent / "planted-code-ran").exists()


def test_a_registered_versions_step_is_its_ganops_step_tag(ganops_home):
    """`ganops sample models:/...` says which eval's generator a version holds; older versions: unknown."""
    from mlflow import MlflowClient

    from orchestrator import tracking
    from orchestrator.registry import TAG_STEP, version_step

    client = MlflowClient(tracking.resolve_tracking_uri(None))
    tracking.ensure_experiment(client, "steps", client.tracking_uri)  # the store, as a sweep leaves it
    client.create_registered_model("ganops-steps")
    source = (ganops_home / "model").as_uri()
    tagged = client.create_model_version("ganops-steps", source, tags={TAG_STEP: "40"})
    client.create_model_version("ganops-steps", source)  # registered before ganops tagged the step
    client.set_registered_model_alias("ganops-steps", "best", tagged.version)
    assert version_step(client, "models:/ganops-steps/1") == 40 == version_step(client, "models:/ganops-steps@best")
    assert version_step(client, "models:/ganops-steps/2") is None
    assert version_step(client, "models:/ganops-nothing/1") is None and version_step(client, "runs:/x/y") is None
