"""Bench (issue 17): N trials writing to one MLflow tracking store at once, each through
ganops' own write path; per-eval latency, errors, and points lost on read-back.

Each writer is one ganops trial, minus the training:
- as its trial driver (orchestrator/trial.py): `tracking.trial_run` (a search for the trial's
  run, then the child run with the full trainer config of search_spaces/dcgan.yaml as params),
  and at the end the driver's close (behind the trial's spool: `get_run`, then
  `tracking.end_run` FINISHED);
- as its rank-0 worker (trainers/loop.py): `MlflowSink` with the sweep's spool
  (trainers/spool.py: a write the store does not answer is kept and retried), `_open_sink`'s
  two tags and its `resume_after` reads, then `--steps-per-eval` steps through `LossLog` (the
  step's scalars logged asynchronously every `--log-every` steps and at the eval), and per
  eval one `MlflowSink.log`: the eval's metrics (one batch), the sample grid (PNG) and the
  generator checkpoint; `MlflowSink.close` at the end.
The sweep's end then uploads what the spools kept (`replay_all`), as orchestrator/sweep.py does.
Payloads are small (a 64x64 grid, a ~5 KB checkpoint) so that the store's concurrency, not
bandwidth, is measured; a "step" is `--step-seconds` of sleep in place of training.

Writers are threads in `--procs` processes (forkserver): 500 Python processes would not fit
this machine, and threads of a process still are separate HTTP clients (each keeps its own
pooled connection: MLFLOW_HTTP_POOL_MAXSIZE = threads per process) or separate SQLite
connections. All writers start together, after every process has imported MLflow.

Eval latency: from `MlflowSink.log` starting to its return (every write of the eval done).
Hung: a writer with no account by `--timeout` (stuck inside an MLflow call); its process is
terminated and what it wrote is read back like the rest. For the server, the row then also
holds PostgreSQL's sessions by state at that moment (`store_sessions_at_timeout`).
Lost: after all writers are done and the spools are uploaded, every run is read back (metric histories, artifact
listings, params, status) and compared with what its writer was asked to write; a point
written twice (an HTTP retry after a timeout) counts as `dup`.

Backends:
- `sqlite`: the local store ganops uses by default (`sqlite:///.../mlflow.db`, artifacts beside);
- `server`: the team's server of docs/tracking-server.md, for real on 127.0.0.1
  (tests/team_server.py): PostgreSQL, `mlflow server --app-name basic-auth`, artifacts
  proxied to S3 on moto's server; writers log in as its admin;
- `sqlite-server`: `mlflow server` on a SQLite file (infra/local_services.py), no auth.
One store per backend, one experiment (sweep) per N.

    python bench/tracking_load.py --writers 50,200,500 --backend sqlite,server --evals 3 [--json]
    python bench/tracking_load.py --writers 2 --evals 1 --backend sqlite   # smoke: 24-29 s at load 2-10 here
    python bench/tracking_load.py --writers 500 --backend server --db-pool 30,15   # a pool above the threads
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEMO_SPEC = REPO / "search_spaces" / "dcgan.yaml"
BACKENDS = ("sqlite", "server", "sqlite-server")
# The step's scalars (trainers/step.py reports these every step; LossLog logs their means).
STEP_KEYS = ("loss_d", "loss_g", "loss_d_real", "loss_d_fake", "d_x", "d_g_z", "grad_norm_d", "grad_norm_g")
# The eval's own metrics (trainers/loop.py `_eval_and_report`: bookkeeping, cost, the evaluator's scores).
EVAL_KEYS = (
    "step",
    "train_seconds",
    "eval_seconds",
    "cost_usd",
    "spot_saved_usd",
    "fid",
    "kid",
    "class_coverage",
    "pixel_hist_distance",
    "diversity",
)
GRID_KEY = "samples"  # trainers/trial_log.py MlflowSink.log


@dataclass(frozen=True)
class Plan:
    """What every writer of one (backend, N) run needs; pickled to the writer processes."""

    uri: str
    experiment_id: str
    parent_run_id: str
    sweep_id: str
    spec_hash: str
    trainer_cfgs: tuple[dict, ...]  # one per writer: the spec's trainer with its sampled values
    sampled: tuple[dict, ...]
    evals: int
    steps_per_eval: int
    log_every: int
    step_seconds: float
    generator_file: str
    spool: str  # the sweep's spool (trainers/spool.py: spool_root(storage, sweep_id)), as a sweep passes it
    login: dict[str, str] = field(default_factory=dict, repr=False)  # MLFLOW_TRACKING_* for the server

    def loss_steps(self) -> list[int]:
        """The steps LossLog logs: every log_every-th step and every eval's step."""
        last = self.evals * self.steps_per_eval
        return [s for s in range(1, last + 1) if s % self.log_every == 0 or s % self.steps_per_eval == 0]

    def eval_steps(self) -> list[int]:
        return [e * self.steps_per_eval for e in range(1, self.evals + 1)]


