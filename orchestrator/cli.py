"""`ganops` command line: parse, call the Python API, render. Tables and `--json` on stdout; chatter,
progress and errors on stderr.

Exit codes: 0 success, 1 a run failed, 2 a usage or spec error; 128 + the signal's number when a
signal stopped a sweep (143 SIGTERM, 130 SIGINT / Ctrl-C): its open runs are closed KILLED with
stop_reason `terminated` / `interrupted`, `--json` prints the trials so far with an `interrupted`
object, and `ganops resume SWEEP` continues it. Tracebacks only with GANOPS_DEBUG=1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

for _k, _v in {
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}.items():
    os.environ.setdefault(_k, _v)  # before mlflow / ray are imported: no chatter, no phoning home

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from orchestrator.cluster_cli import cluster_app  # noqa: E402
from orchestrator.format import ID_HELP, is_safe_id, redact_uri, safe_text  # noqa: E402

# Nothing heavy at module level: `ganops --help` must answer in 0.3 s, so ray, mlflow, torch and
# pandas (each 0.5-3 s to import) are imported inside the commands that use them.
app = typer.Typer(
    help="Find a GAN that trains well: Ray Tune sweeps of PyTorch GANs, tracked in MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.add_typer(cluster_app, name="cluster")
job_app = typer.Typer(help="Sweeps on a Ray cluster as Ray jobs: submit, status, logs, cancel.", no_args_is_help=True)
app.add_typer(job_app, name="job")
# Wide enough for the leaderboard when stderr / stdout is a file or a CI log rather than a terminal.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
table_out = Console(width=None if sys.stdout.isatty() else 160)  # tables: on stdout, so they pipe


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"ganops {version('ganops')}")
        except PackageNotFoundError:
            typer.echo("ganops (not installed: run `pip install -e .` in the checkout)")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print ganops' version and exit.")
    ] = False,
) -> None:
    """Find a GAN that trains well: Ray Tune sweeps of PyTorch GANs, tracked in MLflow.

    Start: ganops validate search_spaces/dcgan.yaml; ganops sweep search_spaces/dcgan.yaml; ganops sweeps.
    """


SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a spec value, e.g. --set trainer.steps=200 (repeatable).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")]
AddressOpt = Annotated[
    Optional[str],
    typer.Option(help="Existing Ray cluster address (e.g. ray://head:10001 or auto); default: local Ray."),
]
TrackingOpt = Annotated[
    Optional[str],
    typer.Option(
        "--tracking-uri", help="MLflow tracking URI; default: the local store under ./ganops_runs (or $GANOPS_HOME)."
    ),
]
RequireOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--require", help="Quality gate on the best trial, e.g. 'fid<30' (repeatable): exit 0 only if all hold."
    ),
]


def _debug() -> bool:
    return os.environ.get("GANOPS_DEBUG") == "1"


def _setup_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING, handlers=[RichHandler(console=err, show_path=False)], format="%(message)s", force=True
    )
    for name in ("orchestrator", "trainers", "search_spaces", "infra"):
        logging.getLogger(name).setLevel(logging.DEBUG if _debug() else logging.INFO)


def _load(file: Path, overrides: list[str] | None):
    from search_spaces.loader import check_spec

    check = check_spec(file, overrides or [], packages=False)  # a cluster job brings its own packages
    if check.errors:
        _print_issues(check)
        err.print("Nothing was launched. Fix the spec and run `ganops validate FILE` to check it.", style="dim")
        raise typer.Exit(2)
    _print_issues(check)
    from search_spaces.loader import read_yaml_text

    return check.spec, read_yaml_text(file)  # bounded: at most MAX_SPEC_BYTES, like the check


def _print_issues(check) -> None:
    """Every error, then every warning, of a `SpecCheck`, one per line on stderr."""
    from search_spaces.loader import render_issues

    for kind, issues, style in (("spec error", check.errors, "bold red"), ("warning", check.warnings, "yellow")):
        if issues:
            n = len(issues)
            err.print(f"[{style}]{kind}[/] ({n} issue{'s' if n != 1 else ''}):", highlight=False)
            err.print(render_issues(check.source, issues), highlight=False, markup=False)


def _fail(msg: str, code: int = 1) -> None:
    # A message may quote `ray[default]`, a log or an MLflow tag: shown as written, never as markup.
    err.print(f"[bold red]error[/] {safe_text(msg, keep_newlines=True)}", highlight=False)
    raise typer.Exit(code)


def _check_id(ident: str, what: str) -> None:
    """Exit 2 unless `ident` looks like a sweep, run or trial id: ids reach MLflow's filter
    strings (a quote made a traceback there) and storage paths (`../..` left the storage root)."""
    if not is_safe_id(ident):
        _fail(f"{what} {ident!r} is not an id ganops writes: {ID_HELP}", 2)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Spec YAML file.")], set_: SetOpt = None, json_: JsonOpt = False
) -> None:
    """Check a spec without running it: every problem in one run (each with file:line, field
    path and what to do), warnings, and the optional packages it needs. Exit 2 on any error.

    Example: ganops validate search_spaces/dcgan.yaml --set sweep.num_samples=4
    """
    from search_spaces.loader import check_spec

    # No translation to Ray Tune here: the spec's schema already checks every distribution, and
    # importing ray.tune (1-4 s) would make validate answer in seconds instead of 0.5 s.
    check = check_spec(file, set_ or [])
    spec = check.spec
    if json_:

        def as_json(issues):
            return [{"path": i.path, "line": i.line, "flag": i.flag, "message": i.message} for i in issues]

        out = {"valid": spec is not None, "errors": as_json(check.errors), "warnings": as_json(check.warnings)}
        if spec is not None:
            out.update(
                name=spec.name, spec_hash=spec.spec_hash, trials=spec.trial_count, spec=spec.model_dump(mode="json")
            )
        typer.echo(json.dumps(out))
    _print_issues(check)
    if spec is None:
        raise typer.Exit(2)
    if json_:
        return
    err.print(
        f"[green]valid[/] {safe_text(file)}: sweep [bold]{safe_text(spec.name)}[/] ({safe_text(spec.trainer.model)} on "
        f"{safe_text(spec.trainer.data)}), "
        f"{spec.trial_count} trials over {', '.join(spec.search) or 'no searched settings'}, "
        f"ranked by {spec.metric} ({spec.mode}); spec hash {spec.spec_hash}",
        highlight=False,
    )
    err.print(f"Run it: ganops sweep {file}", style="dim")


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="Spec YAML file.")],
    set_: SetOpt = None,
    address: AddressOpt = None,
    json_: JsonOpt = False,
    require: RequireOpt = None,
    sweep_id: Annotated[
        Optional[str],
        typer.Option(
            "--sweep-id", help="Name the sweep (default: spec name + time); `ganops submit` derives it from the spec."
        ),
    ] = None,
    resume_: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="With --sweep-id: continue that sweep if it exists (as `ganops resume` does), else start it.",
        ),
    ] = False,
) -> None:
    """Run a sweep: every trial a GAN trained by Ray Train workers, tracked in MLflow.

    Example: ganops sweep search_spaces/dcgan.yaml --set sweep.num_samples=4 --require 'fid<80'
    """
    if sweep_id is not None:
        _check_id(sweep_id, "--sweep-id")
    _setup_logging()
    spec, text = _load(file, set_)
    from orchestrator import gate
    from orchestrator.sweep import run_sweep  # not via orchestrator.api, which imports torch: the sweep starts sooner

    try:
        conditions = gate.parse(require or [], spec)
    except gate.GateError as e:
        _fail(f"{e}. Nothing was launched.", 2)
    if resume_ and not sweep_id:
        _fail("--resume needs --sweep-id: the sweep to continue", 2)
    result = _running(
        lambda: run_sweep(spec, spec_text=text, address=address, console=err, sweep_id=sweep_id, resume=resume_),
        launched=resume_,
    )
    _finish(result, conditions, json_)


@app.command()
def resume(
    sweep_id: Annotated[
        str,
        typer.Argument(metavar="SWEEP", help="Sweep id (as the leaderboard prints it) or the sweep's MLflow run id."),
    ],
    tracking_uri: TrackingOpt = None,
    address: AddressOpt = None,
    json_: JsonOpt = False,
    require: RequireOpt = None,
    storage: Annotated[
        Optional[str],
        typer.Option(
            "--storage",
            help="The sweep's Ray storage, when the spec named one (a directory or s3://bucket/prefix); default "
            "GANOPS_HOME/ray. Never taken from MLflow.",
        ),
    ] = None,
) -> None:
    """Continue a sweep whose `ganops sweep` process died: finished trials stay, unfinished ones go on
    from their checkpoints.

    Example: ganops resume dcgan-mnist-20261123-120402
    """
    _check_id(sweep_id, "sweep")
    _setup_logging()
    from orchestrator import gate
    from orchestrator.sweep import resume_sweep
    from orchestrator.tracking import resolve_tracking_uri

    try:
        conditions = gate.parse(require or [], None)
    except gate.GateError as e:
        _fail(f"{e}. Nothing was resumed.", 2)
    result = _running(
        lambda: resume_sweep(
            sweep_id, tracking_uri=resolve_tracking_uri(tracking_uri), address=address, console=err, storage=storage
        ),
        launched=True,
    )
    _finish(result, conditions, json_)


JobAddressOpt = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="RAY_API_SERVER_ADDRESS",
        help="The Ray cluster's Jobs API (its dashboard), e.g. http://127.0.0.1:8265; or set RAY_API_SERVER_ADDRESS.",
    ),
]
JobArg = Annotated[str, typer.Argument(metavar="JOB", help="The job id `ganops job submit` printed.")]


@job_app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="Spec YAML file.")],
    address: JobAddressOpt,
    set_: SetOpt = None,
    wait_: Annotated[
        bool,
        typer.Option(
            "--wait", help="Wait for the sweep to end; then print its leaderboard (or --json) and apply --require."
        ),
    ] = False,
    json_: JsonOpt = False,
    require: RequireOpt = None,
    home: Annotated[
        str,
        typer.Option(
            help="GANOPS_HOME on the cluster: its MLflow store and Ray storage (unless the spec names others); must "
            "outlive one job."
        ),
    ] = "~/ganops_runs",
    install: Annotated[
        str,
        typer.Option(
            help="auto: a probe job finds which of ganops' requirements (pinned to this client's versions) the "
            "cluster lacks, and the job pip-installs those; never: ship the code only."
        ),
    ] = "auto",
) -> None:
    """Run a sweep on a Ray cluster as a Ray job. Submitting the same spec again finds the same job
    (or resumes it if it died).

    The job brings ganops' requirements the cluster lacks (the cluster keeps its own torch); a
    cluster that has them all installs nothing. A cluster with token auth takes the token from
    RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.

    Example: ganops job submit search_spaces/dcgan.yaml --address http://127.0.0.1:8265 --wait --require 'fid<80'
    """
    _setup_logging()
    spec, _ = _load(file, set_)
    from orchestrator import gate, jobs

    try:
        conditions = gate.parse(require or [], spec)
    except gate.GateError as e:
        _fail(f"{e}. Nothing was launched.", 2)
    try:
        handle = jobs.submit(spec, address, home=home, install=install)
    except jobs.JobError as e:
        _fail(str(e), 2)
    _say_runtime(handle.runtime)
    what = (
        "found running job" if handle.existing else (f"resumed {handle.resumes} as" if handle.resumes else "submitted")
    )
    shown = redact_uri(address)  # the address as printed: a token in it stays out of logs
    err.print(f"{what} [bold]{handle.job_id}[/] on {safe_text(shown)} (sweep {handle.sweep_id})", highlight=False)
    if not wait_:
        if json_:
            typer.echo(json.dumps(handle.to_dict()))
        err.print(
            f"Next: ganops job status {handle.job_id} --address {safe_text(shown)}   |   ganops job logs "
            f"{handle.job_id} --address {safe_text(shown)} --follow",
            style="dim",
            highlight=False,
        )
        return
    outcome = _wait_job(handle.job_id, address)
    if outcome.result is None:
        if json_:
            typer.echo(json.dumps({"job": handle.to_dict(), **outcome.to_dict()}))
        _fail(
            f"job {handle.job_id} ended {outcome.status} without a sweep result ({outcome.message}); see `ganops job "
            f"logs {handle.job_id} --address {shown}`",
            1,
        )
    _finish(outcome.result, conditions, json_, extra={"job": {**handle.to_dict(), "status": outcome.status}})


def _say_runtime(runtime: dict | None) -> None:
    """One line on what the new job installs on the cluster (and a Python mismatch, if any)."""
    if not runtime or runtime.get("install") != "auto":
        return
    if runtime["installed"]:
        err.print(
            f"cluster lacks {len(runtime['installed'])} packages: job installs {', '.join(runtime['installed'])}",
            highlight=False,
            markup=False,
        )
    else:
        err.print("cluster already has ganops' requirements: nothing installed", highlight=False)
    if runtime.get("cluster_python") != runtime.get("client_python"):
        err.print(
            f"[yellow]warning:[/] the cluster runs Python {runtime.get('cluster_python')}, this client "
            f"{runtime.get('client_python')}: "
            "the pins are this client's versions; one without a build for the cluster's Python fails the job's install",
            highlight=False,
        )


def _wait_job(job_id: str, address: str):
    from orchestrator import jobs

    try:
        return jobs.wait(
            job_id, address, on_status=lambda s: err.print(f"job {safe_text(job_id)}: {safe_text(s)}", highlight=False)
        )
    except jobs.JobError as e:
        _fail(str(e), 2)
    except KeyboardInterrupt:
        address = redact_uri(address)
        _fail(
            f"stopped waiting; the job goes on (`ganops job status {job_id} --address {address}`, `ganops job cancel "
            f"{job_id} --address {address}`)",
            1,
        )


@job_app.command()
def status(
    job: JobArg,
    address: JobAddressOpt,
    json_: JsonOpt = False,
    wait_: Annotated[bool, typer.Option("--wait", help="Wait for the job to end.")] = False,
) -> None:
    """State of a submitted sweep (and its best trial once it has ended). Exit 1 if the job failed.

    Example: ganops job status ganops-dcgan-mnist-3f2a1b4c5d6e --address http://127.0.0.1:8265
    """
    from orchestrator import jobs

    try:
        out = _wait_job(job, address) if wait_ else jobs.status(job, address)
    except jobs.JobError as e:
        _fail(str(e), 2)
    if json_:
        typer.echo(json.dumps(out.to_dict(), default=str))
    else:
        err.print(
            f"job {safe_text(out.job_id)}: [bold]{safe_text(out.status)}[/]"
            + (f" ({safe_text(out.message)})" if out.message else ""),
            highlight=False,
        )
        if out.result is not None:
            _print_leaderboard(out.result)
    if out.status in ("FAILED", "STOPPED"):
        raise typer.Exit(1)


@job_app.command()
def logs(
    job: JobArg,
    address: JobAddressOpt,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing what the job prints until it ends.")
    ] = False,
) -> None:
    """Everything a submitted sweep has printed so far (with --follow: and what it prints next, until it ends).

    Example: ganops job logs ganops-dcgan-mnist-3f2a1b4c5d6e --address http://127.0.0.1:8265 --follow
    """
    from orchestrator import jobs

    try:
        if not follow:
            typer.echo(jobs.logs(job, address), nl=False)
            return
        for chunk in jobs.follow_logs(job, address):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except jobs.JobError as e:
        _fail(str(e), 2)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None  # stop following; the job goes on


@job_app.command()
def cancel(job: JobArg, address: JobAddressOpt) -> None:
    """Stop a submitted sweep. Submitting the same spec again continues it from its checkpoints.

    Example: ganops job cancel ganops-dcgan-mnist-3f2a1b4c5d6e --address http://127.0.0.1:8265
    """
    from orchestrator import jobs

    try:
        stopped = jobs.cancel(job, address)
    except jobs.JobError as e:
        _fail(str(e), 2)
    err.print(f"job {job}: {'stopping' if stopped else 'had already ended'}", highlight=False)


# Today's top-level names stay, hidden, so scripts and CI written against them keep working.
for _verb, _command in (("submit", submit), ("status", status), ("logs", logs), ("cancel", cancel)):
    app.command(_verb, hidden=True)(_command)


def _running(start, launched: bool):
    """Run a sweep (new or resumed) in this process: errors as messages, Ray shut down after.
    A sweep a signal stopped comes back as its SweepInterrupted, for `_finish` to report."""
    from orchestrator.sweep import StorageLost, SweepError, SweepInterrupted

    try:
        # stdout is for --json alone: Ray's own late messages (e.g. its "(raylet) WARNING ..."
        # at shutdown) go to stderr, and Ray is shut down before the JSON is printed.
        with contextlib.redirect_stdout(sys.stderr):
            try:
                return start()
            finally:
                _shutdown_ray()
    except SweepError as e:
        _fail(str(e) if launched else f"{e}. Nothing was launched.", 2)
    except StorageLost as e:
        _fail(str(e), 1)
    except SweepInterrupted as e:
        err.print(f"[yellow]{safe_text(e, keep_newlines=True)}[/]", highlight=False)
        return e
    except KeyboardInterrupt:  # before the sweep had runs to close (or after it closed them)
        _fail("interrupted; finished trials are in MLflow (`ganops ui`); continue with `ganops resume SWEEP`", 130)
    except Exception as e:  # noqa: BLE001 - shown to the person, traceback with GANOPS_DEBUG=1
        if _debug():
            raise
        _fail(f"the sweep could not run: {e}", 1)


def _finish(result, conditions, json_: bool, extra: dict | None = None) -> None:
    """Leaderboard (or JSON) and the quality gate's verdict; exit 1 if the gate fails or no trial ran.
    A stopped sweep (SweepInterrupted): the trials so far, no gate, exit 128 + the signal."""
    from orchestrator import gate
    from orchestrator.sweep import SweepInterrupted

    if isinstance(result, SweepInterrupted):
        _finish_interrupted(result, json_)
    verdict = gate.evaluate(conditions, result) if conditions else None
    if json_:
        typer.echo(
            json.dumps(
                {
                    **result.to_dict(),
                    "mlflow_urls": result.mlflow_urls(),
                    **({"gate": verdict} if verdict else {}),
                    **(extra or {}),
                },
                default=str,
            )
        )
    else:
        _print_leaderboard(result)
        if verdict:
            for c in verdict["conditions"]:
                err.print(
                    f"  {'[green]met[/]' if c['met'] else '[red]not met[/]'}  {c['require']}  (best trial, "
                    f"step {verdict['best_step']}: {c['value']})",
                    highlight=False,
                )
            err.print("[bold green]quality gate passed[/]" if verdict["passed"] else "[bold red]quality gate failed[/]")
    if not any(t.status in ("done", "stopped") for t in result.trials) or (verdict and not verdict["passed"]):
        raise typer.Exit(1)


def _finish_interrupted(stopped, json_: bool) -> None:
    """What a signal-stopped sweep had: its trials so far (unfinished ones included) and how
    to continue; exit 128 + the signal's number."""
    import signal

    info = {
        "reason": stopped.reason,
        "signal": signal.Signals(stopped.signum).name,
        "exit_code": stopped.exit_code,
        "resume": f"ganops resume {stopped.sweep_id}",
    }
    result = stopped.result
    if json_:
        out = (
            {**result.to_dict(), "mlflow_urls": result.mlflow_urls()}
            if result
            else {"sweep_id": stopped.sweep_id, "parent_run_id": stopped.parent_run_id, "trials": [], "best": None}
        )
        typer.echo(json.dumps({**out, "interrupted": info}, default=str))
    elif result is not None:
        _print_leaderboard(result)
    raise typer.Exit(stopped.exit_code)


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _print_leaderboard(result) -> None:
    from orchestrator.progress import fmt
    from trainers.metric_names import side_columns

    searched = list(result.trials[0].config) if result.trials else []
    extra = list(side_columns(result.metric))
    # Every cell is rich markup, and trial errors, stop reasons and (from a job) the whole result are foreign text.
    table = Table(
        title=safe_text(f"{result.sweep_id}: best {result.metric} ({result.mode}) first"), title_justify="left"
    )
    # The metric and its side columns are read at the eval each trial is ranked by (its best,
    # orchestrator/results.py: TrialSummary.judged), "at step"; "step" is how far it trained.
    for col in ["#", "trial", *searched, result.metric, *extra, "at step", "step", "status"]:
        table.add_column(safe_text(col), justify="right" if col not in ("trial", "status") else "left")
    for i, t in enumerate(result.trials, 1):
        style = "bold green" if i == 1 and t.status != "failed" else None
        status = t.status + (f": {t.stop_reason or t.error}" if (t.stop_reason or t.error) else "")
        judged, at = t.judged
        table.add_row(
            str(i),
            safe_text(t.trial_id),
            *[safe_text(fmt(t.config.get(k))) for k in searched],
            fmt(judged.get(result.metric, "-")),
            *[fmt(judged.get(k, "-")) for k in extra],
            str(at),
            str(t.step),
            safe_text(status),
            style=style,
        )
    table_out.print(table)
    err.print(
        safe_text(
            f"{len(result.trials)} trials in {result.wall_seconds:.0f}s. MLflow: {redact_uri(result.tracking_uri)}, "
            "experiment "
            f"{result.experiment!r}, sweep run {result.parent_run_id}"
        )
    )
    if result.cost_usd > 0:
        err.print(f"Cost: ${result.cost_usd:.2f} (spot saved ${result.spot_saved_usd:.2f} against on demand)")
    else:
        err.print("Cost: $0 (no node advertised a price: this machine, or a cluster not set up by `ganops cluster`)")
    best = result.best
    err.print("Next:", style="bold")
    err.print(
        f"  ganops ui{_uri_flag(result.tracking_uri)}                      # compare trials side by side",
        highlight=False,
    )
    if best:
        err.print(
            f"  ganops sample {safe_text(best.trial_id)} --n 64 --out best.png{_uri_flag(result.tracking_uri)}   "
            f"# look at the best generator (step {best.judged[1]})",
            highlight=False,
        )
    if result.registered_model:
        err.print(
            f"  ganops sample {safe_text(result.registered_model)} --out best.png{_uri_flag(result.tracking_uri)}   "
            "# the same, from the model registry",
            highlight=False,
        )


