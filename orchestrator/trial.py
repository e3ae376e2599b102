"""One trial = one Tune function trainable that builds and fits a Ray Train `TorchTrainer`.

Ray Train V2 layering: Tune schedules the trial driver (this function, asking for no CPU
so the workers can have them all), the driver opens the trial's MLflow run and starts
`TorchTrainer(train_per_worker, ScalingConfig(...))`, and `TuneReportCallback` carries
the workers' reports back to Tune's schedulers, stoppers and progress display.

With `resources.in_process` (one CPU worker) the driver asks for the worker's CPUs and runs
the same loop itself (`train_in_trial`), reporting straight to Tune: no Ray Train controller,
worker group or helper actors start for the trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from ray import tune

from orchestrator import tracking
from search_spaces.spec import SweepSpec
from search_spaces.tune_space import trial_trainer_config

log = logging.getLogger(__name__)

# The driver only waits on its workers: a token of memory instead of a CPU, or a 2-worker
# trial could never be scheduled on a 2-CPU machine.
DRIVER_RESOURCES: dict[str, float] = {"cpu": 0, "memory": 64 * 1024**2}


def in_process_resources(spec: SweepSpec) -> dict[str, float]:
    """What a trial that trains in its own process asks for: its one worker's CPUs."""
    return {"cpu": spec.resources.cpus_per_worker, "memory": DRIVER_RESOURCES["memory"]}


def driver_resources(cluster_resources: dict[str, float]) -> dict[str, float]:
    """What a trial driver asks for. On a cluster whose head advertises `ganops_driver`
    (`ganops cluster`, infra/aws/launcher.py) a unit of it too: drivers then only run on the
    on-demand head, and a spot reclaim takes workers (which resume) but never a driver."""
    from infra.aws.launcher import DRIVER_RESOURCE

    if cluster_resources.get(DRIVER_RESOURCE, 0) >= 1:
        return {**DRIVER_RESOURCES, DRIVER_RESOURCE: 1}
    return DRIVER_RESOURCES


def tune_stop_event() -> threading.Event | None:
    """The event Tune sets when it stops this trial (a signal stopped the sweep, the scheduler
    ended the trial); call it at the trial's start, since Tune's cleanup drops the session right
    after setting it (`Trainable.stop` -> `cleanup` -> `session.finish`, `shutdown_session`).
    Tune then frees the trial's placement group, which takes the trial's Ray Train controller
    with it: `TorchTrainer.fit` raises ActorDiedError in the driver, which is not the trial's
    error. Ray 2.60's function session (private); None where it is missing."""
    try:
        from ray.train._internal.session import get_session

        event = getattr(get_session(), "stop_event", None)
    except Exception:
        return None
    return event if isinstance(event, threading.Event) else None


@contextlib.contextmanager
def tracking_login_to_trials(tracking_uri: str, ray_started_here: bool) -> Iterator[bool]:
    """While inside, Tune copies this environment's MLflow login (MLFLOW_TRACKING_USERNAME /
    _PASSWORD / _TOKEN) into new trials' runtime environments, which their Ray Train workers
    inherit, when the tracking store is a server and this process did not start Ray. A Ray
    started here forks its workers from this environment (and this home's ~/.mlflow/credentials):
    they have the login already, and a copy would only put it in Ray's runtime-env logs.

    A login read from ~/.mlflow/credentials travels the same way (a cluster's nodes lack that
    file): it is put into this process's environment for the sweep's length. Yields whether the
    login is copied. Same mechanism as the AWS keys (orchestrator/ray_local.py)."""
    from mlflow.utils.credentials import read_mlflow_creds
    from ray.tune.execution import class_cache

    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    creds = read_mlflow_creds()
    has_login = bool(creds.username or os.environ.get("MLFLOW_TRACKING_TOKEN"))
    needed = tracking.is_server(tracking_uri) and not ray_started_here and has_login
    if not needed or not isinstance(propagated, set):  # Ray 2.60: a set of names
        yield False
        return
    read = {"MLFLOW_TRACKING_USERNAME": creds.username, "MLFLOW_TRACKING_PASSWORD": creds.password}
    from_file = {k: v for k, v in read.items() if v and k not in os.environ}
    os.environ.update(from_file)
    class_cache.ENV_VARS_TO_PROPAGATE = propagated | set(tracking.CREDENTIAL_VARS)
    log.info("the trials get this environment's MLflow login (the tracking server needs one; Ray runs elsewhere)")
    try:
        yield True
    finally:
        class_cache.ENV_VARS_TO_PROPAGATE = propagated
        for k in from_file:
            os.environ.pop(k, None)