@dataclass
class Written:
    """One writer's account: its run, its timings and the exceptions its calls raised."""

    index: int
    run_id: str | None = None
    open_s: float | None = None
    close_s: float | None = None
    eval_s: list[float] = field(default_factory=list)
    kept: int = 0  # writes its spool kept (the store did not answer); the sweep's end uploads them
    errors: list[str] = field(default_factory=list)


def _error(e: BaseException, where: str) -> str:
    first = next((ln for ln in str(e).strip().splitlines() if ln.strip()), "")  # SQLAlchemy's cause is first
    return f"{where}: {type(e).__name__}: {first.strip()[:240]}"


def _own_client(uri: str):
    """An MlflowClient with a store of its own, as a client in a process of its own has.

    MLflow caches one store per URI and process, and a store's `set_terminated` shuts down that
    store's asynchronous logging queue. In ganops a trial's driver and its rank-0 worker are
    separate processes; here threads of one process play many trials, and a shared store would
    let one trial's close tear down the queue another trial's losses are in (a bench artifact:
    batches enqueued during the shutdown are never written). A SQLite store of its own also has
    its own engine and connections, as each trial process does."""
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service.client import TrackingServiceClient
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    store = _tracking_store_registry.get_store_builder(uri)(store_uri=uri, artifact_uri=None)

    class OwnStore(TrackingServiceClient):
        @property
        def store(self):
            return store

    client = MlflowClient(uri)
    client._tracking_client = OwnStore(uri)
    return client


def _one_trial(plan: Plan, i: int, go: threading.Event) -> Written:
    """Writer i: the MLflow calls of one ganops trial (driver and rank 0), timed."""
    import numpy as np

    from orchestrator import tracking
    from trainers.spool import Spool, is_outage
    from trainers.trial_log import LossLog, MlflowSink

    w = Written(i)
    rng = np.random.default_rng(i)
    grid = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)  # stands in for the fixed-noise grid
    client = _own_client(plan.uri)  # the trial driver's
    sink_client = _own_client(plan.uri)  # rank 0's (MlflowSink's own client is swapped for it below)
    go.wait()
    t0 = time.perf_counter()
    try:
        w.run_id = tracking.trial_run(
            client,
            plan.experiment_id,
            plan.parent_run_id,
            plan.sweep_id,
            f"{plan.sweep_id}_{i:05d}",
            f"trial_{i:05d}",
            plan.spec_hash,
            plan.trainer_cfgs[i],
            plan.sampled[i],
        )
        sink = MlflowSink(plan.uri, w.run_id, plan.spool)
        assert sink.spool is not None  # a run and a URI: the sink has its spool
        sink.client = sink.spool.client = sink_client
        sink.tag("ganops.device", "cpu (bench/tracking_load.py)")  # _open_sink's tags and reads
        sink.tag("ganops.cost", "$0: no node advertised a price (local machine)")
        sink.resume_after(0)
    except Exception as e:  # noqa: BLE001 - counted; a trial whose run does not open logs nothing
        w.errors.append(_error(e, "open"))
        return w
    w.open_s = time.perf_counter() - t0
    losses = LossLog(sink, plan.log_every)
    for e in range(1, plan.evals + 1):
        for step in range((e - 1) * plan.steps_per_eval + 1, e * plan.steps_per_eval + 1):
            time.sleep(plan.step_seconds)  # "training"
            scalars = {k: float(np.sin(step + j + i)) for j, k in enumerate(STEP_KEYS)}
            try:
                losses.add(step, scalars, due=step % plan.steps_per_eval == 0)
            except Exception as err:  # noqa: BLE001
                w.errors.append(_error(err, "log_losses"))
        metrics = {k: float(j + e) for j, k in enumerate(EVAL_KEYS)} | {"step": float(step)}
        t0 = time.perf_counter()
        try:
            sink.log(step, metrics, grid, Path(plan.generator_file))
            w.eval_s.append(time.perf_counter() - t0)
        except Exception as err:  # noqa: BLE001 - a real trial would fail here; the bench counts and goes on
            w.errors.append(_error(err, f"eval {e}"))
    sink.close()  # the worker's end: the last loss batch, one more try at what its spool keeps
    w.kept = sink.spool.kept
    t0 = time.perf_counter()
    try:
        # orchestrator/trial.py run_trial's `close` (a nested function there, so repeated here):
        # behind the spool's writes; a run the sweep stopped keeps its status.
        kept = Spool(client, plan.uri, w.run_id, plan.spool)
        closed = False
        if kept.try_drain(force=True):
            try:
                if client.get_run(w.run_id).info.status == "RUNNING":
                    tracking.end_run(client, w.run_id, "FINISHED")
                closed = True
            except Exception as err:
                if not is_outage(err):
                    raise
        if not closed:
            kept.keep({"op": "close", "status": "FINISHED", "reason": None})
            w.kept += 1
        w.close_s = time.perf_counter() - t0
    except Exception as err:  # noqa: BLE001
        w.errors.append(_error(err, "close"))
    return w


