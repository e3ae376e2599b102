"""Sweeps on a Ray cluster through the Ray Jobs API: submit, status, wait, logs, cancel.

The job runs `ganops sweep` on the cluster, with the project's code and the resolved spec
shipped in its runtime environment. Its submission id comes from the spec (name + hash), so
submitting the same spec again finds the job that is running or done instead of starting a
second one; if that job died, the new submission continues its sweep (`--resume`: finished
trials stay, unfinished ones go on from their checkpoints).

    handle = submit(load_spec("search_spaces/dcgan.yaml"), "http://head:8265")
    outcome = wait(handle.job_id, handle.address)
    print(outcome.status, outcome.result.best.metrics if outcome.result else None)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.sweep import SWEEP_ENV, SweepResult, TrialSummary
from search_spaces.spec import SweepSpec

PACKAGES = ("orchestrator", "trainers", "search_spaces", "infra")  # the code a job needs
DEFAULT_CLUSTER_HOME = "~/ganops_runs"  # MLflow store and Ray storage on the cluster, kept across jobs
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 120  # how long a freshly started cluster may take before it accepts jobs


class JobError(Exception):
    """The cluster cannot be reached, or there is no such job."""


@dataclass
class SweepHandle:
    job_id: str  # the Ray Jobs submission id
    address: str
    sweep_id: str  # the sweep's id in MLflow (the same for every job of one spec)
    existing: bool = False  # True: an earlier submission of the same spec was found and returned
    resumes: str | None = None  # the dead job this one continues

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class JobOutcome:
    job_id: str
    status: str  # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED
    message: str | None
    result: SweepResult | None  # the sweep's result, once the job has printed it

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": self.status, "message": self.message, "result": self.result.to_dict() if self.result else None}


def sweep_id_for(spec: SweepSpec) -> str:
    """One id per spec content: the spec's name (letters, digits, `_.-`) and the first 12 hex digits of its hash."""
    return f"ganops-{spec.name}-{spec.spec_hash[:12]}"


def _client(address: str):
    # Ray >= 2.5x clusters require a token by default (~/.ray/auth_token, or RAY_AUTH_TOKEN);
    # like `ray job submit`, send it when there is one. The token never leaves the headers.
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )
    from ray.job_submission import JobSubmissionClient

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise JobError(f"cannot reach the Ray Jobs API at {address}: {e}; start a cluster (`ray start --head`) and pass its dashboard address, e.g. http://127.0.0.1:8265") from None


def _jobs_of(client, sweep_id: str) -> list:
    """The jobs of one sweep (the first submission and its resumptions), oldest first."""
    jobs = [j for j in client.list_jobs() if j.submission_id == sweep_id or (j.submission_id or "").startswith(f"{sweep_id}-resume-")]
    return sorted(jobs, key=lambda j: j.start_time or 0)


def _stage(spec: SweepSpec, into: Path) -> Path:
    """The job's working directory: the project's packages and the resolved spec."""
    root = Path(__file__).resolve().parents[1]
    for pkg in PACKAGES:
        if (root / pkg).is_dir():
            shutil.copytree(root / pkg, into / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (into / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return into


def submit(spec: SweepSpec, address: str, *, home: str = DEFAULT_CLUSTER_HOME, env: dict[str, str] | None = None) -> SweepHandle:
    """Start the sweep of `spec` as a Ray job, or find the one already started.

    `home` is GANOPS_HOME on the cluster (MLflow store and Ray storage, unless the spec names
    its own): it must outlive one job, or a resumption has nothing to continue. `env` adds
    environment variables for the job (never put credentials there: they would be visible
    in the Ray dashboard; give the cluster its own, e.g. an instance profile)."""
    client = _client(address)
    sweep_id = sweep_id_for(spec)
    earlier = _jobs_of(client, sweep_id)
    if earlier and earlier[-1].status.value in ("PENDING", "RUNNING", "SUCCEEDED"):
        return SweepHandle(earlier[-1].submission_id, address, sweep_id, existing=True)
    job_id = f"{sweep_id}-resume-{len(earlier)}" if earlier else sweep_id
    with tempfile.TemporaryDirectory(prefix="ganops-job-") as tmp:
        runtime_env = {
            "working_dir": str(_stage(spec, Path(tmp))),
            "env_vars": {**SWEEP_ENV, "GANOPS_HOME": home, **(env or {})},
        }
        job = dict(
            # --resume: a resubmission continues the dead job's sweep (same --sweep-id).
            entrypoint=f"python -m orchestrator.cli sweep spec.yaml --sweep-id {sweep_id} --resume --json",
            submission_id=job_id,
            runtime_env=runtime_env,
            metadata={"ganops.sweep_id": sweep_id, "ganops.spec": spec.name},
        )
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                client.submit_job(**job)
                break
            except RuntimeError as e:
                # A cluster that has just started answers "No available agent to submit
                # job, please try again later" until its head's agent has registered.
                if "try again later" not in str(e) or time.monotonic() > deadline:
                    raise JobError(f"the cluster at {address} refused the job: {e}") from None
                time.sleep(2)
    return SweepHandle(job_id, address, sweep_id, resumes=earlier[-1].submission_id if earlier else None)


def status(job_id: str, address: str) -> JobOutcome:
    """The job's state, and the sweep's result once it has one."""
    client = _client(address)
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as e:
        raise JobError(f"no job {job_id!r} on {address} ({e}); `ray job list --address {address}` lists them") from None
    state = info.status.value
    result = parse_result(client.get_job_logs(job_id)) if state in TERMINAL else None
    return JobOutcome(job_id, state, info.message, result)


def wait(job_id: str, address: str, *, timeout_s: float | None = None, poll_s: float = 2.0, on_status=None) -> JobOutcome:
    """Block until the job ends (or `timeout_s` passes: then the outcome is still RUNNING)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last = None
    while True:
        out = status(job_id, address)
        if on_status is not None and out.status != last:
            on_status(out.status)
        last = out.status
        if out.status in TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return out
        time.sleep(poll_s)


def logs(job_id: str, address: str) -> str:
    """Everything the job printed so far (the sweep's progress and leaderboard)."""
    try:
        return _client(address).get_job_logs(job_id)
    except RuntimeError as e:
        raise JobError(f"no job {job_id!r} on {address} ({e})") from None


def cancel(job_id: str, address: str) -> bool:
    """Stop the job (its trials end with it; a later `submit` of the same spec resumes it). False if it had already ended."""
    try:
        return _client(address).stop_job(job_id)
    except RuntimeError as e:
        raise JobError(f"no job {job_id!r} on {address} ({e})") from None


def parse_result(log_text: str) -> SweepResult | None:
    """The sweep's `--json` result: the last line of the job's output that is one."""
    # stdout and stderr share the job's log: the JSON may follow stderr text on its line.
    decoder = json.JSONDecoder()
    at = len(log_text)
    while (at := log_text.rfind('{"sweep_id"', 0, at)) >= 0:
        try:
            return result_from_dict(decoder.raw_decode(log_text, at)[0])
        except (json.JSONDecodeError, TypeError):
            continue
    return None


def result_from_dict(d: dict[str, Any]) -> SweepResult:
    fields = SweepResult.__dataclass_fields__
    trials = [TrialSummary(**{k: v for k, v in t.items() if k in TrialSummary.__dataclass_fields__}) for t in d.get("trials", [])]
    return SweepResult(**{k: v for k, v in d.items() if k in fields and k != "trials"}, trials=trials)
