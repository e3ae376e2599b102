"""The MLflow side of a sweep: one parent run per sweep, one child run per trial.

Everything goes through `MlflowClient` with explicit run ids (no fluent global state), so
the trial drivers, the workers and the CLI can each write to the right run from any process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag

# Written once, in a module the CLI prints URIs with without importing MLflow.
from orchestrator.format import redact_uri  # noqa: F401

# Tag names, home and default store live where the CLI's fast paths read them without importing MLflow.
from orchestrator.local_store import TAG_KIND, TAG_PARENT, TAG_SWEEP, TAG_TRIAL, default_tracking_uri, home  # noqa: F401

log = logging.getLogger(__name__)

TAG_SPEC_HASH = "ganops.spec_hash"
TAG_STOP = "stop_reason"
TAG_ERROR = "ganops.error"  # a failed trial's error (record_error)
TAG_STORAGE = "ganops.storage"  # where Ray keeps the sweep's experiment state and checkpoints (for `ganops resume`)


def resolve_tracking_uri(uri: str | None) -> str:
    if uri is None:
        home().mkdir(parents=True, exist_ok=True)
        return default_tracking_uri()
    return uri


# What MLflow's client sends to a tracking server that asks for a login (its basic-auth app):
# a user and password, or a bearer token. Read from the environment (or ~/.mlflow/credentials);
# never written to a param, tag, log line or --json.
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


class TrackingAccessError(Exception):
    """The tracking server refused this process's login (HTTP 401) or its user (HTTP 403)."""


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_access(client: MlflowClient, uri: str) -> None:
    """Before a sweep launches anything: one cheap read (the first experiment) that a server
    with MLflow's basic-auth app answers 401 without a valid login and 403 for a user who may
    not read. Raises TrackingAccessError saying which variables to set; no-op for local stores."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import read_mlflow_creds

    if not is_server(uri):
        return
    try:
        client.search_experiments(max_results=1)
    except MlflowException as e:
        status = e.get_http_status_code()
        if status not in (401, 403):
            raise
    else:
        return
    user = read_mlflow_creds().username  # a user name is no secret; the password is never shown
    token = bool(os.environ.get("MLFLOW_TRACKING_TOKEN"))
    how = (
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a user of the server's basic-auth app) "
        "or MLFLOW_TRACKING_TOKEN in this environment, or put mlflow_tracking_username / "
        "mlflow_tracking_password under [mlflow] in ~/.mlflow/credentials"
    )
    if status == 403:
        msg = (
            f"tracking server {uri} does not let user {user!r} read experiments (HTTP 403); "
            "ask its admin for READ (or EDIT) permission"
        )
    elif user is None and not token:
        msg = f"tracking server {uri} asks for a login (HTTP 401) and none is set: {how}"
    else:
        who = f"user {user!r}" if user else "MLFLOW_TRACKING_TOKEN"
        msg = f"tracking server {uri} refused the login of {who} (HTTP 401: wrong user name, password or token): {how}"
    raise TrackingAccessError(msg)


def check_can_write(client: MlflowClient, uri: str, experiment_id: str, experiment: str, sweep_id: str) -> None:
    """Before a sweep launches anything: the write its runs will need. MLflow's basic-auth app
    lets a user with READ on an experiment (its default permission) search it but not add runs
    to it (HTTP 403). The probe is a write the same permission (EDIT) governs: the experiment's
    tag `ganops.last_sweep`. No-op for local stores."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import read_mlflow_creds

    if not is_server(uri):
        return
    try:
        client.set_experiment_tag(experiment_id, "ganops.last_sweep", sweep_id)
    except MlflowException as e:
        if e.get_http_status_code() != 403:
            raise
        user = read_mlflow_creds().username or "of MLFLOW_TRACKING_TOKEN"
        raise TrackingAccessError(
            f"tracking server {redact_uri(uri)} lets user {user!r} read experiment {experiment!r} but not add runs "
            "to it (HTTP 403); ask its owner for EDIT permission on it, or name an experiment of your own in the "
            "spec's tracking.experiment"
        ) from None


def git_commit() -> str | None:
    """The project's git commit, when it runs from a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # With a SQLite store, pin artifacts beside the database by absolute path: Ray workers
    # run in other directories, and MLflow's default ./mlruns would scatter them. A tracking
    # server (http://...) decides itself: mlflow-artifacts:/ when it proxies artifacts (to
    # its --artifacts-destination, e.g. S3, with its own credentials), else its
    # --default-artifact-root, which clients then write to directly.
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def _params(d: dict[str, Any]) -> list[Param]:
    """One MLflow param per setting; a plugin's own settings (the `params` dict) as params.<name>."""
    flat = {k: v for k, v in d.items() if not isinstance(v, dict)}
    flat.update({f"{k}.{kk}": vv for k, v in d.items() if isinstance(v, dict) for kk, vv in v.items()})
    return [Param(k, str(v)) for k, v in sorted(flat.items())]