class _Warnings(logging.Handler):
    """Counts MlflowSink.flush's warnings: an asynchronous loss batch that failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:300])


def _writer_process(plan: Plan, indices: list[int], ready, go, out) -> None:
    """One process of writers: a thread per writer, started together on `go`."""
    os.environ.update(plan.login)
    os.environ["MLFLOW_HTTP_POOL_MAXSIZE"] = str(max(10, len(indices)))
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    warned = _Warnings()
    logging.getLogger("trainers.trial_log").addHandler(warned)
    local_go = threading.Event()

    def run(i: int) -> None:
        # Each writer's account goes out as soon as it ends: a writer that hangs (a store that stops
        # answering) costs only its own account, which run_load then counts as hung.
        try:
            out.put(("trial", asdict(_one_trial(plan, i, local_go))))
        except BaseException as e:  # noqa: BLE001 - the bench must report, never hang
            out.put(("trial", asdict(Written(i, errors=[_error(e, "writer") + " " + traceback.format_exc()[-400:]]))))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in indices]
    for t in threads:
        t.start()
    ready.put(os.getpid())
    go.wait()
    local_go.set()
    for t in threads:
        t.join()
    out.put(("warnings", warned.messages))


def _hung(plan: Plan, i: int, timeout: float) -> Written:
    """Writer i's account when it gave none by the deadline: its run, if the store can say."""
    from orchestrator import tracking

    w = Written(i, errors=[f"hung: no account within --timeout {timeout:g} s"])
    with contextlib.suppress(Exception):
        w.run_id = tracking.find_trial_run(_own_client(plan.uri), f"{plan.sweep_id}_{i:05d}", [plan.experiment_id])
    return w


def _store_sessions(pg) -> dict[str, int]:
    """The team server's PostgreSQL sessions by database and state (pg_stat_activity): sessions
    left "idle in transaction" are connections its pools checked out and never gave back."""
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password, dbname="postgres")
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(
                "SELECT datname, state, count(*) FROM pg_stat_activity WHERE datname IS NOT NULL "
                "AND pid <> pg_backend_pid() GROUP BY 1, 2"
            )
            return {f"{db} {state}": n for db, state, n in cur.fetchall()}
    except Exception as e:  # noqa: BLE001 - a diagnostic; the row goes on without it
        return {f"unavailable: {type(e).__name__}": 0}


# ---------------------------------------------------------------- read back


