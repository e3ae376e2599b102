"""A sweep tracked by a real `mlflow server` (SQLite backend, artifacts proxied to S3 on moto's
server mode), every process on 127.0.0.1. The Ray Train workers log over HTTP and hold no S3
credentials: only the server does. Checked through MLflow's client and through S3 itself."""

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import boto3
import numpy as np
import pytest
import ray
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from infra.local_services import mlflow_server, moto_s3
from orchestrator.api import run_sweep, spec_from_text
from orchestrator.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SPEC = """
name: tiny-server
trainer: {model: dcgan28, data: mnist, steps: 4, eval_every: 2, batch_size: 16, width: 8, eval_samples: 200}
search:
  lr_g: {loguniform: [1.0e-4, 1.0e-3]}
sweep: {num_samples: 2, seed: 1}
stopping: {mode_collapse: null}  # 4 iterations: a fresh G draws one class
tracking: {uri: URI}
"""

# The server's S3 credentials (fake; moto accepts any). They live only in the server's
# environment, and nothing the sweep writes may contain them.
S3_CREDS = {
    "AWS_ACCESS_KEY_ID": "AKIAGANOPSSERVER0FAKE",
    "AWS_SECRET_ACCESS_KEY": "ganops-server-only-fake-secret-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET, PREFIX = "ganops-test", "mlflow-artifacts"


def _group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """moto's S3 server and `mlflow server --artifacts-destination s3://...`, ended (whole process groups)
    at teardown."""
    tmp = tmp_path_factory.mktemp("services")
    with moto_s3(tmp / "moto.log", S3_CREDS) as s3:
        s3_client = boto3.client(
            "s3",
            endpoint_url=s3.url,
            aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        s3_client.create_bucket(Bucket=BUCKET)
        with mlflow_server(
            tmp / "mlflow", artifacts_destination=f"s3://{BUCKET}/{PREFIX}", s3_endpoint=s3.url, s3_creds=S3_CREDS
        ) as srv:
            yield SimpleNamespace(s3=s3, s3_client=s3_client, mlflow=srv, dir=tmp)
    assert _group_gone(srv.proc.pid) and _group_gone(s3.proc.pid), "a server process outlived the test"


@pytest.fixture(scope="module")
def clean_ray():
    """A local Ray whose driver and workers have no S3 endpoint and no AWS credentials at all."""
    mp = pytest.MonkeyPatch()
    for k in list(os.environ):
        if k.startswith("AWS_") or k == "MLFLOW_S3_ENDPOINT_URL":
            mp.delenv(k)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/ganops-test")
    mp.setenv("AWS_CONFIG_FILE", "/nonexistent/ganops-test")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    session_dir = ray._private.worker._global_node.get_session_dir_path()  # no public accessor
    yield session_dir
    ray.shutdown()
    mp.undo()


def _objects(services) -> dict[str, bytes]:
    pages = services.s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: services.s3_client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def test_sweep_logs_to_a_tracking_server_with_artifacts_in_s3(services, clean_ray, ganops_home, capfd):
    """`tracking.uri: http://...`: runs, metrics and params in the server's database, every
    artifact (sample grids, generators, leaderboard, registered model) in the S3 bucket, the
    best generator registered, `ganops sample` by trial id and by models:/ URI, no credential leaked."""
    url = services.mlflow.url
    text = SPEC.replace("URI", url)
    result = run_sweep(spec_from_text(text), spec_text=text)
    swept = capfd.readouterr()
    assert swept.out == "", swept.out  # stdout is --json's alone (MLflow prints run URLs there for a server)
    assert result.tracking_uri == url
    assert len(result.trials) == 2 and all(t.status == "done" for t in result.trials), result.trials

    client = MlflowClient(url)
    assert client.get_experiment(result.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["ganops.kind"] == "sweep"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "leaderboard.md",
        "leaderboard.csv",
        "spec",
        "contact_sheet.png",
    }
    children = {
        r.data.tags["ganops.trial_id"]: r
        for r in client.search_runs(
            [result.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
    }
    assert set(children) == {t.trial_id for t in result.trials}
    objects = _objects(services)
    for t in result.trials:
        run = children[t.trial_id]
        assert run.info.status == "FINISHED" and run.data.params["steps"] == "4"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "fid")] == [2, 4]
        assert len(client.get_metric_history(run.info.run_id, "loss_d")) == 2
        grids = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
        assert sorted(int(re.search(r"step\+(\d+)\+", p)[1]) for p in grids) == [2, 4], grids
        assert [a.path for a in client.list_artifacts(run.info.run_id, "generator")] == ["generator/generator.pt"]
        # ...and they really are in the bucket, under the run's id, byte for byte.
        in_s3 = {
            k.split(f"/{run.info.run_id}/artifacts/", 1)[1]: v
            for k, v in objects.items()
            if f"/{run.info.run_id}/artifacts/" in k
        }
        assert {p for p in in_s3 if p.startswith("images/") and p.endswith(".png")} == set(grids)
        with open(client.download_artifacts(run.info.run_id, "generator/generator.pt"), "rb") as f:
            assert in_s3["generator/generator.pt"] == f.read()
    assert any(k.endswith(f"/{parent.info.run_id}/artifacts/contact_sheet.png") for k in objects)

    # The best generator, registered: version tagged with sweep, trial and metric; alias best.
    best = result.best
    name = "ganops-tiny-server"
    assert result.registered_model == f"models:/{name}/1"
    version = client.get_model_version_by_alias(name, "best")
    assert str(version.version) == "1" and version.run_id == best.run_id
    assert version.tags["ganops.sweep_id"] == result.sweep_id and version.tags["ganops.trial_id"] == best.trial_id
    # the value at the best trial's best eval, the one it was ranked by
    assert version.tags["ganops.metric"] == "fid" and float(version.tags["ganops.metric_value"]) == pytest.approx(
        result.value(best)
    )
    assert client.get_run(result.parent_run_id).data.tags["ganops.registered_model"] == result.registered_model
    model_files = {k.rsplit("/artifacts/", 1)[1] for k in _objects(services) if "/models/m-" in k}
    assert {"MLmodel", "data/model.pt2", "extra_files/generator.pt"} <= model_files, model_files

    # `ganops sample` against the server: by trial id, and from the registry (the same generator).
    printed = []

    def sample(*args):
        r = CliRunner().invoke(app, ["sample", *args, "--tracking-uri", url])
        printed.append(r.output)
        return r

    r = sample(best.trial_id, "--n", "6", "--out", "by_trial.npy")
    assert r.exit_code == 0, r.output
    r = sample(f"models:/{name}@best", "--n", "6", "--out", "by_model.npy", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["run_id"] == best.run_id
    np.testing.assert_array_equal(np.load("by_trial.npy"), np.load("by_model.npy"))
    r = sample(f"models:/{name}/1", "--n", "16", "--out", "best.png")
    assert r.exit_code == 0, r.output
    assert Image.open("best.png").size[0] > 28
    r = sample(f"models:/{name}/7", "--out", "x.png")
    assert r.exit_code == 2 and "no registered model version" in r.output

    # No credential of the server's in anything the sweep wrote or printed.
    out = capfd.readouterr()
    runs = client.search_runs([result.experiment_id])
    written = {
        "params and tags": json.dumps([[r.data.params, r.data.tags] for r in runs]).encode(),
        "registry": json.dumps([dict(version.tags), version.source, version.description]).encode(),
        "stdout/stderr": (swept.err + out.out + out.err + "".join(printed)).encode(),
        "server database": (services.dir / "mlflow" / "mlflow.db").read_bytes(),
        "server log": services.mlflow.log.read_bytes(),
        **{f"s3://{BUCKET}/{k}": v for k, v in _objects(services).items()},
        **{str(p): p.read_bytes() for p in ganops_home.rglob("*") if p.is_file()},
        **{str(p): p.read_bytes() for p in Path(clean_ray, "logs").rglob("*") if p.is_file()},
    }
    # the scan saw them
    assert sum(k.startswith("s3://") for k in written) > 10 and sum("/logs/" in k for k in written) > 10
    for where, data in written.items():
        for secret in (S3_CREDS["AWS_ACCESS_KEY_ID"], S3_CREDS["AWS_SECRET_ACCESS_KEY"]):
            assert secret.encode() not in data, f"{secret[:8]}... in {where}"


def test_non_proxied_server_lets_clients_write_s3_with_their_own_credentials(services, tmp_path, monkeypatch):
    """`--default-artifact-root s3://...` (no proxy): the server hands out s3:// locations and the
    clients (a worker's MLflow sink, `ganops sample`) use their own endpoint and credentials."""
    import torch

    from orchestrator import tracking
    from trainers.checkpoint import save_generator
    from trainers.config import TrainerConfig
    from trainers.loop import _MlflowSink, fixed_noise
    from trainers.metrics import image_grid
    from trainers.models import build_models

    for k, v in S3_CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", services.s3.url)
    monkeypatch.chdir(tmp_path)
    with mlflow_server(tmp_path / "direct", default_artifact_root=f"s3://{BUCKET}/direct", workers=1) as srv:
        client = MlflowClient(srv.url)
        exp = tracking.ensure_experiment(client, "direct", srv.url)
        assert client.get_experiment(exp).artifact_location == f"s3://{BUCKET}/direct/{exp}"
        cfg = TrainerConfig.model_validate({"model": "dcgan28", "data": "mnist", "width": 8})
        run_id = tracking.trial_run(client, exp, "no-parent", "sweep", "t_00000", "t", "hash", cfg.model_dump(), {})
        G, _ = build_models(cfg)
        save_generator(tmp_path / "generator.pt", G, cfg.model_dump())
        with torch.no_grad():
            grid = image_grid(G(fixed_noise(cfg)))
        # what rank 0 does per eval
        _MlflowSink(srv.url, run_id).log(2, {"loss_d": 1.3}, grid, tmp_path / "generator.pt")
        tracking.end_run(client, run_id, "FINISHED")
        r = CliRunner().invoke(app, ["sample", run_id, "--tracking-uri", srv.url, "--n", "4", "--out", "direct.png"])
        assert r.exit_code == 0, r.output
    keys = [o["Key"] for o in services.s3_client.list_objects_v2(Bucket=BUCKET, Prefix="direct/")["Contents"]]
    assert f"direct/{exp}/{run_id}/artifacts/generator/generator.pt" in keys
    assert any(
        k.startswith(f"direct/{exp}/{run_id}/artifacts/images/samples+step+2+") and k.endswith(".png") for k in keys
    )
