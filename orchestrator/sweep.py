"""Build and run the Tune sweep for a spec, and summarise what it found."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator import registry, tracking
from orchestrator.format import is_safe_id
from orchestrator.interrupt import REASONS, StopRequest, graceful_stop
from orchestrator.ray_local import aws_keys_to_trials, private_temp_dir, started_here
from orchestrator.results import SweepResult, TrialSummary  # re-exported: their home before results.py
from search_spaces.spec import SweepSpec
from trainers.spool import is_outage, replay_all, spool_root
from trainers.spool import pending as spool_pending

log = logging.getLogger(__name__)


SWEEP_ENV = {
    # No phoning home from a sweep.
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # stdout is reserved for --json: with a tracking server, MLflow prints "View run <url>"
    # there each time a run ends.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # Snappier Ray Train teardown.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    # A stopped trial ends itself through the trial board (orchestrator/board.py); Tune's
    # force-kill of its driver (default after 600 s) stays only as a backstop.
    "TUNE_FORCE_TRIAL_CLEANUP_S": "120",
    # In a sweep, a trial's workers wait for CPUs that a finishing trial is about to free;
    # Ray Train's default 60 s wait fails such trials. Infeasible requests are refused up front.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "900",
    # A diverged trial's last report has no quality metric; Tune's strict check would end
    # the whole sweep over it (a failing trial must never take the sweep down).
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}


class SweepError(Exception):
    """A sweep that cannot start as asked (e.g. a trial needs more than the cluster has)."""


class SweepInterrupted(Exception):
    """SIGTERM or SIGINT stopped the sweep (orchestrator/interrupt.py). Its open runs are closed
    KILLED with the reason; `result` holds the trials so far (None when a second signal
    stopped it at once); `ganops resume` continues it."""

    def __init__(self, sweep_id: str, parent_run_id: str, signum: int, result: SweepResult | None = None):
        self.sweep_id, self.parent_run_id, self.signum, self.result = sweep_id, parent_run_id, signum, result
        self.reason = REASONS.get(signum, "interrupted")
        super().__init__(
            f"sweep {sweep_id} {self.reason} ({signal.Signals(signum).name}): finished trials are in MLflow; "
            f"the unfinished ones go on from their checkpoints with `ganops resume {sweep_id}`"
        )

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended (143, 130)."""
        return 128 + self.signum


class StorageLost(Exception):
    """The sweep's remote storage went away mid-sweep; finished trials are safe, resume later."""


class TrackingLost(StorageLost):
    """The tracking server stopped answering by the sweep's end: training finished, and what
    could not be logged waits in the sweep's spool for `ganops resume` (trainers/spool.py)."""


def quiet_environment() -> None:
    for k, v in SWEEP_ENV.items():
        os.environ.setdefault(k, v)


def check_fits(spec: SweepSpec, resources: dict[str, float]) -> None:
    """Refuse a trial that no node set of this cluster could ever hold, instead of hanging."""
    r = spec.resources
    need = {"CPU": r.workers_per_trial * r.cpus_per_worker, "GPU": r.workers_per_trial * r.gpus_per_worker}
    for name, amount in need.items():
        have = resources.get(name, 0.0)
        if amount > have:
            raise SweepError(
                f"one trial needs {amount:g} {name} (resources.workers_per_trial={r.workers_per_trial} x "
                f"{name.lower()}s_per_worker) but the Ray cluster has {have:g}; lower resources.* in the spec "
                f"or pass --address of a bigger cluster"
            )


def workers_elsewhere(spec: SweepSpec, nodes: list[dict], here_node_id: str) -> str | None:
    """Where trial workers can run other than this machine, in words; None when only here.
    `nodes`: `ray.nodes()`. Another machine is another node address; no node that can hold a
    worker yet (a `ganops cluster` head offers no CPUs) means the autoscaler adds them elsewhere."""
    alive = [n for n in nodes if n.get("Alive")]
    here = next((n for n in alive if n.get("NodeID") == here_node_id), None)
    here_ip = here.get("NodeManagerAddress") if here else None
    addresses: set[str] = {n["NodeManagerAddress"] for n in alive}  # every node of ray.nodes() has one
    others = sorted(addresses - {here_ip})
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        return f"{len(others)} other machine{'s' if len(others) > 1 else ''} ({shown})"
    r = spec.resources
    holds = [
        n
        for n in alive
        if n.get("Resources", {}).get("CPU", 0) >= r.cpus_per_worker
        and n.get("Resources", {}).get("GPU", 0) >= r.gpus_per_worker
    ]
    if not holds:
        return "the worker nodes the autoscaler adds (no node here can hold a trial's worker)"
    return None


