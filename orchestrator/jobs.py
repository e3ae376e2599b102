"""Sweeps on a Ray cluster through the Ray Jobs API: submit, status, wait, logs, cancel.

The job runs `ganops sweep` on the cluster, with the project's code and the resolved spec
shipped in its runtime environment, and ganops' requirements pinned to this client's versions
where the cluster lacks them: before a new job starts, a probe job (a few seconds) asks the
cluster's Python which pins it does not satisfy; those come as the job's pip runtime env, and
a cluster that has them all installs nothing. Its submission id comes from the spec (name + hash), so
submitting the same spec again finds the job that is running or done instead of starting a
second one; if that job died, the new submission continues its sweep (`--resume`: finished
trials stay, unfinished ones go on from their checkpoints).

    handle = submit(load_spec("search_spaces/dcgan.yaml"), "http://head:8265")
    outcome = wait(handle.job_id, handle.address)
    print(outcome.status, outcome.result.best.metrics if outcome.result else None)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from infra import packaging

# not orchestrator.sweep: that imports ray (1-2 s) for `ganops job status`
from orchestrator.results import (
    SweepResult,
    TrialSummary,
)

if TYPE_CHECKING:  # annotations only: `ganops job status` need not build the spec's models
    from search_spaces.spec import SweepSpec

PACKAGES = ("orchestrator", "trainers", "search_spaces", "infra")  # the code a job needs
DEFAULT_CLUSTER_HOME = "~/ganops_runs"  # MLflow store and Ray storage on the cluster, kept across jobs
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 120  # how long a freshly started cluster may take before it accepts jobs
PROBE_WAIT_S = 300  # the probe job: seconds on a warm cluster, a worker start on a cold one
PROBE_PREFIX = "ganops-probe-"  # probe job ids: never a sweep's id nor `<sweep id>-resume-N`
# Ray's default adds --no-cache-dir; without it pip's cache on the node serves later installs.
# --no-compile: Python compiles a module when it is first imported; compiling every module of
# every installed package up front (Ray, pyarrow, scipy, ...) was half of the install's time
# (pip 85 s -> 38 s for ganops' pins in tests/integration/test_bare_cluster_integration.py).
PIP_OPTIONS = ["--disable-pip-version-check", "--no-compile"]
TOKEN_HELP = (
    "set RAY_AUTH_TOKEN to the cluster's token, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in "
    "~/.ray/auth_token (looked up in that order, as `ray job submit` does); `ray get-auth-token` on the head prints it"
)


class JobError(Exception):
    """The cluster cannot be reached, or there is no such job."""


@dataclass
class SweepHandle:
    job_id: str  # the Ray Jobs submission id
    address: str
    sweep_id: str  # the sweep's id in MLflow (the same for every job of one spec)
    existing: bool = False  # True: an earlier submission of the same spec was found and returned
    resumes: str | None = None  # the dead job this one continues
    # What the job brings (new jobs only): {"install": "auto", "installed": pins the cluster lacked,
    # "already_there": bool, "cluster_python": "3.11", "client_python": "3.11", "probe_job": id}
    # ({"install": "never", "installed": []} without a probe); None for a job found running or done.
    runtime: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class JobOutcome:
    job_id: str
    status: str  # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED
    message: str | None
    result: SweepResult | None  # the sweep's result, once the job has printed it

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "message": self.message,
            "result": self.result.to_dict() if self.result else None,
        }


def sweep_id_for(spec: SweepSpec) -> str:
    """One id per spec content: the spec's name (letters, digits, `_.-`) and the first 12 hex digits of its hash."""
    return f"ganops-{spec.name}-{spec.spec_hash[:12]}"


def _sweep_env() -> dict[str, str]:
    from orchestrator.sweep import SWEEP_ENV

    return SWEEP_ENV


