"""The sweep's best generator in the MLflow Model Registry: `models:/ganops-<spec name>@best`.

At the end of a sweep the best trial's generator is logged as an MLflow PyTorch model on that
trial's run and registered as a new version of the spec's registered model, tagged with the
sweep, the trial and the metric; the alias `best` moves to that version, so it always names
the newest sweep's winner.

Loading safely. A model registry is shared: anyone who can write a version can plant a file,
and unpickling one runs whatever code it names. So:
- the MLflow PyTorch model is logged in MLflow's `pt2` format (torch.export: a graph program
  and tensors, no pickled module), which MLflow's own tools load without ganops' code;
- `ganops sample models:/...` still never loads the flavor: torch's pt2 loader falls back to
  a full unpickle when its weights_only load fails (deserialize_torch_artifact in
  torch/_export/serde/serialize.py, torch 2.13), and a pickled flavor would run code
  outright. It reads only `extra_files/generator.pt` (state dict + config, the same file
  `ganops sample RUN` reads) with `torch.load(weights_only=True)` and rebuilds G from
  ganops' code (trainers/checkpoint.py). A version without that file is refused.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow import MlflowClient

from orchestrator import tracking
from orchestrator.local_store import MODEL_URI_HELP, parse_model_uri  # noqa: F401 - parse_model_uri is this module's API too

if TYPE_CHECKING:
    from orchestrator.results import SweepResult

log = logging.getLogger(__name__)

# The logged model's name on the trial's run. Not "generator": MLflow 3 merges a run's logged
# model into its artifact paths by name, and the run already has generator/generator.pt.
MODEL_NAME = "generator_model"
ALIAS = "best"
WEIGHTS = "extra_files/generator.pt"  # inside the model directory: state dict + config, no code
TAG_REGISTERED = "ganops.registered_model"
TAG_STEP = "ganops.step"  # on a version: the trial step whose generator it holds (its best eval)


def registered_name(spec_name: str) -> str:
    return f"ganops-{spec_name}"


def download_trial_generator(
    client: MlflowClient, run_id: str, dst: Path, latest: bool = False
) -> tuple[str, str, int | None]:
    """A trial run's generator file into `dst`: its best eval's (`generator_best/`, trainers/best_eval.py)
    unless `latest` or the run has none (runs from before ganops kept it), else its latest eval's
    (`generator/`). Returns (local file, "best" or "latest", the step it was saved at, when the run
    says). Raises what MLflow raises for a run without a generator."""
    from trainers.best_eval import BEST_DIR, BEST_STEP, GENERATOR_FILE, LATEST_DIR

    metrics = client.get_run(run_id).data.metrics
    if not latest and any(a.path == f"{BEST_DIR}/{GENERATOR_FILE}" for a in client.list_artifacts(run_id, BEST_DIR)):
        step = metrics.get(BEST_STEP)
        return client.download_artifacts(run_id, f"{BEST_DIR}/{GENERATOR_FILE}", str(dst)), "best", _step(step)
    local = client.download_artifacts(run_id, f"{LATEST_DIR}/{GENERATOR_FILE}", str(dst))
    return local, "latest", _step(metrics.get("step"))


def _step(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and value == value else None


def _conditional_example(G, z):
    """(input example [z, labels], signature) of a conditional generator: z (B, latent) float32
    and labels (B,) int64 in, (B, 1, 28, 28) out."""
    import numpy as np
    import torch
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import Schema, TensorSpec

    labels = torch.arange(z.shape[0])
    with torch.no_grad():
        out = G(z, labels).numpy()
    inputs = Schema(
        [TensorSpec(np.dtype(np.float32), (-1, z.shape[1]), "z"), TensorSpec(np.dtype(np.int64), (-1,), "labels")]
    )
    return [z.numpy(), labels.numpy()], ModelSignature(inputs=inputs, outputs=infer_signature(z.numpy(), out).outputs)


def _log_generator_model(client: MlflowClient, experiment_id: str, best):
    """The trial's generator as an MLflow PyTorch model on its run (pt2 + the weights file): its best
    eval's (the eval the sweep ranked it by), or its latest's for runs from before ganops kept the best.

    Saved locally and uploaded through the client, not with `mlflow.pytorch.log_model`: that
    one only knows the process-wide tracking URI and active experiment, which a sweep's
    driver does not set (tracking.py keeps to explicit clients and run ids)."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    from trainers.checkpoint import load_generator
    from trainers.models import sample_latent

    with tempfile.TemporaryDirectory() as tmp:
        weights, _, saved_at = download_trial_generator(client, best.run_id, Path(tmp), latest=not best.by_best)
        step = saved_at if saved_at is not None else best.step
        G, cfg = load_generator(weights)  # weights_only, like any reader of a checkpoint
        z = sample_latent(2, cfg, torch.Generator().manual_seed(0))  # (2, latent): batch size stays free
        if cfg.is_conditional:  # G(z, labels): two tensors in, which pt2 wants as explicit TensorSpecs
            example, signature = _conditional_example(G, z)
        else:
            example = z.numpy()
            with torch.no_grad():
                signature = infer_signature(z.numpy(), G(z).numpy())  # latent in, samples out
        model = client.create_logged_model(
            experiment_id, name=MODEL_NAME, source_run_id=best.run_id, tags={tracking.TAG_TRIAL: best.trial_id}
        )
        try:
            local = Path(tmp) / "model"
            mlflow.pytorch.save_model(
                G,
                str(local),
                signature=signature,
                input_example=example,
                extra_files=[weights],
                mlflow_model=Model(
                    artifact_path=model.artifact_location,
                    model_uuid=model.model_id,
                    run_id=best.run_id,
                    model_id=model.model_id,
                ),
                # pt2 (torch.export) rather than a pickle: MLflow's users load it without running code.
                serialization_format="pt2",
                # Explicit requirements: inferring them loads the model in a subprocess (slow).
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
            )
            client.log_model_artifacts(model.model_id, str(local))
            client.log_outputs(best.run_id, [LoggedModelOutput(model.model_id, step=step)])
        except BaseException:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
    return client.finalize_logged_model(model.model_id, LoggedModelStatus.READY), step


