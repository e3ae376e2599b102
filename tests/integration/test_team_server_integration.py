"""The team's tracking server (issue 17 item 1), every part real on 127.0.0.1: PostgreSQL from
Debian's packages (`.ci/setup-postgres`), `mlflow server` on it with MLflow's basic-auth app,
artifacts proxied to S3 on moto's server. A 2-trial sweep through the CLI logs in with
MLFLOW_TRACKING_USERNAME/PASSWORD; a missing or wrong login, or a user who may only read the
sweep's experiment (HTTP 403), stops it before launch (exit 2);
the password reaches no output, param, tag, artifact or log."""

import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from infra.local_services import moto_s3
from orchestrator.cli import app
from tests.conftest import REPO
from tests.integration.test_server_integration import S3_CREDS as SERVER_S3_CREDS
from tests.integration.test_server_integration import SPEC as SERVER_SPEC
from tests.team_server import INSTALL_HINT, find_postgres, local_postgres, team_mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# The tiny 2-trial spec of the SQLite-backed server test, under its own name.
SPEC = SERVER_SPEC.replace("name: tiny-server", "name: team-server")
# The server's S3 credentials (fake; moto accepts any): only the server holds them.
S3_CREDS = {**SERVER_S3_CREDS, "AWS_ACCESS_KEY_ID": "AKIAGANOPSTEAM00FAKE"}
BUCKET, PREFIX = "ganops-team", "mlflow-artifacts"


@pytest.fixture(scope="module")
def postgres_bin():
    """Debian's PostgreSQL binaries. `.ci/run` installs them (`.ci/setup-postgres`); no test installs
    system packages. In CI (`CI=true`) a missing PostgreSQL fails the test instead of skipping it."""
    found = find_postgres()
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(INSTALL_HINT + "; CI=true, so this test may not skip")
        pytest.skip(INSTALL_HINT)
    return found


