"""The team's tracking server, for real, on 127.0.0.1: a private PostgreSQL cluster (Debian's
packages, `.ci/setup-postgres`) and `mlflow server` on it with MLflow's basic-auth app and its
artifacts proxied to S3 (moto's server). For the team-server test and the tracking benches:

    with local_postgres(tmp) as pg, moto_s3(...) as s3, \\
            team_mlflow_server(tmp, pg, s3_endpoint=s3.url, s3_creds=creds, artifacts_destination="s3://b/p") as srv:
        ...  # MLFLOW_TRACKING_USERNAME=srv.admin, MLFLOW_TRACKING_PASSWORD=srv.password, tracking.uri: srv.url

Nothing here installs anything: `find_postgres()` says where the binaries are, or None.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from infra.local_services import HOST, LocalService, _server_env, _start, free_port

INSTALL_HINT = "PostgreSQL is not installed: run .ci/setup-postgres (it installs Debian's postgresql)"


def find_postgres() -> Path | None:
    """The bin directory holding `initdb` and `pg_ctl`: Debian's /usr/lib/postgresql/<version>/bin
    (newest first; Debian keeps them off PATH), else wherever PATH has them."""
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0,
        reverse=True,
    )
    for d in dirs:
        if os.access(Path(d, "initdb"), os.X_OK) and os.access(Path(d, "pg_ctl"), os.X_OK):
            return Path(d)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


@dataclass
class Postgres:
    """A running private cluster: connect as `user`/`password` to 127.0.0.1:`port`."""

    port: int
    user: str
    password: str
    dir: Path

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        con = psycopg2.connect(host=HOST, port=self.port, user=self.user, password=self.password, dbname="postgres")
        try:
            con.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return self.uri(name)


@contextmanager
def local_postgres(bin_dir: Path, timeout: float = 60.0, max_connections: int | None = None) -> Iterator[Postgres]:
    """initdb + pg_ctl start a cluster on 127.0.0.1 on a free port, in a fresh temp dir (its
    unix socket there too, not /var/run/postgresql); `pg_ctl stop` and the dir removed after.
    `max_connections`: PostgreSQL's limit (its default is 100).

    PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user
    (`runuser`), in a temp dir under /tmp that user owns (pytest's tmp dirs are root's 0700)."""
    as_root = os.getuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    top = Path(tempfile.mkdtemp(prefix="ganops-pg-", dir="/tmp"))
    if as_root:
        pw = pwd.getpwnam("postgres")
        os.chown(top, pw.pw_uid, pw.pw_gid)
    password = secrets.token_hex(16)
    pwfile = top / "pwfile"
    pwfile.write_text(password + "\n")
    if as_root:
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    pwfile.chmod(0o600)
    data, log, port = top / "data", top / "postgres.log", free_port()

    def run(*cmd: str) -> None:
        r = subprocess.run([*run_as, *cmd], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd[:2])} exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}{tail}"
            )

    started = False
    try:
        # Password logins only over TCP (what a team's server does); the superuser is `ganops`.
        run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "ganops",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
            "-E",
            "UTF8",
            "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C",
        )
        # A throwaway cluster: no durability needed (fsync off).
        opts = f"-c listen_addresses={HOST} -p {port} -k {top} -c fsync=off -c full_page_writes=off"
        if max_connections:
            opts += f" -c max_connections={int(max_connections)}"
        run(
            str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", str(int(timeout)), "start"
        )
        started = True
        yield Postgres(port=port, user="ganops", password=password, dir=top)
    finally:
        try:
            if started:
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(top, ignore_errors=True)


def _has_c_utf8() -> bool:
    r = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return r.returncode == 0 and any(ln.lower() in ("c.utf8", "c.utf-8") for ln in r.stdout.split())


@dataclass
class TeamServer:
    """A running `mlflow server --app-name basic-auth`: its URL and its admin's login."""

    service: LocalService
    admin: str
    password: str

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def log(self) -> Path:
        return self.service.log


@contextmanager
def team_mlflow_server(
    workdir: Path,
    pg: Postgres,
    *,
    artifacts_destination: str,
    s3_endpoint: str,
    s3_creds: dict[str, str],
    workers: int = 2,
    timeout: float = 120.0,
    server_args: tuple[str, ...] = (),
    auth_cache_ttl_s: int = 0,
    server_env: dict[str, str] | None = None,
) -> Iterator[TeamServer]:
    """The documented server shape (docs/tracking-server.md): backend store and the auth app's
    users in PostgreSQL, artifacts proxied to S3, basic auth with an admin from `basic_auth.ini`.
    Database URIs travel in the environment (MLFLOW_BACKEND_STORE_URI), not on the command line.
    `server_args`: more `mlflow server` options (bench/tracking_load.py passes `--uvicorn-opts`).
    `auth_cache_ttl_s`: the auth app's login cache (0, MLflow's default: every request checks the
    password's scrypt hash, ~0.3-0.6 s of CPU here). `server_env`: more of the server's environment
    (bench/tracking_load.py sizes the database pool with MLFLOW_SQLALCHEMYSTORE_*)."""
    workdir.mkdir(parents=True, exist_ok=True)
    backend = pg.create_database("mlflow")
    auth_db = pg.create_database("mlflow_auth")
    admin, password = "admin", secrets.token_urlsafe(18)
    ini = workdir / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {auth_db}\n"
        f"admin_username = {admin}\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        + (f"auth_cache_ttl_seconds = {auth_cache_ttl_s}\n" if auth_cache_ttl_s else "")
    )
    ini.chmod(0o600)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--artifacts-destination",
        artifacts_destination,
        *server_args,
    ]
    env = {
        "MLFLOW_BACKEND_STORE_URI": backend,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        # The auth app's CSRF key: the same on every server process behind one URL.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        # Job execution would start a pool of ~2 GB of worker processes a tracking server does not need.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        **s3_creds,
        **(server_env or {}),
    }
    env = {k: v for k, v in _server_env(env).items() if not k.startswith("MLFLOW_TRACKING_")}  # the server is no client
    svc = _start("mlflow server (basic-auth)", cmd, workdir / "mlflow-server.log", env, port, "/health", timeout)
    try:
        yield TeamServer(svc, admin, password)
    finally:
        svc.stop()
