"""Which trials get the MLflow login (orchestrator/trial.py `tracking_login_to_trials`): Tune's
copy into trials' runtime environments only for a tracking server on a Ray started elsewhere."""

import os

import pytest
from ray.tune.execution import class_cache

from orchestrator import tracking
from orchestrator.trial import tracking_login_to_trials

SERVER = "https://mlflow.team.example:5000"
LOGIN = set(tracking.CREDENTIAL_VARS)


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    """No MLflow login in the environment, and a HOME without ~/.mlflow/credentials."""
    for k in tracking.CREDENTIAL_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    "uri, started_here", [(SERVER, True), ("sqlite:////tmp/mlflow.db", False), ("file:///tmp/mlruns", False)]
)
def test_login_stays_home_when_the_workers_have_it_or_need_none(no_login, monkeypatch, uri, started_here):
    """A Ray started here forks its workers from this environment; a local store needs no login."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-0123")
    before = set(class_cache.ENV_VARS_TO_PROPAGATE)
    with tracking_login_to_trials(uri, started_here) as copied:
        assert copied is False
        assert not LOGIN & set(class_cache.ENV_VARS_TO_PROPAGATE)
    assert set(class_cache.ENV_VARS_TO_PROPAGATE) == before


def test_login_from_the_environment_travels_to_trials_on_a_ray_started_elsewhere(no_login, monkeypatch):
    """Server + Ray elsewhere: Tune copies the MLflow variables while the sweep runs, and stops after."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-0123")
    before = set(class_cache.ENV_VARS_TO_PROPAGATE)
    with tracking_login_to_trials(SERVER, ray_started_here=False) as copied:
        assert copied is True
        assert LOGIN <= set(class_cache.ENV_VARS_TO_PROPAGATE)
        assert set(class_cache.ENV_VARS_TO_PROPAGATE) >= before  # the AWS rule's set is kept as it was
    assert set(class_cache.ENV_VARS_TO_PROPAGATE) == before
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "tok-0123"


def test_login_from_the_credentials_file_travels_as_variables_for_the_sweeps_length(no_login):
    """A cluster's nodes lack ~/.mlflow/credentials: its login is in the environment Tune copies
    from while the sweep runs, and gone from it after."""
    (no_login / ".mlflow").mkdir()
    (no_login / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = bob\nmlflow_tracking_password = pw-file\n"
    )
    with tracking_login_to_trials(SERVER, ray_started_here=False) as copied:
        assert copied is True
        assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("bob", "pw-file")
    assert not LOGIN & set(os.environ)


def test_no_login_nothing_to_copy(no_login):
    """Without any login there is nothing to copy (an open server, or the preflight refuses)."""
    with tracking_login_to_trials(SERVER, ray_started_here=False) as copied:
        assert copied is False
        assert not LOGIN & set(class_cache.ENV_VARS_TO_PROPAGATE)


def test_access_check_asks_only_servers():
    """A local store has no login to check: the preflight does not touch it (no client call)."""
    for uri in ("sqlite:////tmp/x.db", "file:///tmp/mlruns", "/tmp/mlruns"):
        tracking.check_access(None, uri)  # None: any call on the client would fail