def _read_back(client, plan: Plan, w: dict) -> dict[str, int]:
    """What of writer w's run is in the store: points expected, lost and duplicated."""
    from orchestrator.tracking import _params

    expected: dict[str, int] = Counter()
    lost: dict[str, int] = Counter()
    dup = 0
    loss_steps, eval_steps = plan.loss_steps(), plan.eval_steps()
    n_params = len(_params(plan.trainer_cfgs[w["index"]]))
    expected.update(
        metrics=len(STEP_KEYS) * len(loss_steps) + len(EVAL_KEYS) * len(eval_steps),
        grids=len(eval_steps),
        generator=1,
        params=n_params,
        status=1,
    )
    if w["run_id"] is None:
        return {
            "expected": sum(expected.values()),
            "lost": sum(expected.values()),
            "dup": 0,
            "lost_by_kind": {"no run": sum(expected.values())},
        }
    for keys, steps in ((STEP_KEYS, loss_steps), (EVAL_KEYS, eval_steps)):
        kind = "loss metrics" if keys is STEP_KEYS else "eval metrics"
        for k in keys:
            got = [m.step for m in client.get_metric_history(w["run_id"], k)]
            lost[kind] += len(set(steps) - set(got))
            dup += len(got) - len(set(got))
    pngs = [a.path for a in client.list_artifacts(w["run_id"], "images") if a.path.endswith(".png")]
    found = Counter(int(p.split("+step+", 1)[1].split("+", 1)[0]) for p in pngs if "+step+" in p)
    lost["grids"] = sum(1 for s in eval_steps if found[s] == 0)
    dup += sum(n - 1 for n in found.values() if n > 1)
    gens = [a for a in client.list_artifacts(w["run_id"], "generator") if a.path == "generator/generator.pt"]
    lost["generator"] = 0 if gens and gens[0].file_size else 1
    run = client.get_run(w["run_id"])
    lost["params"] = n_params - len(run.data.params)
    lost["status"] = 0 if run.info.status == "FINISHED" else 1
    return {"expected": sum(expected.values()), "lost": sum(lost.values()), "dup": dup, "lost_by_kind": lost}


# ---------------------------------------------------------------- one (backend, N) run


def _percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]  # nearest rank


def run_load(ctx, plan: Plan, procs: int, timeout: float, sessions=None) -> dict[str, Any]:
    """Start the writers, release them together, collect their accounts, read every run back."""
    from mlflow import MlflowClient

    n = len(plan.trainer_cfgs)
    procs = max(1, min(procs, n))
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    chunks = [list(range(p, n, procs)) for p in range(procs)]
    workers = [ctx.Process(target=_writer_process, args=(plan, c, ready, go, out), daemon=True) for c in chunks]
    for p in workers:
        p.start()
    try:
        for _ in workers:
            ready.get(timeout=timeout)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        go.set()
        accounts: dict[int, dict] = {}
        warnings: list[str] = []
        deadline, ended = time.monotonic() + timeout, 0
        while ended < len(workers) and time.monotonic() < deadline:
            try:
                kind, body = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if kind == "trial":
                accounts[body["index"]] = body
            else:
                warnings += body
                ended += 1
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
        stuck = sessions() if sessions and len(accounts) < n else None  # why they hang, before they go
    finally:
        for p in workers:
            p.join(timeout=10 if len(accounts) == n else 0.1)
            if p.is_alive():
                p.terminate()
    # A writer with no account by the deadline hung in an MLflow call: what it wrote is read back
    # like any other's, against everything it was asked to write.
    hung = sorted(set(range(n)) - set(accounts))
    written = [accounts[i] if i in accounts else asdict(_hung(plan, i, timeout)) for i in range(n)]
    from trainers.spool import replay_all

    t1 = time.perf_counter()
    client = MlflowClient(plan.uri)
    # The sweep's end (orchestrator/sweep.py): what the trials' spools kept goes up now.
    uploaded, left = replay_all(client, plan.spool)
    with ThreadPoolExecutor(16) as pool:
        back = list(pool.map(lambda w: _read_back(client, plan, w), written))
    read_s = time.perf_counter() - t1
    evals = [x for w in written for x in w["eval_s"]]
    opens = [w["open_s"] for w in written if w["open_s"] is not None]
    errors = Counter(e.split(" ", 3)[-1] if e.startswith("eval ") else e for w in written for e in w["errors"])
    return {
        "writers": n,
        "procs": procs,
        "evals_expected": n * plan.evals,
        "evals_done": len(evals),
        "eval_p50_s": _percentile(evals, 0.50),
        "eval_p95_s": _percentile(evals, 0.95),
        "eval_max_s": max(evals, default=None),
        "open_p95_s": _percentile(opens, 0.95),
        "close_p95_s": _percentile([w["close_s"] for w in written if w["close_s"] is not None], 0.95),
        "evals_per_s": len(evals) / wall,
        "errors": sum(len(w["errors"]) for w in written),
        "hung": len(hung),  # writers still inside an MLflow call at --timeout (terminated, then read back)
        "store_sessions_at_timeout": stuck,  # PostgreSQL sessions by state when writers hung (server backend)
        "async_loss_warnings": len(warnings),
        "spool_kept": sum(w["kept"] for w in written),
        "spool_uploaded_at_end": uploaded,
        "spool_left": left,
        "points_expected": sum(b["expected"] for b in back),
        "points_lost": sum(b["lost"] for b in back),
        # which writes the lost points were: loss metrics, eval metrics, grids, generator, params, status
        "lost_by_kind": dict(sum((Counter(b.get("lost_by_kind", {})) for b in back), Counter())),
        "points_dup": sum(b["dup"] for b in back),
        "wall_s": wall,
        "read_back_s": read_s,
        "load_1m_before": load_before,
        "load_1m_after": load_after,
        "first_errors": [f"{k} (x{v})" for k, v in errors.most_common(5)]
        + [f"warning: {m}" for m in sorted(set(warnings))[:3]],
    }