def scaling_config(spec: SweepSpec):
    """The Ray Train workers of one trial: `workers_per_trial`, each with its CPUs and its GPU
    (or share of one: 0.25 lets four trials train on one GPU at once). With GPUs, Ray Train
    picks NCCL and sets each worker's CUDA device (trainers/loop.py asks it with get_device())."""
    from ray.train import ScalingConfig

    r = spec.resources
    return ScalingConfig(
        num_workers=r.workers_per_trial,
        use_gpu=r.gpus_per_worker > 0,
        resources_per_worker={"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.gpus_per_worker else {})},
    )


def lean_torch_trainer():
    """Ray Train's TorchTrainer, less the Ray Data actor it starts for every run whether or not
    the run has datasets (Ray 2.60's DatasetsCallback: a `DatasetManager` process importing Ray
    Data, per trial). ganops' trainers load their own data; a run given `datasets=` keeps it."""
    from ray.train.torch import TorchTrainer

    try:  # a private module: a Ray that moved it gets the plain trainer
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    except ImportError:
        return TorchTrainer

    class LeanTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            return [c for c in callbacks if not isinstance(c, DatasetsCallback)]

    return LeanTorchTrainer


def make_trainable(spec: SweepSpec, context: dict[str, Any]):
    """Build the Tune trainable for `spec`. `context`: tracking_uri, experiment_id,
    parent_run_id, sweep_id, storage (Ray storage path), feature_cache."""
    spec_dump = spec.model_dump(mode="json")

    def run_trial(config: dict[str, Any]) -> None:
        import ray
        from mlflow import MlflowClient
        from ray.train import CheckpointConfig, FailureConfig, RunConfig
        from ray.tune.integration.ray_train import TuneReportCallback

        from trainers.loop import train_in_trial, train_per_worker
        from trainers.spool import Spool, is_outage, spool_root

        s = SweepSpec.model_validate(spec_dump)  # re-validate at the process boundary
        trainer_cfg = trial_trainer_config(s, config)
        ctx = tune.get_context()
        trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
        tune_stopping = tune_stop_event()
        client = MlflowClient(context["tracking_uri"])

        def not_diverged(earlier) -> None:
            # A resumed sweep retries its failed trials from their checkpoints; a diverged one
            # would only diverge again (same seed, same state).
            if earlier.data.tags.get(tracking.TAG_STOP) == "divergence":
                raise RuntimeError(f"trial {trial_id} diverged before the sweep was resumed; not retried")

        run_id = tracking.trial_run(
            client,
            context["experiment_id"],
            context["parent_run_id"],
            context["sweep_id"],
            trial_id,
            trial_name,
            s.spec_hash,
            trainer_cfg,
            {k: config[k] for k in s.search},
            reopen_check=not_diverged,
        )
        if context.get("board"):
            # The sweep closes a stopped trial's run by this id (orchestrator/progress.py).
            ray.get(ray.get_actor(context["board"]).set_run.remote(trial_id, run_id))
        spool = spool_root(context["storage"], context["sweep_id"])
        loop_config = {
            "trainer": trainer_cfg,
            "run": {
                "tracking_uri": context["tracking_uri"],
                "run_id": run_id,
                "feature_cache": context.get("feature_cache"),
                "features": s.metrics.features,
                "trial_id": trial_id,
                "board": context.get("board"),
                "pbt": s.pbt_mutations if s.sweep.scheduler == "pbt" else None,
                "spool": spool,
                # rank 0 keeps the best eval's generator by these (trainers/best_eval.py)
                "metric": s.metric,
                "mode": s.mode,
            },
        }

        def fit() -> dict[str, Any]:
            """Train the trial; its last report."""
            if s.resources.in_process:
                return train_in_trial(loop_config)
            trainer = lean_torch_trainer()(
                train_per_worker,
                train_loop_config=loop_config,
                scaling_config=scaling_config(s),
                run_config=RunConfig(
                    name=trial_id,
                    storage_path=f"{context['storage']}/{context['sweep_id']}/train",
                    # mypy reads ray.train's V1 RunConfig and FailureConfig (the first of its two
                    # imports); Train V2, which runs here, takes a UserCallback and controller_failure_limit.
                    callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # V2 RunConfig, see above
                    # Worker or node lost -> restart from the last checkpoint; a controller that
                    # cannot start fails at once instead of retrying forever.
                    failure_config=FailureConfig(  # type: ignore[call-arg]  # V2's, see above
                        max_failures=s.sweep.max_failures, controller_failure_limit=0
                    ),
                    # PBT donors' checkpoints must outlive the exploit orders that name them.
                    checkpoint_config=CheckpointConfig(num_to_keep=4 if s.sweep.scheduler == "pbt" else 2),
                ),
            )
            return trainer.fit().metrics or {}

        def close(status: str, reason: str | None = None) -> None:
            # A trial the sweep stopped was already closed (KILLED, with its reason) by the
            # sweep's callback; its driver's own ending must not overwrite that. With the
            # tracking server away, the closing waits in the spool behind the worker's writes
            # (trainers/spool.py), for the sweep's end or `ganops resume` to upload.
            kept = Spool(client, context["tracking_uri"], run_id, spool)
            if kept.try_drain(force=True):
                try:
                    if client.get_run(run_id).info.status == "RUNNING":
                        tracking.end_run(client, run_id, status, reason)
                    return
                except Exception as e:
                    if not is_outage(e):
                        raise
            kept.keep({"op": "close", "status": status, "reason": reason})
            log.warning("MLflow is away: trial %s's run closes (%s) when its spool is uploaded", trial_id, status)

        try:
            metrics = fit()
        except Exception as e:
            if tune_stopping is not None and tune_stopping.is_set():
                # Its Ray Train controller died with the placement group Tune freed: an ending
                # the sweep records (KILLED, with the signal's or the scheduler's reason).
                log.info("trial %s stopped by Tune (%s)", trial_id, str(e).splitlines()[0][:200])
                return
            # This trial fails, never the sweep: what went wrong (a plugin's exception, say) goes
            # on its run as a tag, and the whole traceback as an artifact.
            try:
                tracking.record_error(client, run_id, e)
            except Exception as lost:
                if not is_outage(lost):
                    raise
                Spool(client, context["tracking_uri"], run_id, spool).keep(
                    {"op": "batch", "tags": {"ganops.error": str(e).strip()[-5000:]}}
                )
            finally:
                close("FAILED", "error")
            raise
        if metrics.get("diverged"):
            close("FAILED", "divergence")
            if s.resources.in_process:
                # Its last report (diverged) reached Tune before this return does: the stopper's
                # divergence verdict ends it, as a Ray Train trial's does, and resume never retries it.
                return
            raise RuntimeError(f"trial diverged at step {metrics.get('step')} (non-finite loss or gradient)")
        if metrics.get("step", 0) < trainer_cfg["steps"]:
            return  # the sweep stopped it; its callback closes the run with the reason
        close("FINISHED")

    import ray

    if spec.resources.in_process:
        return tune.with_resources(run_trial, in_process_resources(spec))
    return tune.with_resources(run_trial, driver_resources(ray.cluster_resources()))
