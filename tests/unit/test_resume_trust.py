"""`ganops resume` trusts its own configuration, not MLflow: whoever can write a run's tags on a
shared tracking server must not be able to make the resuming process unpickle their file.

Each test plants a `tuner.pkl` whose unpickling would create a file, forges what a tag-writer
can forge, and checks the resume exits 2 with a message and the file never appears."""

import json
import pickle

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from orchestrator import tracking
from orchestrator.cli import app
from orchestrator.sweep import STORED_SPEC, trusted_storage, write_stored_spec
from search_spaces.loader import spec_from_text

runner = CliRunner()
SPEC = spec_from_text("name: trust\ntrainer: {model: mlp2d, data: grid25}\n")
OTHER = spec_from_text("name: trust\ntrainer: {model: mlp2d, data: grid25, steps: 7}\n")


class _Planted:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling creates the marker file


def _plant(folder, marker, spec=SPEC):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tuner.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    (folder / STORED_SPEC).write_text(json.dumps(spec.model_dump(mode="json")))


def _parent(sweep_id: str, storage: str, spec=SPEC) -> str:
    uri = tracking.resolve_tracking_uri(None)
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(client, "trust", uri)
    return tracking.start_sweep_run(
        client, exp, sweep_id, spec.model_dump(mode="json"), spec.spec_hash, None, None, "mix_score", "max", storage
    )


def _resume(*args):
    r = runner.invoke(app, ["resume", *args])
    return r.exit_code, " ".join(r.output.split())


def test_a_storage_tag_pointing_elsewhere_is_refused_before_anything_is_read(ganops_home, tmp_path):
    """The tag says storage /evil: resume reads only GANOPS_HOME/ray, says so, exits 2; the planted pickle
    never runs."""
    marker = tmp_path / "pwned"
    _plant(tmp_path / "evil" / "s1", marker)
    _parent("s1", str(tmp_path / "evil"))
    code, out = _resume("s1")
    assert code == 2 and "says its storage is" in out and "--storage" in out, out
    assert not marker.exists()


def test_a_forged_sweep_id_cannot_walk_out_of_the_storage(ganops_home, tmp_path):
    """A sweep id tag with ../ is refused (exit 2) before a path is built from it."""
    marker = tmp_path / "pwned"
    root = trusted_storage(None)
    _plant(tmp_path / "evil", marker)
    run = _parent("s2", root)
    MlflowClient(tracking.resolve_tracking_uri(None)).set_tag(run, tracking.TAG_SWEEP, "../../evil")
    code, out = _resume(run)
    assert code == 2 and "sweep id '../../evil'" in out, out
    assert not marker.exists()


def test_a_spec_hash_that_disagrees_with_the_stored_spec_is_refused(ganops_home, tmp_path):
    """In the trusted storage, but MLflow names another spec (hash) than the one stored with the
    state: exit 2, the state is not restored."""
    marker = tmp_path / "pwned"
    root = trusted_storage(None)
    _plant(tmp_path / "x", marker)
    (tmp_path / "x" / STORED_SPEC).unlink()
    write_stored_spec(root, "s3", OTHER)
    (ganops_home / "ray" / "s3" / "tuner.pkl").write_bytes((tmp_path / "x" / "tuner.pkl").read_bytes())
    _parent("s3", root, SPEC)
    code, out = _resume("s3")
    assert code == 2 and "records disagree" in out, out
    assert not marker.exists()


def test_a_sweep_without_a_stored_spec_is_refused(ganops_home, tmp_path):
    """State without ganops' stored spec (an older ganops, or not ganops' at all): exit 2."""
    root = trusted_storage(None)
    (ganops_home / "ray" / "s4").mkdir(parents=True)
    _parent("s4", root)
    code, out = _resume("s4")
    assert code == 2 and f"no {STORED_SPEC}" in out, out


@pytest.mark.parametrize("bad", ["a/b", "../x", "-x", "a" * 201])
def test_sweep_ids_are_names_not_paths(bad, ganops_home, tmp_path):
    """`ganops sweep --sweep-id` takes names only: no slashes, no .., at most 200 characters."""
    (tmp_path / "s.yaml").write_text("name: trust\ntrainer: {model: mlp2d, data: grid25}\n")
    r = runner.invoke(app, ["sweep", str(tmp_path / "s.yaml"), "--sweep-id", bad])
    assert r.exit_code == 2 and "--sweep-id" in r.output and "not an id" in r.output, r.output
    assert not (tmp_path / "ganops_runs").exists()  # refused before anything is created
