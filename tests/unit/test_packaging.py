"""infra.packaging: the client's pins, what a Python lacks of them, the probe's answer, Ray's version check."""

import importlib.metadata as md
import subprocess
import sys

import pytest

from infra import packaging
from infra.packaging import parse_probe, pins, unsatisfied, wrong_ray
from orchestrator.jobs import extras_for
from search_spaces.loader import spec_from_text

RAY = md.version("ray")
FAKE = """Metadata-Version: 2.1
Name: ganops-fake-dist
Version: 1.0
Provides-Extra: gone
Requires-Dist: surely-not-installed-ganops-xyz>=1; extra == "gone"
Provides-Extra: here
Requires-Dist: pyyaml; extra == "here"
"""


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """A real installed distribution (a .dist-info on sys.path) with an extra whose package is missing."""
    info = tmp_path / "ganops_fake_dist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "ganops-fake-dist"


def test_pins_leave_torch_to_the_node_and_pin_ray_with_its_extras():
    p = pins()
    assert not any(x.startswith("torch==") or x.startswith("torch[") for x in p)
    assert f"ray[default,train,tune]=={RAY}" in p
    assert f"mlflow=={md.version('mlflow')}" in p and f"torchmetrics=={md.version('torchmetrics')}" in p
    assert all("==" in x for x in p) and "optuna" not in " ".join(p)
    assert f"optuna=={md.version('optuna')}" in pins(["optuna"])
    assert f"boto3=={md.version('boto3')}" in pins(["s3"])


def test_unsatisfied_finds_a_missing_package_a_wrong_version_and_a_missing_extras_package(fake_dist):
    yaml_pin = f"pyyaml=={md.version('pyyaml')}"
    assert (
        unsatisfied([yaml_pin, f"ray[default,train,tune]=={RAY}", f"{fake_dist}==1.0", f"{fake_dist}[here]==1.0"]) == []
    )
    assert unsatisfied(["surely-not-installed-ganops-xyz==1.0", yaml_pin]) == ["surely-not-installed-ganops-xyz==1.0"]
    assert unsatisfied(["pyyaml==0.0.1"]) == ["pyyaml==0.0.1"]
    assert unsatisfied([f"{fake_dist}[gone]==1.0", f"{fake_dist}[here]==1.0"]) == [f"{fake_dist}[gone]==1.0"]
    assert unsatisfied([f"{fake_dist}[gone]==2.0"]) == [f"{fake_dist}[gone]==2.0"]


def test_the_probe_command_answers_in_its_log():
    reqs = [f"ray[default,train,tune]=={RAY}", "surely-not-installed-ganops-xyz==1.0"]
    out = subprocess.run(
        packaging.probe_command(reqs),
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=packaging.Path(packaging.__file__).parents[1],
        executable="/bin/bash",
    )
    assert out.returncode == 0, out.stderr
    info = parse_probe("(job supervisor) starting\n" + out.stdout + "bye\n")
    assert info == {
        "unsatisfied": ["surely-not-installed-ganops-xyz==1.0"],
        "ray": RAY,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
    }


def test_parse_probe_takes_the_last_answer_and_none_without_one():
    log = (
        "noise\n"
        'GANOPS_PROBE {"unsatisfied": ["a==1"], "ray": "1", "python": "3.10"}\n'
        'GANOPS_PROBE {"unsatisfied": [], "ray": "2", "python": "3.11"}\n'
        "tail"
    )
    assert parse_probe(log) == {"unsatisfied": [], "ray": "2", "python": "3.11"}
    assert (
        parse_probe("Traceback (most recent call last):\n  ModuleNotFoundError: No module named 'packaging'\n") is None
    )


def test_wrong_ray_names_both_versions_and_is_none_when_they_match():
    p = [f"ray[default,train,tune]=={RAY}", "mlflow==3.17.2"]
    assert wrong_ray(p, RAY) is None
    msg = wrong_ray(p, "2.40.0")
    assert "2.40.0" in msg and RAY in msg and "cannot change" in msg
    assert "(none)" in wrong_ray(p, None)
    assert wrong_ray(["mlflow==3.17.2"], "2.40.0") is None  # nothing to check against


def test_the_extras_a_spec_needs_on_the_cluster():
    base = (
        "name: x\n"
        "trainer: {model: mlp2d, data: grid25, steps: 100, eval_every: 50}\n"
        "search:\n"
        "  lr_d: {choice: [1.0e-3, 2.0e-4]}\n"
    )
    assert extras_for(spec_from_text(base)) == []
    assert extras_for(spec_from_text(base + "sweep: {search_alg: optuna}\nstorage: s3://bucket/ray\n")) == [
        "optuna",
        "s3",
    ]