def start_sweep_run(
    client: MlflowClient,
    experiment_id: str,
    sweep_id: str,
    spec_dump: dict,
    spec_hash: str,
    spec_text: str | None,
    description: str | None,
    metric: str,
    mode: str,
    storage: str | None = None,
) -> str:
    tags = {
        TAG_KIND: "sweep",
        TAG_SWEEP: sweep_id,
        TAG_SPEC_HASH: spec_hash,
        "mlflow.runName": sweep_id,
        "ganops.metric": metric,
        "ganops.mode": mode,
    }
    if storage:
        tags[TAG_STORAGE] = storage
    if description:
        tags["mlflow.note.content"] = description
    if sha := git_commit():
        tags["ganops.git_commit"] = sha
    run = client.create_run(experiment_id, tags=tags, run_name=sweep_id)
    rid = run.info.run_id
    flat = {f"trainer.{k}": v for k, v in spec_dump["trainer"].items()}
    flat.update(
        {
            f"search.{k}": json.dumps({dk: dv for dk, dv in v.items() if dv is not None})
            for k, v in spec_dump["search"].items()
        }
    )
    flat.update({f"sweep.{k}": v for k, v in spec_dump["sweep"].items()})
    flat.update({f"resources.{k}": v for k, v in spec_dump["resources"].items()})
    client.log_batch(rid, params=_params(flat))
    if spec_text is not None:
        client.log_text(rid, spec_text, "spec/spec.yaml")
    client.log_dict(rid, spec_dump, "spec/resolved.json")
    return rid


def trial_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    sweep_id: str,
    trial_id: str,
    trial_name: str,
    spec_hash: str,
    trainer_cfg: dict,
    sampled: dict,
    reopen_check: Callable[[Any], None] | None = None,
) -> str:
    """The trial's child run: found again by its trial id when Ray restarts the trial (after
    `reopen_check(run)`, which may raise to refuse it), else created. A store that is away or
    busy (SQLite's lock, a server's exhausted pool) is asked again for up to
    `GANOPS_TRACKING_WAIT_S` (300 s) before the trial fails: finding first makes a retry after
    a lost answer find the run it created."""
    from trainers.spool import patiently

    def attempt() -> str:
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_SWEEP}` = '{sweep_id}'",
            max_results=1,
        )
        if found:
            rid = found[0].info.run_id
            if reopen_check is not None:
                reopen_check(found[0])
            # It ended with an error before (e.g. storage lost, a crash); it goes on now. The
            # error's traceback stays among its artifacts (error/traceback.txt).
            for tag in (TAG_STOP, TAG_ERROR):
                if tag in found[0].data.tags:
                    client.delete_tag(rid, tag)
            client.update_run(rid, status="RUNNING")
            # A first attempt may have created the run and then lost its params to a busy store.
            have = found[0].data.params
            missing = [p for p in _params(trainer_cfg) if p.key not in have]
            if missing:
                client.log_batch(rid, params=missing)
            return rid
        tags = {
            TAG_KIND: "trial",
            TAG_PARENT: parent_run_id,
            TAG_SWEEP: sweep_id,
            TAG_TRIAL: trial_id,
            TAG_SPEC_HASH: spec_hash,
            "ganops.sampled": json.dumps(sampled, sort_keys=True),
        }
        run = client.create_run(experiment_id, tags=tags, run_name=trial_name)
        client.log_batch(run.info.run_id, params=_params(trainer_cfg))
        return run.info.run_id

    return patiently(attempt, f"for trial {trial_id}'s run")


def find_trial_run(client: MlflowClient, trial_id: str, experiment_ids: list[str] | None = None) -> str | None:
    ids = experiment_ids or [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, filter_string=f"tags.`{TAG_TRIAL}` = '{trial_id}'", max_results=1)
    return found[0].info.run_id if found else None


def record_error(client: MlflowClient, run_id: str, error: BaseException) -> None:
    """A failed trial's error: the last line of the root cause as tag `ganops.error`, the full
    text (Ray's worker traceback included) as artifact error/traceback.txt."""
    import traceback

    text = "".join(traceback.format_exception(error))
    last = next((ln.strip() for ln in reversed(str(error).strip().splitlines()) if ln.strip()), type(error).__name__)
    client.set_tag(run_id, TAG_ERROR, last[:5000])
    client.log_text(run_id, text, "error/traceback.txt")


def end_run(client: MlflowClient, run_id: str, status: str, stop_reason: str | None = None) -> None:
    """Close a run as FINISHED / KILLED / FAILED, with the reason when it did not finish."""
    tags = [RunTag(TAG_STOP, stop_reason)] if stop_reason else []
    if tags:
        client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=status)


def close_open_trials(
    client: MlflowClient, experiment_id: str, parent_run_id: str, status: str, stop_reason: str
) -> list[str]:
    """Close every trial run of the sweep still RUNNING (their drivers were stopped before they
    could close them: SIGTERM, Ctrl-C) with `status` and `stop_reason`; their run ids.
    `ganops resume` reopens them (`trial_run`)."""
    open_runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=10_000,
    )
    for run in open_runs:
        end_run(client, run.info.run_id, status, stop_reason)
    return [r.info.run_id for r in open_runs]


def find_sweep_run(client: MlflowClient, sweep: str):
    """A sweep's parent run, by sweep id (as the leaderboard prints it) or by MLflow run id."""
    from mlflow.exceptions import MlflowException

    ids = [e.experiment_id for e in client.search_experiments()]
    found = (
        client.search_runs(
            ids, filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_KIND}` = 'sweep'", max_results=1
        )
        if ids
        else []
    )
    if found:
        return found[0]
    try:
        run = client.get_run(sweep)
    except MlflowException:
        return None
    return run if run.data.tags.get(TAG_KIND) == "sweep" else None


def _children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'", max_results=10_000
    )


def trial_runs(client: MlflowClient, parent) -> list:
    return _children(client, parent.info.experiment_id, parent.info.run_id)


def trial_runs_by_id(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict:
    """Trial id -> MLflow run for a whole sweep in one search (one search per trial took 12 s
    for 200 trials against a tracking server)."""
    return {
        r.data.tags[TAG_TRIAL]: r for r in _children(client, experiment_id, parent_run_id) if TAG_TRIAL in r.data.tags
    }


def trial_run_ids(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    return {tid: r.info.run_id for tid, r in trial_runs_by_id(client, experiment_id, parent_run_id).items()}