def check_shared(where: str | None, uri: str, storage: str) -> None:
    """Refuse a sweep whose workers run on other machines while its MLflow store or Ray storage
    is a path on this one: each worker would write to its own disk, and its metrics, images
    and checkpoints would never reach the sweep."""
    if where is None or os.environ.get("GANOPS_SHARED_FS") == "1":
        return
    local = []
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        local.append(f"tracking store {uri}")
    if "://" not in storage:
        local.append(f"storage {storage}")
    if local:
        raise SweepError(
            f"trial workers run on {where}, but the {' and the '.join(local)} {'is' if len(local) == 1 else 'are'} "
            "on this machine's disk: "
            "each worker would write to its own disk and the sweep would never see it. Set tracking.uri to an MLflow "
            "server every node "
            "reaches (README: 'A team tracking server') and storage: s3://bucket/prefix; if the path is a filesystem "
            "every node mounts "
            "(NFS), set GANOPS_SHARED_FS=1"
        )


def default_concurrency(spec: SweepSpec, resources: dict[str, float]) -> int:
    """Trials at once when the spec does not say: as many as the cluster's CPUs hold and, for
    GPU trials, as many as its GPUs hold (gpus_per_worker 0.25 on one GPU: four).
    (Starting one more ahead, so its Ray Train startup overlaps the others' training, measured
    slower here: 550 s vs 525 s for dcgan.yaml.)"""
    r = spec.resources
    fits = [resources.get("CPU", 1) // (r.workers_per_trial * r.cpus_per_worker)]
    if r.gpus_per_worker:
        # rounded: Ray counts GPU fractions in 1/10,000ths, 1 / 0.3333 must give 3
        fits.append(math.floor(round(resources.get("GPU", 0) / (r.workers_per_trial * r.gpus_per_worker), 6)))
    return max(1, int(min(fits)))


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    # Worker chatter stays in Ray's log files; the sweep shows its own progress and errors.
    kwargs: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    if address or os.environ.get("RAY_ADDRESS"):
        # An existing cluster: --address, or RAY_ADDRESS (what a Ray job's driver is given). It
        # keeps its own temp dir; a `_temp_dir` of ours would make ray.init look for the cluster
        # in the wrong place ("Failed to connect to Ray cluster").
        ray.init(address=address, **kwargs)
        return
    # Ray's session logs (runtime environments among them) in a directory only this user can
    # enter, not world-readable /tmp/ray (issue 15 item 2; orchestrator/ray_local.py).
    kwargs["_temp_dir"] = private_temp_dir()
    # Ray Train's PreemptionWatcher (a process per trial, ~4 CPU-s each here) watches for nodes
    # being drained, which a Ray on this machine never is; its workers inherit this environment.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    try:
        ray.init(include_dashboard=False, **kwargs)
    except Exception as e:  # noqa: BLE001
        # On a busy machine Ray's dashboard agent can miss the raylet's 15 s start-up window
        # ("The current node timed out during startup"; measured here with another sweep
        # running). A second start finds its imports warm.
        if "timed out during startup" not in str(e):
            raise
        log.warning("local Ray did not start in time (busy machine?); starting it again")
        ray.shutdown()
        ray.init(include_dashboard=False, **kwargs)


def build_search(spec: SweepSpec, concurrent: int, board=None, storage: str = ""):
    """The spec's search algorithm and scheduler, as Ray Tune objects."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter, SearchAlgorithm, Searcher
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from orchestrator.stopping import cooperative

    if spec.sweep.search_alg == "optuna":
        try:
            import optuna  # noqa: F401
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise SweepError("search_alg: optuna needs Optuna: pip install optuna") from None
        searcher: Searcher | SearchAlgorithm = ConcurrencyLimiter(
            OptunaSearch(seed=spec.sweep.seed), max_concurrent=concurrent
        )
    else:
        # Random/grid search; the seed makes the sampled configs repeatable.
        searcher = BasicVariantGenerator(random_state=spec.sweep.seed, max_concurrent=concurrent)
    if spec.sweep.scheduler == "asha":
        evals = max(1, spec.trainer.steps // spec.trainer.eval_every)
        a = spec.sweep.asha
        # Time is counted in evals (Tune's training_iteration): one rung = one or more evals.
        scheduler = cooperative(ASHAScheduler)(
            time_attr="training_iteration",
            max_t=evals,
            grace_period=min(a.grace_period, evals),
            reduction_factor=a.reduction_factor,
        )
        scheduler.board = board
    elif spec.sweep.scheduler == "pbt":
        from orchestrator.pbt import build_pbt
        from search_spaces.tune_space import param_space

        if spec.sweep.num_samples > concurrent:
            log.warning(
                "pbt: %d trials but %d run at once; the others join the population as running ones finish "
                "(set sweep.num_samples to at most %d for a population that trains together)",
                spec.sweep.num_samples,
                concurrent,
                concurrent,
            )
        scheduler = build_pbt(spec, board, storage, param_space(spec))
    else:
        scheduler = FIFOScheduler()
    return searcher, scheduler


def run_sweep(
    spec: SweepSpec,
    *,
    spec_text: str | None = None,
    address: str | None = None,
    console: Console | None = None,
    sweep_id: str | None = None,
    resume: bool = False,
) -> SweepResult:
    """Run the sweep described by `spec` to the end and return its trials, best first.

    `sweep_id` names the sweep (default: spec name + time); `ganops submit` passes one derived
    from the spec so that a resubmission finds the same sweep, and `resume=True` so that it
    continues that sweep if it exists (see `resume_sweep`)."""
    from mlflow import MlflowClient

    quiet_environment()
    started = time.monotonic()
    sweep_id = sweep_id or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    _check_sweep_id(sweep_id)
    uri = tracking.resolve_tracking_uri(spec.tracking.uri)
    client = MlflowClient(uri)
    _check_access(client, uri)
    storage = trusted_storage(spec.storage)
    if tracking.find_sweep_run(client, sweep_id) is not None:
        if resume:
            return resume_sweep(sweep_id, tracking_uri=uri, address=address, console=console, storage=storage)
        raise SweepError(f"sweep {sweep_id} already exists in {uri}; continue it with `ganops resume {sweep_id}`")
    experiment = spec.tracking.experiment or spec.name
    experiment_id = tracking.ensure_experiment(client, experiment, uri)
    _check_access(client, uri, (experiment_id, experiment, sweep_id))
    _check_storage(storage)
    write_stored_spec(storage, sweep_id, spec)
    feature_cache = _feature_cache(spec)
    _init_ray(address)
    import ray

    check_fits(spec, ray.cluster_resources())
    check_shared(workers_elsewhere(spec, ray.nodes(), ray.get_runtime_context().get_node_id()), uri, storage)
    parent = tracking.start_sweep_run(
        client,
        experiment_id,
        sweep_id,
        spec.model_dump(mode="json"),
        spec.spec_hash,
        spec_text,
        spec.description,
        spec.metric,
        spec.mode,
        storage,
    )

    def new_tuner(trainable, param_space, tune_config, run_config):
        from ray import tune

        return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)

    return _execute(
        spec,
        client,
        uri,
        experiment,
        experiment_id,
        parent,
        sweep_id,
        storage,
        feature_cache,
        console,
        started,
        new_tuner,
    )


STORED_SPEC = "ganops_spec.json"  # the resolved spec, beside Tune's state in the sweep's storage


def _check_sweep_id(sweep_id: str) -> None:
    if not is_safe_id(sweep_id):
        raise SweepError(
            f"sweep id {sweep_id!r}: use letters, digits and _.- only (at most 200), starting with a letter or digit"
        )


def trusted_storage(storage: str | None) -> str:
    """Where this process may read and write sweeps: the spec's (or --storage's) storage, else
    GANOPS_HOME/ray; a local path made absolute. Never a path read from MLflow."""
    storage = storage or str(tracking.home() / "ray")
    return storage.rstrip("/") if "://" in storage else str(Path(storage).expanduser().resolve())


def _storage_file(storage: str, sweep_id: str):
    """(pyarrow filesystem or None for a local path, the path of the sweep's stored spec)."""
    if "://" not in storage:
        return None, str(Path(storage) / sweep_id / STORED_SPEC)
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(storage)
    return fs, f"{root}/{sweep_id}/{STORED_SPEC}"


def write_stored_spec(storage: str, sweep_id: str, spec: SweepSpec) -> None:
    """Keep the resolved spec with the sweep's Ray state: what `ganops resume` trusts (the
    MLflow copy is for people; anyone who can write to the tracking server can change it)."""
    fs, path = _storage_file(storage, sweep_id)
    data = json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    if fs is None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    else:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(data)


def read_stored_spec(storage: str, sweep_id: str) -> SweepSpec | None:
    fs, path = _storage_file(storage, sweep_id)
    try:
        if fs is None:
            data = Path(path).read_bytes()
        else:
            with fs.open_input_stream(path) as f:
                data = f.read()
    except (FileNotFoundError, OSError):
        return None
    return SweepSpec.model_validate(json.loads(data))


def resume_sweep(
    sweep: str,
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    console: Console | None = None,
    storage: str | None = None,
) -> SweepResult:
    """Continue a sweep whose driver died (killed, crashed, machine lost) from its storage.

    Tune restores the experiment (`Tuner.restore`): finished trials are not re-run, unfinished
    ones start again and their Ray Train run resumes from its newest checkpoint. Each trial
    finds its MLflow run again by trial id, so it keeps one run and one value per step.

    Trust: MLflow only finds the sweep. Restoring unpickles Tune's state, so the state is read
    only from `storage` (the spec's, --storage, or GANOPS_HOME/ray), under a checked sweep id,
    and the spec comes from beside that state, with MLflow's spec hash required to match it.
    A run whose tags point elsewhere is refused: whoever can write tags cannot make this
    process unpickle their file."""
    from mlflow import MlflowClient
    from ray import tune

    quiet_environment()
    started = time.monotonic()
    uri = tracking.resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    _check_access(client, uri)
    parent_run = tracking.find_sweep_run(client, sweep)
    if parent_run is None:
        raise SweepError(
            f"no sweep {sweep!r} in {uri}; `ganops compare` lists a "
            "sweep's trials, the MLflow UI (`ganops ui`) lists sweeps"
        )
    tags = parent_run.data.tags
    sweep_id, parent = tags.get(tracking.TAG_SWEEP, ""), parent_run.info.run_id
    _check_sweep_id(sweep_id)
    if parent_run.info.status == "FINISHED":
        raise SweepError(
            f"sweep {sweep_id} already finished; nothing to resume (`ganops compare {sweep_id}` shows its trials)"
        )
    storage = trusted_storage(storage)
    said = tags.get(tracking.TAG_STORAGE)
    if said is not None and said.rstrip("/") != storage:
        raise SweepError(
            f"sweep {sweep_id}'s MLflow run says its storage is {said}, but this resume only reads {storage} (the "
            "spec's storage, "
            "--storage, or GANOPS_HOME/ray); if that store is yours, resume with --storage pointing at it"
        )
    path = f"{storage}/{sweep_id}"
    _check_storage(storage)
    spec = read_stored_spec(storage, sweep_id)
    if spec is None:
        raise SweepError(
            f"no {STORED_SPEC} under {path}: not a sweep this storage holds (or started by an older ganops, whose "
            "sweeps "
            "cannot be resumed safely); check --storage / GANOPS_HOME"
        )
    if spec.spec_hash != tags.get(tracking.TAG_SPEC_HASH):
        raise SweepError(
            f"sweep {sweep_id}: the spec stored with its state (hash {spec.spec_hash}) is not the one its MLflow run "
            "names "
            f"({tags.get(tracking.TAG_SPEC_HASH)}); refusing to resume a sweep whose records disagree"
        )
    if not tune.Tuner.can_restore(path):
        raise SweepError(f"no Ray Tune experiment state under {path}; the sweep's storage is gone or unreachable")
    experiment_id = parent_run.info.experiment_id
    experiment = client.get_experiment(experiment_id).name
    # What the trials kept while the tracking server was away goes up first: a resumed trial
    # asks MLflow which steps it has logged, and must see those.
    uploaded, left = replay_all(client, spool_root(storage, sweep_id))
    if left:
        raise SweepError(
            f"MLflow at {tracking.redact_uri(uri)} took {uploaded} kept writes, then stopped answering; "
            f"{left} are still kept. Run `ganops resume {sweep_id}` again when it answers"
        )
    feature_cache = _feature_cache(spec)
    _init_ray(address)
    import ray

    check_fits(spec, ray.cluster_resources())
    check_shared(workers_elsewhere(spec, ray.nodes(), ray.get_runtime_context().get_node_id()), uri, storage)
    client.update_run(parent, status="RUNNING")
    if tracking.TAG_STOP in tags:  # stopped by a signal before (orchestrator/interrupt.py); it goes on now
        client.delete_tag(parent, tracking.TAG_STOP)
    client.set_tag(parent, "ganops.resumes", str(int(tags.get("ganops.resumes", "0")) + 1))

    def restored_tuner(trainable, param_space, tune_config, run_config):
        # resume_errored: a trial that failed because the driver or the storage went away goes on
        # from its checkpoint; one that diverged ends again at once (orchestrator/trial.py).
        tuner = tune.Tuner.restore(
            path, trainable, resume_unfinished=True, resume_errored=True, param_space=param_space
        )
        # Tune pickled the dead driver's scheduler, stopper and callbacks (with handles to
        # that driver's trial board); this process brings its own. Same name and storage
        # path as the restored run (Ray 2.60: the restored Tuner keeps them in these fields).
        tuner._local_tuner._tune_config = tune_config
        tuner._local_tuner._run_config = run_config
        return tuner

    return _execute(
        spec,
        client,
        uri,
        experiment,
        experiment_id,
        parent,
        sweep_id,
        storage,
        feature_cache,
        console,
        started,
        restored_tuner,
    )


def _check_access(client, uri: str, write: tuple[str, str, str] | None = None) -> None:
    """A tracking server that refuses this login, or (`write`: experiment id, name, sweep id)
    this user's runs in that experiment, stops the sweep before anything launches."""
    try:
        tracking.check_access(client, uri)
        if write is not None:
            tracking.check_can_write(client, uri, *write)
    except tracking.TrackingAccessError as e:
        raise SweepError(str(e)) from None


def _check_storage(storage: str) -> None:
    from orchestrator.storage import StorageError, check

    try:
        check(storage)
    except StorageError as e:
        raise SweepError(str(e)) from None


def _feature_cache(spec: SweepSpec) -> str | None:
    if not spec.trainer.is_image:
        return None
    # Train (or load) the FID feature classifier once here, not once per trial.
    from trainers.evaluate import default_cache_dir
    from trainers.metrics import load_feature_extractor

    feature_cache = str(default_cache_dir())
    load_feature_extractor(Path(feature_cache))
    return feature_cache


def _execute(
    spec, client, uri, experiment, experiment_id, parent, sweep_id, storage, feature_cache, console, started, make_tuner
) -> SweepResult:
    import ray
    from ray import tune

    from orchestrator.board import start_board
    from orchestrator.progress import SweepProgress
    from orchestrator.stopping import BalanceStopper
    from orchestrator.trial import make_trainable, tracking_login_to_trials
    from search_spaces.tune_space import param_space

    concurrent = spec.sweep.max_concurrent_trials or default_concurrency(spec, ray.cluster_resources())

    board_name, board = start_board(sweep_id)
    stopper = BalanceStopper(
        spec.stopping, spec.metric, spec.mode, board=board, max_usd=spec.budget.max_usd if spec.budget else None
    )
    progress = SweepProgress(
        metric=spec.metric,
        mode=spec.mode,
        steps=spec.trainer.steps,
        searched=list(spec.search),
        tracking_uri=uri,
        console=console,
        experiment_ids=[experiment_id],
        stopper=stopper,
        parent_run_id=parent,
    )
    context = {
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "parent_run_id": parent,
        "sweep_id": sweep_id,
        "storage": storage,
        "feature_cache": feature_cache,
        "board": board_name,
    }
    search_alg, scheduler = build_search(spec, concurrent, board, storage)
    tuner = make_tuner(
        make_trainable(spec, context),
        param_space(spec),
        tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            num_samples=spec.sweep.num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
        ),
        tune.RunConfig(
            name=sweep_id,
            storage_path=storage,
            callbacks=[progress],
            verbose=0,
            stop=stopper,
            # Train restarts workers, and a failed driver is a failed trial; a trial training in
            # its own process is restarted by Tune, from its newest checkpoint (trainers/loop.py).
            failure_config=tune.FailureConfig(max_failures=spec.sweep.max_failures if spec.resources.in_process else 0),
            # Trials training in their own process checkpoint through Tune (orchestrator/trial.py):
            # keep each one's newest two, as Ray Train keeps its workers'.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    if spec.resources.in_process:
        # Tune snapshots its state whenever a trial has written num_to_keep checkpoints since the
        # last snapshot (so a restore never names a deleted one), and warns each time it does.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    status = "FAILED"
    stop = StopRequest()
    try:
        # SIGTERM (CI, Kubernetes, `ganops job cancel`) and Ctrl-C stop the sweep gracefully:
        # Tune saves its state and `ganops resume` continues it (orchestrator/interrupt.py).
        with (
            graceful_stop(stop),
            aws_keys_to_trials(_uses_s3(client, experiment_id, storage)),
            tracking_login_to_trials(uri, started_here()),
        ):
            # Tune prints banners on stdout; stdout is reserved for --json.
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                grid = tuner.fit()
            if grid.errors:
                check_writable(storage, sweep_id)
        status = "FINISHED" if stop.signum is None else "KILLED"
    except StorageLost:
        raise
    except OSError as e:
        if "://" not in storage:
            check_writable(storage, sweep_id)
            raise
        # Ray retried its uploads (pyarrow's S3 retries) and gave up: Tune cannot save the
        # experiment state. What reached the store and MLflow stays; resume picks it up.
        first = str(e).splitlines()[0][:300]
        raise StorageLost(
            f"storage {storage} became unreachable mid-sweep ({first}). Finished trials and every logged step are "
            "kept in MLflow; "
            f"once the store answers again, continue with `ganops resume {sweep_id} --storage {storage}`"
        ) from None
    except KeyboardInterrupt:
        # A second signal, or one before Tune listened: stop now, but leave no run RUNNING.
        status = "KILLED"
        progress.close()
        reason = stop.reason or "interrupted"
        tracking.close_open_trials(client, experiment_id, parent, "KILLED", reason)
        tracking.end_run(client, parent, "KILLED", reason)
        raise SweepInterrupted(sweep_id, parent, stop.signum or signal.SIGINT) from None
    except Exception:
        # Ray only logs the saves a local storage refused and fails the trials; fit() may then
        # fail reading back the experiment state it could not write ("No experiment snapshot").
        check_writable(storage, sweep_id)
        raise
    finally:
        progress.close()
        if status == "FAILED":
            client.set_terminated(parent, status=status)

    # A tracking server that went away mid-sweep gets GANOPS_TRACKING_WAIT_S (300 s) to come
    # back before the sweep gives up on it; what the trials kept is uploaded then.
    deadline = time.monotonic() + float(os.environ.get("GANOPS_TRACKING_WAIT_S", "300"))
    waited = False
    while True:
        try:
            return _conclude(
                spec, client, uri, grid, progress, stop, experiment, experiment_id, parent, sweep_id, storage, started
            )
        except Exception as e:
            if not is_outage(e):
                raise
            if time.monotonic() < deadline:
                if not waited:
                    log.warning(
                        "MLflow at %s does not answer; waiting up to %.0f s for it (GANOPS_TRACKING_WAIT_S)",
                        tracking.redact_uri(uri),
                        deadline - time.monotonic(),
                    )
                waited = True
                time.sleep(5)
                continue
            root = spool_root(storage, sweep_id)
            remote = uri.startswith(("http://", "https://"))
            store = f"tracking server {tracking.redact_uri(uri)}" if remote else f"local MLflow store {uri}"
            back = (
                "the server answers again"
                if remote
                else "its disk can be read and written again (space freed, disk fixed)"
            )
            raise TrackingLost(
                f"the {store} stopped answering ({str(e).splitlines()[0][:200]}). "
                f"Training finished; the {spool_pending(root)} writes MLflow could not take are kept in {root}. "
                f"When {back}, `ganops resume {sweep_id}` uploads them and closes the sweep's run"
            ) from None


def check_writable(storage: str, sweep_id: str) -> None:
    """StorageLost when the sweep's local storage cannot take a write (a full disk: ENOSPC, a
    read-only mount: EROFS, permissions: EACCES/EPERM, the directory replaced or gone), shown
    with what to do; finished trials and logged steps are in MLflow, `ganops resume` goes on."""
    if "://" in storage:
        return
    probe = Path(storage) / sweep_id / ".ganops-write-probe"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(bytes(4096))
            f.flush()
            os.fsync(f.fileno())  # a full disk may refuse only at the flush to it
        probe.unlink()
    except OSError as e:
        named = "" if storage == trusted_storage(None) else f" --storage {storage}"
        raise StorageLost(
            f"the sweep's storage {storage} cannot be written ({e.strerror or e}: {e.filename or probe}), so Ray "
            "could neither checkpoint the trials nor save the sweep's state. Finished trials and every logged step "
            "are kept in MLflow. Free space on that disk or fix its permissions (it must be a writable directory), "
            f"then continue with `ganops resume {sweep_id}{named}`"
        ) from None


def _conclude(spec, client, uri, grid, progress, stop, experiment, experiment_id, parent, sweep_id, storage, started):
    """After fit: the trials' kept writes uploaded (a tracking server that went away and came
    back), then the summaries, the registry and the sweep's run closed."""
    uploaded, left = replay_all(client, spool_root(storage, sweep_id))
    if left:
        raise OSError(f"{left} kept writes could not be uploaded")
    if uploaded:
        log.warning("uploaded %d writes the trials kept while MLflow was away", uploaded)
    trials = _summaries(
        spec, grid, progress, tracking.trial_runs_by_id(client, experiment_id, parent), interrupted=stop.reason
    )
    result = SweepResult(
        sweep_id=sweep_id,
        experiment=experiment,
        experiment_id=experiment_id,
        parent_run_id=parent,
        tracking_uri=uri,
        storage=storage,
        metric=spec.metric,
        mode=spec.mode,
        wall_seconds=time.monotonic() - started,
        first_result_seconds=progress.first_result_s,
        trials=trials,
    )
    if stop.signum is not None:
        # Tune saved the experiment with the unfinished trials in it; their drivers were
        # stopped before they could close their runs. Close them, and the sweep's, with the
        # reason; `ganops resume` reopens them and goes on from their checkpoints.
        signal_reason = stop.reason
        assert signal_reason is not None  # graceful_stop records only SIGTERM and SIGINT, both in REASONS
        result.trials = result.leaderboard()
        tracking.close_open_trials(client, experiment_id, parent, "KILLED", signal_reason)
        _finish_parent(client, result, status="KILLED", stop_reason=signal_reason)
        raise SweepInterrupted(sweep_id, parent, stop.signum, result)
    result.trials = result.leaderboard()
    result.registered_model = registry.try_register_best(client, result, spec.name)
    _finish_parent(client, result)
    return result


def _summaries(spec: SweepSpec, grid, progress, runs: dict, interrupted: str | None = None) -> list[TrialSummary]:
    """One TrialSummary per trial Tune knows. `interrupted`: the stop reason of a sweep stopped
    by a signal; its trials still running (or not yet started) are `unfinished`. Each trial's best
    eval (trainers/best_eval.py) comes from its reports' history (Ray's metrics_dataframe)."""
    from orchestrator.results import best_eval, numeric

    trials = []
    # Ray 2.60: the Trial objects, for the ids of trials that never reported
    analysis = getattr(grid, "_experiment_analysis", None)
    ids_by_path = {t.path: t.trial_id for t in getattr(analysis, "trials", None) or []}
    for r in grid:
        m = dict(r.metrics or {})
        trial_id = m.get("trial_id") or ids_by_path.get(r.path) or (r.path and Path(r.path).name)
        run = runs.get(trial_id)
        row = progress.rows.get(trial_id) or _row_from_run(run)
        state = row.get("state", "pending")
        stop_reason = row.get("stop_reason")
        if r.error and state != "stopped":
            state = "failed"
        if state in ("running", "pending"):
            state, stop_reason = ("unfinished", interrupted) if interrupted else ("done", stop_reason)
        run_id = run.info.run_id if run else None
        config = {k: r.config.get(k) for k in spec.search}
        if spec.sweep.scheduler == "pbt" and run is not None:
            # Tune keeps the sampled config; the settings a PBT exploit switched to are
            # recorded by the trial itself (trainers/loop.py).
            config.update(json.loads(run.data.tags.get("pbt.config", "{}")))
        if state == "unfinished" and run is not None and run.data.metrics.get("step", 0) > (m.get("step") or 0):
            # Stopped between its rank-0 worker logging an eval and Tune receiving the report:
            # MLflow has the newer story.
            m = dict(run.data.metrics)
        best_step, best_metrics = best_eval(getattr(r, "metrics_dataframe", None), m, spec.metric)
        trials.append(
            TrialSummary(
                trial_id=trial_id,
                run_id=run_id,
                status=state,
                config=config,
                metrics=numeric(m),
                step=int(m.get("step", 0) or 0),
                error=_error_line(r.error) if r.error else None,
                stop_reason=stop_reason,
                best_step=best_step,
                best_metrics=best_metrics,
            )
        )
    return trials


def _uses_s3(client, experiment_id: str, storage: str) -> bool:
    """Whether trials read or write S3 themselves: s3:// storage, or an MLflow experiment whose
    artifacts clients write to s3:// directly (a tracking server that does not proxy them)."""
    location = client.get_experiment(experiment_id).artifact_location or ""
    return storage.startswith("s3://") or location.startswith("s3://")


def _row_from_run(run) -> dict[str, Any]:
    """How a trial that ended before this process took over the sweep (`ganops resume`)
    ended, from its MLflow run."""
    if run is None:
        return {}
    state = {"FINISHED": "done", "KILLED": "stopped", "FAILED": "failed", "RUNNING": "running"}.get(
        run.info.status, "done"
    )
    reason = run.data.tags.get(tracking.TAG_STOP)
    evidence = run.data.tags.get("stop_evidence")
    return {"state": state, "stop_reason": f"{reason} {evidence}" if reason and evidence else reason}


def _error_line(error: BaseException) -> str:
    """The line of a trial's error a person needs (Ray wraps it in several layers)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln[:300]
    return (lines[-1] if lines else repr(error))[:300]


def _finish_parent(client, result: SweepResult, status: str = "FINISHED", stop_reason: str | None = None) -> None:
    """Leaderboard and best trial on the parent run, so the MLflow UI answers 'which won?';
    then the run closes with `status` (KILLED with its `stop_reason` for a stopped sweep: the
    leaderboard so far, rewritten when `ganops resume` finishes it)."""
    from mlflow.entities import Metric, RunTag

    # Ranked by each trial's best eval (TrialSummary.judged), which the metric and "at step" show;
    # "steps" is how far it trained.
    lines = [
        f"| rank | trial | status | {result.metric} | at step | steps | sampled | stop reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, t in enumerate(result.trials, 1):
        judged, at = t.judged
        lines.append(
            f"| {i} | {t.trial_id} | {t.status} | {judged.get(result.metric, float('nan')):.4g} | {at} | {t.step} | "
            f"{t.config} | {t.stop_reason or t.error or ''} |"
        )
    client.log_text(result.parent_run_id, "\n".join(lines) + "\n", "leaderboard.md")
    buf = io.StringIO()
    keys = sorted(
        {
            k
            for t in result.trials
            for k in t.metrics
            if not k.startswith(("time_", "timestamp", "pid", "iterations", "training_iteration", "done"))
        }
    )
    w = csv.writer(buf)
    w.writerow(
        [
            "rank",
            "trial_id",
            "run_id",
            "status",
            "step",
            "judged_step",
            f"judged_{result.metric}",
            *(f"param.{k}" for k in result.trials[0].config if result.trials),
            *keys,
            "stop_reason",
            "error",
        ]
    )
    for i, t in enumerate(result.trials, 1):
        w.writerow(
            [
                i,
                t.trial_id,
                t.run_id,
                t.status,
                t.step,
                t.judged[1],
                result.value(t) if result.value(t) is not None else "",
                *t.config.values(),
                *(t.metrics.get(k, "") for k in keys),
                t.stop_reason or "",
                t.error or "",
            ]
        )
    client.log_text(result.parent_run_id, buf.getvalue(), "leaderboard.csv")
    best = result.best
    now = int(time.time() * 1000)
    priced = any(t.metrics.get("cost_usd", 0.0) > 0 for t in result.trials)
    tags = [
        RunTag("ganops.trials", str(len(result.trials))),
        RunTag(
            "ganops.cost",
            f"{result.cost_usd:.4f} USD, spot saved {result.spot_saved_usd:.4f} USD"
            if priced
            else "$0: no node advertised a price (local machine)",
        ),
    ]
    metrics = [
        Metric("sweep_wall_seconds", result.wall_seconds, now, 0),
        Metric("cost_usd", result.cost_usd, now, 0),
        Metric("spot_saved_usd", result.spot_saved_usd, now, 0),
    ]
    if best is not None:
        tags += [RunTag("ganops.best_trial", best.trial_id), RunTag("ganops.best_run_id", best.run_id or "")]
        metrics.append(Metric(f"best_{result.metric}", float(result.value(best)), int(time.time() * 1000), 0))
        tags.append(RunTag("ganops.best_step", str(best.judged[1])))
    client.log_batch(result.parent_run_id, metrics=metrics, tags=tags)
    from orchestrator.contact_sheet import log_contact_sheet

    try:
        log_contact_sheet(client, result.parent_run_id, [(t.trial_id, t.run_id) for t in result.trials if t.run_id])
    except Exception:  # noqa: BLE001 - a picture must never cost the sweep its result
        log.warning("could not build the contact sheet", exc_info=True)
    tracking.end_run(client, result.parent_run_id, status, stop_reason)