def _reachable(address: str) -> None:
    """A JobError at once when nothing listens at `address` (before Ray's 1-2 s import)."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"http://{address}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8265)
    except ValueError:
        return  # a malformed port: Ray's client says what is wrong
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return  # ray://, auto and the like: Ray's client resolves them
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as e:
        raise JobError(
            f"cannot reach the Ray Jobs API at {address}: {e.strerror or e}; start a cluster (`ray start --head`) "
            "and pass its dashboard address, e.g. http://127.0.0.1:8265"
        ) from None


def _client(address: str):
    _reachable(address)
    # Ray >= 2.5x clusters require a token by default (~/.ray/auth_token, or RAY_AUTH_TOKEN);
    # like `ray job submit`, send it when there is one. The token never leaves the headers.
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        return JobSubmissionClient(address)
    except AuthenticationError as e:
        raise JobError(_token_message(address, e)) from None
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise JobError(
            f"cannot reach the Ray Jobs API at {address}: {e}; start a cluster (`ray start --head`) and pass its "
            "dashboard address, e.g. http://127.0.0.1:8265"
        ) from None


def _token_message(address: str, e: Exception) -> str:
    """What went wrong with the token (never the token itself), where it was looked for, what to do."""
    text = str(getattr(e, "message", e))
    if "RAY_AUTH_TOKEN_PATH" in text and "cannot be opened" in text:
        what = (
            "RAY_AUTH_TOKEN_PATH names a file that cannot be read or is empty "
            f"({os.environ.get('RAY_AUTH_TOKEN_PATH')})"
        )
    elif "Forbidden" in text or "invalid or incorrect" in text:
        what = f"the cluster at {address} refused the token this client sent (from {_token_source()})"
    else:
        what = f"the cluster at {address} requires a token and this client has none"
    return f"{what}; {TOKEN_HELP}"


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    return str(Path.home() / ".ray" / "auth_token")


def _jobs_of(client, sweep_id: str) -> list:
    """The jobs of one sweep (the first submission and its resumptions), oldest first."""
    jobs = [
        j
        for j in client.list_jobs()
        if j.submission_id == sweep_id or (j.submission_id or "").startswith(f"{sweep_id}-resume-")
    ]
    return sorted(jobs, key=lambda j: j.start_time or 0)


def _stage(spec: SweepSpec, into: Path) -> Path:
    """The job's working directory: the project's packages and the resolved spec."""
    root = Path(__file__).resolve().parents[1]
    for pkg in PACKAGES:
        if (root / pkg).is_dir():
            shutil.copytree(root / pkg, into / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (into / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return into


def submit(
    spec: SweepSpec,
    address: str,
    *,
    home: str = DEFAULT_CLUSTER_HOME,
    env: dict[str, str] | None = None,
    install: str = "auto",
) -> SweepHandle:
    """Start the sweep of `spec` as a Ray job, or find the one already started.

    `home` is GANOPS_HOME on the cluster (MLflow store and Ray storage, unless the spec names
    its own): it must outlive one job, or a resumption has nothing to continue. `env` adds
    environment variables for the job (never put credentials there: they would be visible
    in the Ray dashboard; give the cluster its own, e.g. an instance profile). `install`:
    "auto" probes the cluster and has the job pip-install the pins it lacks (`handle.runtime`
    says which); "never" ships the code only (a cluster that has ganops' requirements)."""
    if install not in ("auto", "never"):
        raise JobError(f"install must be auto or never, not {install!r}")
    client = _client(address)
    sweep_id = sweep_id_for(spec)
    earlier = _jobs_of(client, sweep_id)
    if earlier and earlier[-1].status.value in ("PENDING", "RUNNING", "SUCCEEDED"):
        return SweepHandle(earlier[-1].submission_id, address, sweep_id, existing=True)
    job_id = f"{sweep_id}-resume-{len(earlier)}" if earlier else sweep_id
    pip, runtime = (
        _requirements(client, address, extras_for(spec))
        if install == "auto"
        else (None, {"install": "never", "installed": []})
    )
    with tempfile.TemporaryDirectory(prefix="ganops-job-") as tmp:
        runtime_env = {
            "working_dir": str(_stage(spec, Path(tmp))),
            "env_vars": {**_sweep_env(), "GANOPS_HOME": home, **(env or {})},
            **({"pip": pip} if pip else {}),
        }
        _submit_job(
            client,
            address,
            dict(
                # --resume: a resubmission continues the dead job's sweep (same --sweep-id).
                entrypoint=f"python -m orchestrator.cli sweep spec.yaml --sweep-id {sweep_id} --resume --json",
                submission_id=job_id,
                runtime_env=runtime_env,
                metadata={"ganops.sweep_id": sweep_id, "ganops.spec": spec.name},
            ),
        )
    return SweepHandle(
        job_id, address, sweep_id, resumes=earlier[-1].submission_id if earlier else None, runtime=runtime
    )


def extras_for(spec: SweepSpec) -> list[str]:
    """ganops' extras the sweep of `spec` needs on the cluster."""
    extras = []
    if spec.sweep.search_alg == "optuna":
        extras.append("optuna")
    if (spec.storage or "").startswith("s3://"):
        extras.append("s3")
    return extras


def _requirements(client, address: str, extras: list[str]) -> tuple[dict | None, dict[str, Any]]:
    """The job's pip runtime env (None: the cluster has everything) and what it records about it."""
    pins = packaging.pins(extras)
    probe_job = _start_probe(client, address, pins)
    info = _probe_answer(client, address, probe_job)
    if (msg := packaging.wrong_ray(pins, info.get("ray"))) is not None:
        raise JobError(f"{address}: {msg}")
    missing = list(info.get("unsatisfied") or [])
    runtime = {
        "install": "auto",
        "installed": missing,
        "already_there": not missing,
        "cluster_python": info.get("python"),
        "client_python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "probe_job": probe_job,
    }
    # All the pins, not only the missing ones: pip then keeps what is there at the client's
    # versions too while it resolves the rest (those already satisfied cost nothing).
    return ({"packages": pins, "pip_install_options": PIP_OPTIONS} if missing else None), runtime


def _start_probe(client, address: str, pins: list[str]) -> str:
    """Submit infra.packaging's probe (alone in its working dir) as a job: which pins the cluster's Python lacks."""
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    job_id = f"{PROBE_PREFIX}{key}-{time.time_ns() // 1_000_000}"  # unix time in ms
    with tempfile.TemporaryDirectory(prefix="ganops-probe-") as tmp:
        (Path(tmp) / "infra").mkdir()
        (Path(tmp) / "infra" / "__init__.py").write_text("")
        shutil.copy(Path(packaging.__file__), Path(tmp) / "infra" / "packaging.py")
        _submit_job(
            client,
            address,
            dict(
                entrypoint=packaging.probe_command(pins),
                submission_id=job_id,
                runtime_env={"working_dir": tmp},
                metadata={"ganops.probe": "1"},
            ),
        )
    return job_id


def _probe_answer(client, address: str, job_id: str) -> dict:
    """Wait for the probe job and read its answer; then delete the job (a failed one stays, to read)."""
    deadline = time.monotonic() + PROBE_WAIT_S
    while (state := client.get_job_status(job_id).value) not in TERMINAL:
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise JobError(
                f"the probe job {job_id} on {address} did not end within {PROBE_WAIT_S} s ({state}); "
                f"`ray job logs {job_id} --address {address}` may say why; `--install never` skips the probe"
            )
        time.sleep(0.5)
    text = client.get_job_logs(job_id)
    info = packaging.parse_probe(text) if state == "SUCCEEDED" else None
    if info is None:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise JobError(
            f"the probe job {job_id} on {address} (which of ganops' requirements the cluster lacks) ended {state} "
            f"without an answer; its log ends:\n{tail}\n(`--install never` skips the probe)"
        )
    try:
        client.delete_job(job_id)  # its answer is in hand; keep the cluster's job list to sweeps
    except Exception:  # noqa: BLE001 - a probe left behind is harmless
        pass
    return info


def _submit_job(client, address: str, job: dict) -> None:
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            client.submit_job(**job)
            return
        except RuntimeError as e:
            # A cluster that has just started answers "No available agent to submit
            # job, please try again later" until its head's agent has registered.
            if "try again later" not in str(e) or time.monotonic() > deadline:
                raise JobError(f"the cluster at {address} refused the job: {e}") from None
            time.sleep(2)


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


def wait(
    job_id: str, address: str, *, timeout_s: float | None = None, poll_s: float = 2.0, on_status=None
) -> JobOutcome:
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


def follow_logs(job_id: str, address: str, *, poll_s: float = 1.0, sleep=time.sleep) -> Iterator[str]:
    """The job's output as it comes (what `logs` returns, then each new part), until the job ends."""
    client = _client(address)
    seen = 0
    while True:
        try:
            state = client.get_job_info(job_id).status.value
            text = client.get_job_logs(job_id)
        except RuntimeError as e:
            raise JobError(
                f"no job {job_id!r} on {address} ({e}); `ray job list --address {address}` lists them"
            ) from None
        if len(text) > seen:
            yield text[seen:]
            seen = len(text)
        if state in TERMINAL:  # its logs were read after it ended: nothing more comes
            return
        sleep(poll_s)


def logs(job_id: str, address: str) -> str:
    """Everything the job printed so far (the sweep's progress and leaderboard)."""
    try:
        return _client(address).get_job_logs(job_id)
    except RuntimeError as e:
        raise JobError(f"no job {job_id!r} on {address} ({e})") from None


def cancel(job_id: str, address: str) -> bool:
    """Stop the job (its trials end with it; a later `submit` of the same spec resumes it). False if it
    had already ended."""
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
    trials = [
        TrialSummary(**{k: v for k, v in t.items() if k in TrialSummary.__dataclass_fields__})
        for t in d.get("trials", [])
    ]
    return SweepResult(**{k: v for k, v in d.items() if k in fields and k != "trials"}, trials=trials)