@pytest.fixture(scope="module")
def team(postgres_bin, tmp_path_factory):
    """PostgreSQL, moto's S3 and `mlflow server --app-name basic-auth` on them; all stopped after."""
    tmp = tmp_path_factory.mktemp("team")
    with local_postgres(postgres_bin) as pg, moto_s3(tmp / "moto.log", S3_CREDS) as s3:
        s3_client = boto3.client(
            "s3",
            endpoint_url=s3.url,
            aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        s3_client.create_bucket(Bucket=BUCKET)
        with team_mlflow_server(
            tmp / "mlflow", pg, artifacts_destination=f"s3://{BUCKET}/{PREFIX}", s3_endpoint=s3.url, s3_creds=S3_CREDS
        ) as srv:
            yield SimpleNamespace(pg=pg, s3_client=s3_client, srv=srv, dir=tmp)


def _env(tmp: Path, **login: str) -> dict[str, str]:
    """A clean CLI environment: no AWS keys, no MLflow login but `login`, its own HOME (no
    ~/.mlflow/credentials) and GANOPS_HOME, Ray's temp dir where the test can scan it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_TRACKING_")) and k != "GANOPS_HOME"}
    env.update(HOME=str(tmp / "home"), GANOPS_HOME=str(tmp / "ganops_runs"), PYTHONPATH=str(REPO), **login)
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = "/nonexistent/ganops-test"
    (tmp / "home").mkdir(exist_ok=True)
    return env


def _ganops(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _objects(team) -> dict[str, bytes]:
    pages = team.s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: team.s3_client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def _all_runs(client: MlflowClient) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=10_000) if ids else []


def test_refused_login_stops_the_sweep_before_launch(team, tmp_path, monkeypatch):
    """No login, or a wrong password: exit 2 with what failed and which variables to set;
    no Ray started, no run created, and the wrong password printed nowhere."""
    url = team.srv.url
    spec = tmp_path / "team.yaml"
    spec.write_text(SPEC.replace("URI", url))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", team.srv.admin)  # this process reads as the admin
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team.srv.password)
    admin = MlflowClient(url)
    before = len(_all_runs(admin))
    wrong = "not-the-admin-password-0123"
    for login, says in (
        ({}, "asks for a login (HTTP 401) and none is set"),
        (
            {"MLFLOW_TRACKING_USERNAME": team.srv.admin, "MLFLOW_TRACKING_PASSWORD": wrong},
            "refused the login of user 'admin' (HTTP 401",
        ),
    ):
        r = _ganops(["sweep", str(spec), "--json"], _env(tmp_path, **login), tmp_path, timeout=180)
        assert r.returncode == 2, r.stderr[-3000:]
        assert r.stdout == ""
        text = " ".join(r.stderr.split())  # rich wraps long lines
        assert (
            says in text
            and "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in text
            and "Nothing was launched" in text
        ), text
        assert wrong not in r.stdout + r.stderr
        assert "Ray" not in r.stderr, r.stderr  # refused before Ray starts
        # the read commands refuse the same way (exit 2, the variables to set), not with MLflow's error
        for read in (["compare", "any-sweep"], ["report", "any-sweep"], ["sample", "any-run"], ["sweeps"]):
            r = _ganops([*read, "--tracking-uri", url], _env(tmp_path, **login), tmp_path, timeout=120)
            text = " ".join(r.stderr.split())
            assert r.returncode == 2 and says in text and "MLFLOW_TRACKING_USERNAME" in text, (read, r.stderr[-2000:])
            assert wrong not in r.stdout + r.stderr and "Traceback" not in r.stderr
    # A user the server knows, with only READ (basic_auth.ini's default) on the experiment another
    # user made: the server would answer 403 to its first run; the sweep says so before launch.
    from mlflow.server.auth.client import AuthServiceClient

    reader_password = secrets.token_urlsafe(18)
    AuthServiceClient(url).create_user("reader", reader_password)
    if admin.get_experiment_by_name("team-server") is None:
        admin.create_experiment("team-server")
    login = {"MLFLOW_TRACKING_USERNAME": "reader", "MLFLOW_TRACKING_PASSWORD": reader_password}
    r = _ganops(["sweep", str(spec), "--json"], _env(tmp_path, **login), tmp_path, timeout=180)
    text = " ".join(r.stderr.split())
    assert r.returncode == 2 and r.stdout == "", r.stderr[-3000:]
    assert "lets user 'reader' read experiment 'team-server' but not add runs to it (HTTP 403)" in text, text
    assert "EDIT permission" in text and "Nothing was launched" in text and "Traceback" not in r.stderr, text
    assert reader_password not in r.stdout + r.stderr and "Ray" not in r.stderr, r.stderr
    assert len(_all_runs(admin)) == before


def test_sweep_logs_in_to_the_team_server_and_every_read_command_works(team, tmp_path, monkeypatch):
    """A 2-trial sweep with the admin's login from the environment: every eval's metrics and sample
    grid read back from the server (grids in the S3 bucket); compare, sweeps, sample and report
    answer against it; the password is in no output, param, tag, artifact, server log or Ray log."""
    url, password = team.srv.url, team.srv.password
    spec = tmp_path / "team.yaml"
    spec.write_text(SPEC.replace("URI", url))
    login = {"MLFLOW_TRACKING_USERNAME": team.srv.admin, "MLFLOW_TRACKING_PASSWORD": password}
    env = _env(tmp_path, **login)
    ray_tmp = Path(tempfile.mkdtemp(prefix="gt", dir="/tmp"))  # short: Ray's socket paths go under it
    env["RAY_TMPDIR"] = str(ray_tmp)
    try:
        r = _ganops(["sweep", str(spec), "--json"], env, tmp_path)
        assert r.returncode == 0, r.stderr[-5000:]
        result = json.loads(r.stdout)
        printed = [r.stdout, r.stderr]

        for k, v in login.items():
            monkeypatch.setenv(k, v)
        client = MlflowClient(url)
        assert len(result["trials"]) == 2 and all(t["status"] == "done" for t in result["trials"]), result["trials"]
        parent = client.get_run(result["parent_run_id"])
        assert parent.info.status == "FINISHED" and parent.data.tags["ganops.kind"] == "sweep"
        objects = _objects(team)
        for t in result["trials"]:
            run = client.get_run(t["run_id"])
            assert run.info.status == "FINISHED" and run.data.tags["ganops.trial_id"] == t["trial_id"]
            for metric in ("fid", "loss_d", "loss_g", "d_x", "d_g_z"):
                assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [2, 4], metric
            grids = sorted(a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png"))
            assert len(grids) == 2 and "step+2+" in grids[0] and "step+4+" in grids[1], grids
            in_s3 = {
                k.split(f"/{run.info.run_id}/artifacts/", 1)[1]
                for k in objects
                if f"/{run.info.run_id}/artifacts/" in k
            }
            assert set(grids) <= in_s3 and "generator/generator.pt" in in_s3, sorted(in_s3)

        # The read commands, in this process, with the login from the environment.
        sweep_id, best = result["sweep_id"], result["trials"][0]["trial_id"]
        runner = CliRunner()
        c = runner.invoke(app, ["compare", sweep_id, "--tracking-uri", url, "--json"])
        assert c.exit_code == 0, c.output
        assert {t["trial_id"] for t in json.loads(c.stdout)["trials"]} == {t["trial_id"] for t in result["trials"]}
        s = runner.invoke(app, ["sweeps", "--tracking-uri", url, "--json"])
        assert s.exit_code == 0, s.output
        assert [x["trials"] for x in json.loads(s.stdout) if x["sweep_id"] == sweep_id] == [2]
        p = runner.invoke(
            app, ["sample", best, "--tracking-uri", url, "--n", "4", "--out", str(tmp_path / "best.png"), "--json"]
        )
        assert p.exit_code == 0, p.output
        assert (
            json.loads(p.stdout)["run_id"] == result["trials"][0]["run_id"]
            and (tmp_path / "best.png").stat().st_size > 0
        )
        h = runner.invoke(
            app, ["report", sweep_id, "--tracking-uri", url, "--out", str(tmp_path / "report.html"), "--json"]
        )
        assert h.exit_code == 0, h.output
        assert json.loads(h.stdout)["trials"] == 2 and (tmp_path / "report.html").stat().st_size > 10_000
        printed += [c.output, s.output, p.output, h.output]

        # The password: nowhere a sweep writes or prints.
        runs = _all_runs(client)
        written = {
            "stdout/stderr": "".join(printed).encode(),
            "params and tags": json.dumps([[x.data.params, x.data.tags] for x in runs]).encode(),
            "server log": team.srv.log.read_bytes(),
            **{f"s3://{BUCKET}/{k}": v for k, v in _objects(team).items()},
            **{str(f): f.read_bytes() for f in (tmp_path / "ganops_runs").rglob("*") if f.is_file()},
            **{str(f): f.read_bytes() for f in ray_tmp.rglob("*") if f.is_file() and "/logs/" in str(f)},
        }
        # the scan saw them
        assert sum(k.startswith("s3://") for k in written) > 10 and sum("/logs/" in k for k in written) > 10
        for where, data in written.items():
            assert password.encode() not in data, f"the MLflow password is in {where}"
    finally:
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)
