"""Read-only answers from the local SQLite MLflow store, without importing MLflow.

`import mlflow` alone costs 1.5-3 s, and MLflow's client creates (and migrates) a SQLite store
it is pointed at. So the read commands ask this module first: "no store here" and "no such
sweep / run" come from a `mode=ro` SQLite query in milliseconds and create nothing, and
`ganops compare` and `ganops sweeps` read a local store's runs directly. Anything else (a
tracking server, a store this module cannot read) answers None, and the caller asks MLflow.

The tables read (runs, tags, latest_metrics, experiments, registered_model_aliases) are
MLflow's SQLAlchemy store's; tests/unit/test_cli_conventions.py checks these answers against
MlflowClient's on the same store, so a schema change shows there, not in a user's table.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TAG_KIND = "ganops.kind"  # "sweep" on the parent, "trial" on children (orchestrator/tracking.py writes them)
TAG_SWEEP = "ganops.sweep_id"
TAG_TRIAL = "ganops.trial_id"
TAG_PARENT = "mlflow.parentRunId"


MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))/?$")
MODEL_URI_HELP = "use models:/NAME/VERSION or models:/NAME@ALIAS (e.g. models:/ganops-dcgan-mnist@best)"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """`models:/NAME/VERSION` or `models:/NAME@ALIAS` -> (name, version, alias); None if neither."""
    m = MODEL_URI.match(uri)
    return (m["name"], m["version"], m["alias"]) if m else None


def home() -> Path:
    """Where the embedded defaults live: $GANOPS_HOME or ./ganops_runs."""
    return Path(os.environ.get("GANOPS_HOME") or "ganops_runs").expanduser().resolve()


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def missing(uri: str) -> Path | None:
    """The file of a SQLite store that does not exist yet (nothing has run there); else None."""
    path = sqlite_path(uri)
    return path if path is not None and not path.is_file() else None


def _query(uri: str, sql: str, args: tuple = ()) -> list[tuple] | None:
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return None
    try:
        # mode=ro: never creates or migrates; a store another process is writing is read as of now.
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql, args).fetchall()
    except sqlite3.Error:  # not an MLflow store, or one whose schema differs: MLflow answers instead
        return None


def has_sweep(uri: str, sweep: str) -> bool | None:
    """Whether the store holds sweep `sweep` (sweep id or the parent run's id); None: ask MLflow."""
    rows = _query(
        uri,
        "SELECT 1 FROM tags t JOIN tags k ON k.run_uuid = t.run_uuid AND k.key = ? AND k.value = 'sweep' "
        "WHERE (t.key = ? AND t.value = ?) OR t.run_uuid = ? LIMIT 1",
        (TAG_KIND, TAG_SWEEP, sweep, sweep),
    )
    return None if rows is None else bool(rows)


def has_run(uri: str, run: str) -> bool | None:
    """Whether the store holds MLflow run `run` or a trial with Ray trial id `run`; None: ask MLflow."""
    rows = _query(
        uri,
        "SELECT 1 FROM runs WHERE run_uuid = ? UNION SELECT 1 FROM tags WHERE key = ? AND value = ? LIMIT 1",
        (run, TAG_TRIAL, run),
    )
    return None if rows is None else bool(rows)


def has_model(uri: str, name: str) -> bool | None:
    """Whether registered model `name` exists; None: ask MLflow."""
    rows = _query(uri, "SELECT 1 FROM registered_models WHERE name = ? LIMIT 1", (name,))
    return None if rows is None else bool(rows)


@dataclass
class _Info:
    run_id: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None


@dataclass
class _Data:
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class LocalRun:
    """The parts of an mlflow.entities.Run that compare and sweeps read: info.run_id/.status/...,
    data.tags, data.metrics (each metric's latest value, as MLflow gives it)."""

    info: _Info
    data: _Data


def _runs(uri: str, where: str, args: tuple) -> list[LocalRun] | None:
    chosen = (
        f"FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
        f"WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active' AND ({where})"
    )
    rows = _query(
        uri,
        f"SELECT r.run_uuid, r.experiment_id, r.status, r.start_time, r.end_time {chosen} ORDER BY r.start_time "
        "DESC, r.run_uuid",
        args,
    )
    if rows is None:
        return None
    runs = {r[0]: LocalRun(_Info(r[0], str(r[1]), r[2], r[3], r[4]), _Data()) for r in rows}
    if not runs:
        return []
    # The same selection as a subquery, not one `?` per run: SQLite caps a statement's
    # parameters (999 before 3.32, 32,766 since), and a sweep can hold more trials.
    tags = _query(uri, f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN (SELECT r.run_uuid {chosen})", args)
    metrics = _query(
        uri,
        f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN (SELECT r.run_uuid {chosen})",
        args,
    )
    if tags is None or metrics is None:
        return None
    for rid, k, v in tags:
        if rid in runs:  # a run written between the queries is left for the next read
            runs[rid].data.tags[k] = v
    for rid, k, v, is_nan in metrics:
        if rid in runs:
            runs[rid].data.metrics[k] = math.nan if is_nan else float(v)
    return list(runs.values())


def sweep_runs(uri: str, sweep: str) -> tuple[LocalRun | None, list[LocalRun]] | None:
    """(the sweep's parent run or None if there is no such sweep, its trial runs); None: ask MLflow."""
    kind = f"r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = '{TAG_KIND}' AND value = 'sweep')"
    found = _runs(
        uri, f"{kind} AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)", (TAG_SWEEP, sweep)
    )
    if found == []:  # by MLflow run id, as `MlflowClient.get_run` finds it
        found = _runs(uri, f"{kind} AND r.run_uuid = ?", (sweep,))
    if found is None:
        return None
    if not found:
        return None, []
    parent = found[0]
    children = _runs(
        uri,
        "r.experiment_id = ? AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)",
        (parent.info.experiment_id, TAG_PARENT, parent.info.run_id),
    )
    return None if children is None else (parent, children)


def all_sweeps(uri: str) -> list[tuple[LocalRun, list[LocalRun]]] | None:
    """Every sweep in the store, newest first, with its trial runs; None: ask MLflow."""
    parents = _runs(uri, f"r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = '{TAG_KIND}' AND value = 'sweep')", ())
    if parents is None:
        return None
    out: list[tuple[LocalRun, list[Any]]] = []
    for p in parents:
        found = sweep_runs(uri, p.info.run_id)
        if found is None:
            return None
        out.append((p, found[1]))
    return out


def metric_histories(
    uri: str, parent_run_id: str, keys: tuple[str, ...]
) -> dict[str, dict[str, list[tuple[int, float]]]] | None:
    """Every trial run of the sweep `parent_run_id`: key -> its (step, value) points, step
    order, for the metrics `keys`, in one query (`ganops report` asked MLflow once per trial
    and metric: 9,000 requests for 1,000 trials); None: ask MLflow."""
    marks = ",".join("?" * len(keys))
    rows = _query(
        uri,
        f"SELECT run_uuid, key, step, value, is_nan FROM metrics WHERE key IN ({marks}) AND run_uuid IN "
        "(SELECT run_uuid FROM tags WHERE key = ? AND value = ?) ORDER BY run_uuid, key, step, value",
        (*keys, TAG_PARENT, parent_run_id),
    )
    if rows is None:
        return None
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for rid, k, step, v, is_nan in rows:
        out.setdefault(rid, {}).setdefault(k, []).append((int(step), math.nan if is_nan else float(v)))
    return out