def register_best(client: MlflowClient, result: "SweepResult", spec_name: str) -> str | None:
    """Log the best trial's generator as a model and register it; returns `models:/NAME/VERSION`.

    None when no trial scored. Raises on MLflow errors; the sweep turns them into a warning."""
    from mlflow.exceptions import MlflowException

    best = result.best
    if best is None or not best.run_id:
        return None
    value = result.value(best)
    name = registered_name(spec_name)
    model, step = _log_generator_model(client, result.experiment_id, best)
    try:
        client.create_registered_model(
            name,
            tags={"ganops.spec": spec_name},
            description=(
                f"Best generator of each `ganops sweep` of spec {spec_name!r}; alias `{ALIAS}` = the newest sweep's. "
                f"Sample it safely with `ganops sample models:/{name}@{ALIAS}` "
                f"(loads {WEIGHTS} with torch weights_only)."
            ),
        )
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":  # an earlier sweep of this spec made it
            raise
    version = client.create_model_version(
        # The storage location, not models:/m-...: a SQL registry store would resolve that through
        # the process-wide tracking URI (a TODO in MLflow 3.17), not this client's.
        name,
        model.artifact_location,
        run_id=best.run_id,
        model_id=model.model_id,
        tags={
            tracking.TAG_SWEEP: result.sweep_id,
            tracking.TAG_TRIAL: best.trial_id,
            "ganops.metric": result.metric,
            "ganops.mode": result.mode,
            "ganops.metric_value": repr(value),
            "ganops.parent_run_id": result.parent_run_id,
            TAG_STEP: str(step),
        },
        description=f"sweep {result.sweep_id}, trial {best.trial_id}, step {step}: "
        f"{result.metric} {value:.4g} ({result.mode})",
    )
    client.set_registered_model_alias(name, ALIAS, version.version)
    uri = f"models:/{name}/{version.version}"
    client.set_tag(result.parent_run_id, TAG_REGISTERED, uri)
    return uri


def try_register_best(client: MlflowClient, result: "SweepResult", spec_name: str) -> str | None:
    """register_best, but a registry failure costs the sweep nothing: it warns and returns None."""
    try:
        return register_best(client, result, spec_name)
    except Exception as e:  # noqa: BLE001 - the trials and the leaderboard are already recorded
        log.warning(
            "could not register the best generator in the model registry: %s",
            e,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        return None


def version_step(client: MlflowClient, uri: str) -> int | None:
    """The trial step whose generator a registered version holds (its `ganops.step` tag); None
    for versions registered before ganops tagged it, or a URI that names none."""
    parsed = parse_model_uri(uri)
    if parsed is None:
        return None
    name, number, alias = parsed
    try:
        mv = client.get_model_version(name, number) if number else client.get_model_version_by_alias(name, alias or "")
    except Exception:  # noqa: BLE001 - the step is a courtesy; download_weights says what is wrong
        return None
    step = (mv.tags or {}).get(TAG_STEP, "")
    return int(step) if step.isdigit() else None


def download_weights(client: MlflowClient, uri: str, dst: Path) -> tuple[str, str | None]:
    """The generator weights of a registered version (`models:/NAME/VERSION` or `@ALIAS`) into
    `dst`; returns (local file, the version's source run id). Raises LookupError with what to do."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    parsed = parse_model_uri(uri)
    if parsed is None:
        raise LookupError(f"{uri!r} is not a model URI; {MODEL_URI_HELP}")
    name, number, alias = parsed
    try:
        if number:
            mv = client.get_model_version(name, number)
        else:
            assert alias is not None  # MODEL_URI matches either /VERSION or @ALIAS
            mv = client.get_model_version_by_alias(name, alias)
        source = client.get_model_version_download_uri(name, mv.version)
    except MlflowException as e:
        raise LookupError(
            f"no registered model version {uri} in {client.tracking_uri}: {e.message}. "
            f"A sweep registers its best generator as models:/ganops-<spec name>@{ALIAS}"
        ) from None
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{source.rstrip('/')}/{WEIGHTS}", dst_path=str(dst), tracking_uri=client.tracking_uri
        )
    except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        raise LookupError(
            f"{uri} (version {mv.version}) has no {WEIGHTS}; it was not registered by ganops, and ganops "
            f"will not unpickle a full model: {e}"
        ) from None
    return local, mv.run_id