# ---------------------------------------------------------------- stores


@contextlib.contextmanager
def tracking_store(
    backend: str, tmp: Path, server_workers: int, healthcheck_s: int, auth_cache_s: int, db_pool: list[int] | None
):
    """(tracking URI, login for the writers, a secret to keep out of the output, a function giving
    its database sessions by state or None) of a fresh store."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'mlflow.db'}", {}, None, None
        return
    from infra.local_services import mlflow_server

    if backend == "sqlite-server":
        with mlflow_server(tmp / "mlflow", workers=server_workers) as srv:
            yield srv.url, {}, None, None
        return
    import boto3

    from infra.local_services import moto_s3
    from tests.team_server import INSTALL_HINT, find_postgres, local_postgres, team_mlflow_server

    pg_bin = find_postgres()
    if pg_bin is None:
        raise SystemExit(f"error: --backend server needs PostgreSQL. {INSTALL_HINT}")
    creds = {
        "AWS_ACCESS_KEY_ID": "AKIAGANOPSBENCH0FAKE",
        "AWS_SECRET_ACCESS_KEY": "fake",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    pool_env, max_connections = {}, None
    if db_pool:
        size, overflow = db_pool
        pool_env = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(size), "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(overflow)}
        # each worker's pool on the runs database, its auth app's (MLflow's 5 + 10), and a few to spare
        max_connections = server_workers * (size + overflow + 15) + 20
    with local_postgres(pg_bin, max_connections=max_connections) as pg, moto_s3(tmp / "moto.log", creds) as s3:
        boto3.client(
            "s3",
            endpoint_url=s3.url,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        ).create_bucket(Bucket="ganops-bench")
        with team_mlflow_server(
            tmp / "mlflow",
            pg,
            artifacts_destination="s3://ganops-bench/mlflow-artifacts",
            s3_endpoint=s3.url,
            s3_creds=creds,
            workers=server_workers,
            # uvicorn kills a worker that does not answer its supervisor's ping within 5 s (its
            # default), requests it had accepted included, and a starved machine's restarted
            # worker is killed again while importing MLflow: measured here at load 15-22.
            server_args=("--uvicorn-opts", f"--timeout-worker-healthcheck {healthcheck_s}") if healthcheck_s else (),
            # Without it the auth app checks the password's scrypt hash on every request (0.3-0.6 s
            # of CPU each here): measured at ~2 requests/s for the whole server.
            auth_cache_ttl_s=auth_cache_s,
            server_env=pool_env,
        ) as srv:
            login = {"MLFLOW_TRACKING_USERNAME": srv.admin, "MLFLOW_TRACKING_PASSWORD": srv.password}
            yield srv.url, login, srv.password, lambda: _store_sessions(pg)


def make_plan(uri: str, login: dict[str, str], n: int, args, generator_file: Path) -> Plan:
    """The sweep of this N: its experiment and parent run (tracking.start_sweep_run) and each
    writer's sampled trainer config (as Tune would sample search_spaces/dcgan.yaml)."""
    from mlflow import MlflowClient

    from orchestrator import tracking
    from search_spaces.loader import load_spec
    from search_spaces.tune_space import param_space, trial_trainer_config
    from trainers.spool import spool_root

    spec = load_spec(DEMO_SPEC)
    client = MlflowClient(uri)
    sweep_id = f"load{n}-{int(time.time()) % 100000}"
    exp = tracking.ensure_experiment(client, f"tracking-load-{sweep_id}", uri)
    parent = tracking.start_sweep_run(
        client, exp, sweep_id, spec.model_dump(mode="json"), spec.spec_hash, None, None, "fid", "min"
    )
    space = param_space(spec)
    sampled = tuple({k: d.sample() for k, d in space.items()} for _ in range(n))
    return Plan(
        uri=uri,
        experiment_id=exp,
        parent_run_id=parent,
        sweep_id=sweep_id,
        spec_hash=spec.spec_hash,
        trainer_cfgs=tuple(trial_trainer_config(spec, s) for s in sampled),
        sampled=sampled,
        evals=args.evals,
        steps_per_eval=args.steps_per_eval,
        log_every=args.log_every,
        step_seconds=args.step_seconds,
        generator_file=str(generator_file),
        spool=spool_root(str(generator_file.parent / "storage"), sweep_id),
        login=login,
    )