def _uri_flag(uri: str) -> str:
    from orchestrator.local_store import default_tracking_uri

    return "" if uri == default_tracking_uri() else f" --tracking-uri {safe_text(redact_uri(uri))}"


@app.command()
def ui(
    tracking_uri: TrackingOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you mean to share it.")
    ] = "127.0.0.1",
) -> None:
    """Open the MLflow UI on the sweep's store: one parent run per sweep, one child run per trial.

    Example: ganops ui --port 5001
    """
    from orchestrator.tracking import home, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        err.print(
            f"{redact_uri(uri)} is an MLflow tracking server: open it in a browser (it serves the UI itself)",
            highlight=False,
        )
        raise typer.Exit(0)
    exe = shutil.which("mlflow") or f"{sys.executable} -m mlflow"
    cmd = [*exe.split(), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", (home() / "mlartifacts").as_uri()]
    err.print(f"MLflow UI on http://{host}:{port} (Ctrl-C to stop) for {uri}", highlight=False)
    # Job execution spawns ~2 GB of worker processes that the UI does not need.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        raise typer.Exit(subprocess.call(cmd, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _seed_pair(value: str | None) -> tuple[int, int] | None:
    """--interpolate A,B -> (A, B); exit 2 on anything else."""
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        _fail(
            f"--interpolate {value!r}: give two latent seeds as A,B (non-negative integers), e.g. --interpolate 0,1", 2
        )
    return int(parts[0]), int(parts[1])


@app.command()
def sample(
    run: Annotated[
        str,
        typer.Argument(
            help="The trial's MLflow run id, its Ray trial id (from the leaderboard), or a registered model: "
            "models:/NAME/VERSION or models:/NAME@best."
        ),
    ],
    n: Annotated[int, typer.Option("--n", min=1, max=100_000, help="Number of samples.")] = 64,
    out: Annotated[
        Path, typer.Option("--out", help="Output file: .npy ((N,2) points or (N,C,H,W) images in [-1,1]) or .png.")
    ] = Path("samples.png"),
    seed: Annotated[int, typer.Option(help="Seed of the latent draws.")] = 0,
    class_: Annotated[
        int | None,
        typer.Option(
            "--class",
            help="Conditional generators (cdcgan28) only: draw this class (0-9). Without it they draw the classes "
            "0-9 in turn, one per column.",
        ),
    ] = None,
    interpolate: Annotated[
        str | None,
        typer.Option(
            "--interpolate",
            metavar="A,B",
            help="Instead of N samples: a strip of --steps samples along the spherical interpolation (slerp) from "
            "seed A's latent to seed B's.",
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=2, max=1000, help="Samples along an --interpolate walk, both ends included.")
    ] = 10,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="Where the generator runs: cpu, cuda or cuda:N (a generator trained on a GPU samples on a CPU too).",
        ),
    ] = "cpu",
    latest: Annotated[
        bool,
        typer.Option(
            "--latest",
            help="A trial's latest eval's generator instead of its best eval's (the one the sweep ranked it by).",
        ),
    ] = False,
    like: Annotated[
        Optional[Path],
        typer.Option(
            "--like",
            metavar="IMAGE",
            help="Style transfer: IMAGE's z (by the run's encoder, `ganops encode`) drawn as --class K or "
            "--all-classes.",
        ),
    ] = None,
    all_classes: Annotated[
        bool,
        typer.Option(
            "--all-classes", help="With --like: a strip of IMAGE's style as each class 0-9 (conditional generators)."
        ),
    ] = False,
    add: Annotated[
        Optional[Path],
        typer.Option(
            "--add",
            metavar="V.npy",
            help="Walk an attribute vector (`ganops latent vector`): z + s*V for --steps values of s over --scale, "
            "one row per latent (--n of them, or --like IMAGE's).",
        ),
    ] = None,
    scale: Annotated[
        str, typer.Option("--scale", metavar="LO,HI", help="With --add: the range of s, e.g. -2,2.")
    ] = "-2,2",
    tracking_uri: TrackingOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write N samples from a trial's generator, or a latent interpolation strip. A trial's
    generator is its best eval's (by the sweep's metric; the latest for runs from before ganops kept
    it), or with --latest its latest eval's; the output says which, and its step.

    Example: ganops sample 3f2a1_00004 --n 2500 --out points.npy   (or: ganops sample models:/ganops-dcgan-mnist@best)
             ganops sample RUN --class 3 --out threes.png
             ganops sample RUN --interpolate 0,1 --steps 10 --out walk.png
             ganops sample RUN --like digit.png --all-classes --out styles.png
             ganops sample RUN --add v.npy --scale -2,2 --steps 9 --n 4 --out walk.png
    """
    pair = _seed_pair(interpolate)
    if latest and (like is not None or add is not None or all_classes):
        _fail("--latest: --like, --add and --all-classes draw from the trial's best generator; leave --latest out", 2)
    if like is not None or add is not None or all_classes:
        _latent_sample(run, like, all_classes, add, scale, n, out, seed, class_, steps, pair, tracking_uri, json_)
        return
    if latest:  # a flag that cannot apply is said before the store is asked
        from orchestrator.sample import SampleError, check_latest

        try:
            check_latest(run, latest)
        except SampleError as e:
            _fail(str(e), 2)
    uri = _read_store(tracking_uri, "run", run)  # before importing torch and mlflow: an unknown id answers at once
    from orchestrator.sample import SampleError
    from orchestrator.sample import sample as _sample

    try:
        info = _sample(uri, run, n, out, seed, cls=class_, interpolate=pair, steps=steps, device=device, latest=latest)
    except SampleError as e:
        _fail(str(e), 2)
    which = f"{info['generator']} generator" + (f", step {info['step']}" if info["step"] is not None else "")
    if json_:
        typer.echo(json.dumps(info))
    elif pair is not None:
        err.print(
            f"wrote the slerp from seed {pair[0]} to seed {pair[1]} in {steps} steps ({info['n']} samples "
            f"{tuple(info['shape'])}) of run {info['run_id']} ({which}) to {info['out']}",
            highlight=False,
        )
    else:
        err.print(
            f"wrote {info['n']} samples {tuple(info['shape'])} of run {info['run_id']} ({which}) to {info['out']}",
            highlight=False,
        )


def _scale_pair(value: str) -> tuple[float, float]:
    """--scale LO,HI -> (LO, HI); exit 2 on anything else."""
    try:
        lo, hi = (float(p) for p in value.split(","))
    except ValueError:
        _fail(f"--scale {value!r}: give the walk's range as LO,HI (two numbers), e.g. --scale -2,2", 2)
    return lo, hi


def _latent_sample(run, like, all_classes, add, scale, n, out, seed, class_, steps, pair, tracking_uri, json_) -> None:
    """`ganops sample --like / --add`: style transfer or an attribute walk (orchestrator/latent.py)."""
    if pair is not None:
        _fail("--interpolate walks between two seeds; it does not combine with --like, --all-classes or --add", 2)
    if all_classes and (like is None or class_ is not None):
        _fail(
            "--all-classes goes with --like IMAGE and without --class: ganops sample RUN --like IMAGE.png "
            "--all-classes",
            2,
        )
    lo_hi = _scale_pair(scale)
    uri = _read_store(tracking_uri, "run", run)
    from orchestrator import latent
    from orchestrator.sample import SampleError

    try:
        if add is not None:
            info = latent.attribute_walk(
                uri, run, add, out, lo_hi, steps, n=n if like is None else 1, seed=seed, like=like, cls=class_
            )
            msg = (
                f"wrote the walk along {add} over s in [{lo_hi[0]:g}, {lo_hi[1]:g}] "
                f"({info['rows']} rows of {steps}) of run {info['run_id']} to {info['out']}"
            )
        else:
            info = latent.style_transfer(uri, run, like, out, cls=class_, all_classes=all_classes)
            classes = info["classes"] or "itself"
            msg = f"wrote {like}'s style as class(es) {classes} of run {info['run_id']} to {info['out']}"
    except SampleError as e:  # LatentError is one; unknown runs and classes are others
        _fail(str(e), 2)
    if json_:
        typer.echo(json.dumps(info))
    else:
        err.print(msg, highlight=False)


@app.command()
def encode(
    run: Annotated[str, typer.Argument(help="The trial's MLflow run id or its Ray trial id (from the leaderboard).")],
    steps: Annotated[int, typer.Option("--steps", min=1, max=1_000_000, help="Encoder training steps.")] = 500,
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(
            "--checkpoint",
            metavar="STATE.pt",
            help="The trial's Ray checkpoint (state.pt) holding D; default: the newest in the sweep's local storage.",
        ),
    ] = None,
    lr: Annotated[float, typer.Option("--lr", min=1e-7, max=1.0, help="Adam learning rate of the encoder.")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, max=65_536, help="Images per step.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the data draws.")] = 0,
    tracking_uri: TrackingOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Train an encoder E (z from an image) for a finished trial: a copy of its D with the last layer widened to
    the latent size, trained so G(E(x)) reconstructs x (L2) with G frozen. Logs E, its error curve and
    (input, reconstruction) pairs to the trial's MLflow run; `ganops sample --like` and `ganops latent vector` use it.

    Example: ganops encode 3f2a1_00004 --steps 1000 --json
    """
    uri = _read_store(tracking_uri, "run", run)
    from rich.progress import Progress

    from orchestrator import latent
    from orchestrator.sample import SampleError

    # The bar on stderr (gone when done): --json's stdout stays one JSON object.
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("encoder", total=steps)

        def on_point(step: int, error: float) -> None:
            bar.update(task, completed=step, description=f"encoder L2 {error:.4f}")

        try:
            info = latent.encode(
                uri, run, steps, checkpoint=checkpoint, lr=lr, batch_size=batch_size, seed=seed, on_point=on_point
            )
        except SampleError as e:  # LatentError is one; unknown runs and classes are others
            _fail(str(e), 2)
    if json_:
        typer.echo(json.dumps(info))
    else:
        err.print(
            f"encoder of run {info['run_id']}: reconstruction error {info['recon_error']:.4f} (a random z: "
            f"{info['random_z_error']:.4f}) "
            f"after {steps} steps; logged {info['encoder']} and {info['pairs']}",
            highlight=False,
        )
        err.print(f"Next: ganops sample {run} --like IMAGE.png --out like.png", style="dim", highlight=False)


latent_app = typer.Typer(
    help="Latent-space tools built on a trial's encoder (`ganops encode`): attribute vectors.", no_args_is_help=True
)
app.add_typer(latent_app, name="latent")


@latent_app.command("vector")
def latent_vector(
    run: Annotated[
        str,
        typer.Argument(help="The trial's MLflow run id or Ray trial id; it needs an encoder (`ganops encode RUN`)."),
    ],
    with_: Annotated[Path, typer.Option("--with", metavar="DIR_A", help="Folder of images that have the attribute.")],
    without: Annotated[Path, typer.Option("--without", metavar="DIR_B", help="Folder of images that lack it.")],
    out: Annotated[Path, typer.Option("--out", help="The vector, as a .npy of shape (latent_dim,).")] = Path(
        "vector.npy"
    ),
    tracking_uri: TrackingOpt = None,
    json_: JsonOpt = False,
) -> None:
    """An attribute vector: the mean z of DIR_A's images minus the mean z of DIR_B's (by the run's encoder).

    Example: ganops latent vector RUN --with ones/ --without sevens/ --out v.npy
             then: ganops sample RUN --add v.npy --scale -2,2 --steps 9
    """
    uri = _read_store(tracking_uri, "run", run)
    from orchestrator import latent
    from orchestrator.sample import SampleError

    try:
        info = latent.attribute_vector(uri, run, with_, without, out)
    except SampleError as e:  # LatentError is one; unknown runs and classes are others
        _fail(str(e), 2)
    if json_:
        typer.echo(json.dumps(info))
    else:
        err.print(
            f"wrote {info['out']}: mean z of {info['with']} images minus {info['without']} (norm {info['norm']:.3f})",
            highlight=False,
        )
        err.print(
            f"Next: ganops sample {run} --add {info['out']} --scale -2,2 --steps 9 --n 4 --out walk.png",
            style="dim",
            highlight=False,
        )