# ---------------------------------------------------------------- CLI


def _ints(text: str) -> list[int]:
    try:
        xs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        xs = []
    if not xs or min(xs) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers separated by commas, e.g. 50,200,500")
    return xs


def _backends(text: str) -> list[str]:
    xs = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in xs if x not in BACKENDS]
    if bad or not xs:
        raise argparse.ArgumentTypeError(f"{text!r}: backends are {', '.join(BACKENDS)} (comma-separated)")
    return xs


def machine() -> dict[str, Any]:
    import mlflow

    return {
        "cpus": os.cpu_count(),
        "load_1m_5m_15m_at_start": [round(x, 2) for x in os.getloadavg()],
        "mlflow": mlflow.__version__,
        "python": sys.version.split()[0],
    }


def render(rows: list[dict], info: dict, args) -> None:
    from rich.console import Console
    from rich.table import Table

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:,.0f}"

    t = Table(title="MLflow tracking under concurrent ganops trials (bench/tracking_load.py)")
    for col in ("backend", "writers", "evals done", "eval p50 ms", "eval p95 ms", "eval max ms", "open p95 ms"):
        t.add_column(col, justify="right")
    for col in ("evals/s", "errors", "hung", "spooled", "lost / written", "dup", "wall s", "load 1m"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            r["backend"],
            str(r["writers"]),
            f"{r['evals_done']}/{r['evals_expected']}",
            ms(r["eval_p50_s"]),
            ms(r["eval_p95_s"]),
            ms(r["eval_max_s"]),
            ms(r["open_p95_s"]),
            f"{r['evals_per_s']:.1f}",
            str(r["errors"] + r["async_loss_warnings"]),
            str(r["hung"]),
            str(r["spool_kept"]),
            f"{r['points_lost']}/{r['points_expected']}",
            str(r["points_dup"]),
            f"{r['wall_s']:.0f}",
            f"{r['load_1m_before']:.1f}->{r['load_1m_after']:.1f}",
        )
    err = Console(stderr=True, width=None if sys.stderr.isatty() else 170)  # a log file gets the whole table
    err.print(t)
    err.print(
        f"machine: {info['cpus']} CPUs, load average {info['load_1m_5m_15m_at_start']} at start, "
        f"MLflow {info['mlflow']}; "
        f"{args.evals} evals x {args.steps_per_eval} steps ({args.step_seconds}s each, losses every {args.log_every}) "
        f"per writer; server workers {args.server_workers}, database pool per worker "
        f"{'%d + %d' % tuple(args.db_pool) if args.db_pool else '5 + 10 (MLflow default)'}"
    )
    for r in rows:
        if r["store_sessions_at_timeout"]:
            sessions = r["store_sessions_at_timeout"]
            err.print(f"  {r['backend']} x{r['writers']}: database sessions when writers hung: {sessions}")
        for e in r["first_errors"]:
            err.print(f"  {r['backend']} x{r['writers']}: {e}", markup=False, highlight=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n")[-1])
    ap.add_argument("--writers", type=_ints, default=[50, 200, 500], help="Concurrent trials, comma-separated.")
    ap.add_argument("--backend", type=_backends, default=["sqlite", "server"], help=f"Any of {', '.join(BACKENDS)}.")
    ap.add_argument("--evals", type=int, default=3, help="Evals per writer.")
    ap.add_argument("--steps-per-eval", type=int, default=50, help="Steps between evals (trainer.eval_every).")
    ap.add_argument("--log-every", type=int, default=10, help="Losses logged every N steps (trainer.log_every).")
    ap.add_argument("--step-seconds", type=float, default=0.02, help="Sleep per step in place of training.")
    ap.add_argument("--procs", type=int, default=16, help="Writer processes (writers are threads spread over them).")
    ap.add_argument("--server-workers", type=int, default=4, help="`mlflow server --workers` for the server backends.")
    ap.add_argument(
        "--healthcheck-s",
        type=int,
        default=60,
        help="The team server's uvicorn --timeout-worker-healthcheck (0: uvicorn's default, 5 s).",
    )
    ap.add_argument(
        "--auth-cache-s",
        type=int,
        default=300,
        help="The team server's auth_cache_ttl_seconds (basic_auth.ini; 0: MLflow's default, no cache).",
    )
    ap.add_argument(
        "--db-pool",
        type=_ints,
        default=None,
        help="SIZE,OVERFLOW: the team server's database pool per worker (MLFLOW_SQLALCHEMYSTORE_POOL_SIZE and "
        "_MAX_OVERFLOW; default MLflow's 5,10); PostgreSQL's max_connections is raised to fit.",
    )
    ap.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="Measure a cold server (no warm-up round first)."
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="Seconds to wait for one (backend, N) run's writers.")
    ap.add_argument("--json", action="store_true", help="Print the figures as JSON on stdout.")
    args = ap.parse_args()
    for name in ("evals", "steps_per_eval", "log_every", "procs", "server_workers"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.step_seconds < 0:
        ap.error("--step-seconds must be 0 or more")
    if args.db_pool is not None and len(args.db_pool) != 2:
        ap.error(f"--db-pool takes SIZE,OVERFLOW (two numbers), got {args.db_pool}")

    from orchestrator.sweep import SWEEP_ENV

    os.environ.update(SWEEP_ENV)  # what a sweep's trials run with (no "View run" on stdout, no telemetry)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    import torch

    ctx = mp.get_context("forkserver")
    # The writer processes fork from a server that imported these once, before any store was opened.
    ctx.set_forkserver_preload(["numpy", "mlflow", "orchestrator.tracking", "trainers.trial_log"])
    info = machine()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ganops-load-") as scratch:
        gen = Path(scratch) / "generator.pt"
        torch.save({"state_dict": {"w": torch.randn(32, 32)}, "config": {"width": 2}}, gen)  # ~5 KB
        for backend in args.backend:
            store = Path(scratch) / backend
            store.mkdir()
            with tracking_store(
                backend, store, args.server_workers, args.healthcheck_s, args.auth_cache_s, args.db_pool
            ) as (
                uri,
                login,
                secret,
                sessions,
            ):
                saved = {k: os.environ.get(k) for k in login}
                os.environ.update(login)  # this process's own client: setup and read-back
                try:
                    if backend != "sqlite" and args.warmup:
                        # A team's server runs for days: its workers' first requests (database
                        # connections, the auth app, the S3 client) are not what a sweep meets.
                        print(f"{backend}: warming up the server ...", file=sys.stderr, flush=True)
                        warm = argparse.Namespace(**{**vars(args), "evals": 1, "steps_per_eval": args.log_every})
                        run_load(
                            ctx, make_plan(uri, login, 2 * args.server_workers, warm, gen), args.procs, args.timeout
                        )
                    for n in args.writers:
                        print(f"{backend}: {n} writers ...", file=sys.stderr, flush=True)
                        row = {
                            "backend": backend,
                            **run_load(ctx, make_plan(uri, login, n, args, gen), args.procs, args.timeout, sessions),
                        }
                        if secret:
                            row["first_errors"] = [e.replace(secret, "***") for e in row["first_errors"]]
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)  # a long run's figures so far
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
    config = {
        k: getattr(args, k)
        for k in (
            "evals",
            "steps_per_eval",
            "log_every",
            "step_seconds",
            "procs",
            "server_workers",
            "healthcheck_s",
            "auth_cache_s",
            "db_pool",
        )
    }
    render(rows, info, args)
    if args.json:
        print(json.dumps({"machine": info, "config": config, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