@app.command()
def compare(
    sweep_id: Annotated[
        str,
        typer.Argument(metavar="SWEEP", help="Sweep id (as the leaderboard prints it) or the sweep's MLflow run id."),
    ],
    tracking_uri: TrackingOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Table of a sweep's trials from MLflow: sampled values, metric, balance, stop reason. Works while it runs.

    Example: ganops compare dcgan-mnist-20261123-120402
    """
    from orchestrator.compare import CompareError
    from orchestrator.compare import compare as _compare
    from orchestrator.format import fmt

    uri = _read_store(tracking_uri, "sweep", sweep_id)
    try:
        found = _compare(uri, sweep_id)
    except CompareError as e:
        _fail(str(e), 2)
    if json_:
        typer.echo(json.dumps(found, default=str))
        return
    trials = found["trials"]
    sampled = sorted({k for t in trials for k in t["sampled"]})
    metric = found["metric"]
    from trainers.metric_names import BALANCE_COLUMNS, MIXTURE_COLUMNS

    extra = [k for k in (*MIXTURE_COLUMNS, *BALANCE_COLUMNS) if k != metric and any(k in t for t in trials)]
    # Every string here is an MLflow tag: cells are rich markup, so each goes through safe_text.
    table = Table(
        title=safe_text(f"{found['sweep_id']} ({found['status']}): best {metric} ({found['mode']}) first"),
        title_justify="left",
    )
    for col in ["#", "trial", *sampled, metric, "at step", *extra, "step", "status", "stop reason"]:
        table.add_column(safe_text(col))
    for i, t in enumerate(trials, 1):
        table.add_row(
            str(i),
            safe_text(t["trial_id"] or "-"),
            *[safe_text(fmt(t["sampled"].get(k, "-"))) for k in sampled],
            safe_text(fmt(t.get(metric) if t.get(metric) is not None else "-")),
            str(t.get("at_step", t["step"])),
            *[fmt(t.get(k, "-")) for k in extra],
            str(t["step"]),
            safe_text(t["status"]),
            safe_text(t["stop_reason"] or ""),
        )
    table_out.print(table)
    if trials:
        err.print(
            f"Next: ganops sample {safe_text(trials[0]['trial_id'])} --n 64 --out best.png{_uri_flag(uri)}",
            style="dim",
            highlight=False,
        )


@app.command()
def sweeps(tracking_uri: TrackingOpt = None, json_: JsonOpt = False) -> None:
    """The sweeps in the MLflow store, newest first: status, trials, best metric, start time.

    Example: ganops sweeps --json
    """
    from orchestrator.compare import sweeps as _sweeps
    from orchestrator.format import fmt
    from orchestrator.local_store import missing

    uri = tracking_uri or _default_uri()
    _check_login(uri)
    found = [] if missing(uri) else _sweeps(uri)
    if json_:
        typer.echo(json.dumps(found))
        return
    if not found:
        err.print(
            f"no sweeps in {redact_uri(uri)} yet. Start one: ganops sweep search_spaces/dcgan.yaml (or point at "
            "another store with --tracking-uri or GANOPS_HOME)",
            highlight=False,
        )
        return
    table = Table(title=safe_text(f"sweeps in {redact_uri(uri)}, newest first"), title_justify="left")
    for col in ("sweep", "status", "trials", "metric", "best", "best trial", "started"):
        table.add_column(col, justify="right" if col in ("trials", "best") else "left")
    for s in found:  # MLflow tags, shown as written (safe_text), never as markup
        table.add_row(
            safe_text(s["sweep_id"] or s["parent_run_id"]),
            safe_text(s["status"]),
            str(s["trials"]),
            safe_text(f"{s['metric']} ({s['mode']})"),
            safe_text(fmt(s["best"])) if s["best"] is not None else "-",
            safe_text(s["best_trial"] or "-"),
            (s["start_time"] or "-").replace("T", " "),
        )
    table_out.print(table)
    err.print(
        f"Next: ganops compare {safe_text(found[0]['sweep_id'] or found[0]['parent_run_id'])}{_uri_flag(uri)}",
        style="dim",
        highlight=False,
    )


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema (for editors: VS Code and JetBrains complete and check specs with it).

    Example: ganops schema > ganops.schema.json   (field by field: docs/spec.md)
    """
    from search_spaces import spec

    typer.echo(
        json.dumps(spec.json_schema() if hasattr(spec, "json_schema") else spec.SweepSpec.model_json_schema(), indent=2)
    )


def _default_uri() -> str:
    from orchestrator.local_store import default_tracking_uri

    return default_tracking_uri()


def _check_login(uri: str) -> None:
    """A tracking server that refuses this login: exit 2 naming the variables to set, not MLflow's own error."""
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow import MlflowClient

    from orchestrator.tracking import TrackingAccessError, check_access

    try:
        check_access(MlflowClient(uri), uri)
    except TrackingAccessError as e:
        _fail(str(e), 2)


def _read_store(tracking_uri: str | None, kind: str, ident: str) -> str:
    """The store a read command asks, checked without creating or migrating it: exit 2 when it
    does not exist, or when a read-only query finds no such sweep / run there."""
    from orchestrator import local_store

    uri = tracking_uri or _default_uri()
    what = {"sweep": "sweep", "run": "MLflow run or Ray trial"}[kind]
    if ident.startswith("models:/"):
        if local_store.parse_model_uri(ident) is None:
            _fail(f"{ident!r} is not a model URI; {local_store.MODEL_URI_HELP}", 2)
        what = "registered model version"
    else:
        _check_id(ident, what)
    _check_login(uri)
    if (path := local_store.missing(uri)) is not None:
        _fail(
            f"no {what} {ident!r}: there is no MLflow store at {path} yet, so nothing has run with this GANOPS_HOME. "
            "Run a sweep first (`ganops sweep SPEC`), or point at the sweep's store with --tracking-uri or GANOPS_HOME"
            + ("; then pass a sweep id as its leaderboard or `ganops sweeps` prints it" if kind == "sweep" else ""),
            2,
        )
    model = ident.removeprefix("models:/").split("/")[0].split("@")[0] if ident.startswith("models:/") else None
    known = (
        local_store.has_model(uri, model)
        if model
        else (local_store.has_sweep if kind == "sweep" else local_store.has_run)(uri, ident)
    )
    if known is False:
        hint = (
            "`ganops sweeps` lists the sweeps"
            if kind == "sweep"
            else "take the id from the sweep's leaderboard or `ganops compare SWEEP`"
        )
        where = redact_uri(uri)
        _fail(f"no {'registered model ' + repr(model) if model else what + ' ' + repr(ident)} in {where}; {hint}", 2)
    return uri


@app.command()
def report(
    sweep_id: Annotated[
        str,
        typer.Argument(metavar="SWEEP", help="Sweep id (as the leaderboard prints it) or the sweep's MLflow run id."),
    ],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    tracking_uri: TrackingOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write one self-contained HTML page of a sweep: leaderboard, contact sheet, each trial's curves and
    newest samples. Works while it runs.

    Example: ganops report dcgan-mnist-20261123-120402 --out report.html
    """
    uri = _read_store(tracking_uri, "sweep", sweep_id)
    from orchestrator.report import ReportError
    from orchestrator.report import report as _report

    try:
        info = _report(uri, sweep_id, out)
    except ReportError as e:
        _fail(str(e), 2)
    if json_:
        typer.echo(json.dumps(info))
    else:
        err.print(
            f"wrote {safe_text(info['path'])}: {info['trials']} trials of sweep "
            f"{safe_text(info['sweep_id'])} ({safe_text(info['status'])}); open it in a browser",
            highlight=False,
        )


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
