"""Bench: how long `ganops` takes to answer, against the floor of importing its CLI libraries.

Each case runs the installed `ganops` console script as a user would (a fresh process), in a
fresh temp working directory with GANOPS_HOME unset, RUNS times; the figure is the median.
Every case is also given as a ratio to a bare `python -c 'import pydantic, yaml, typer, rich'`
(the floor): each run of a case follows a run of the floor, and the ratio is the median of those
pairs' ratios, so a machine under changing load shows as a slower floor, not as a slower ganops.

- warm: the bytecode caches as installed (`__pycache__` beside the sources), run after one
  unmeasured run of the same command, so the OS file cache holds what it reads.
- cold: every run with a fresh empty PYTHONPYCACHEPREFIX, so no bytecode cache is used and
  every module ganops and its libraries import is compiled from source (a first run after a
  `pip install --no-compile`, or a fresh clone's own modules, at worst). The OS file cache is
  not dropped (that needs root and disturbs everything else on the machine).

Cases: `--help`; `validate search_spaces/dcgan.yaml`; `compare`, `sample`, `report` with an
unknown id (each must exit 2 and create no file in its working directory: no `mlflow.db`);
`status` of an unknown job on an address where no Ray cluster listens (exit 2); `compare` on
a finished 8-trial sweep written through the MLflow client with ganops' own tags
(orchestrator/tracking.py), no training needed. Targets are checked on the warm medians.

    python bench/cli_latency.py                # table on stdout
    python bench/cli_latency.py --json --runs 5 --skip-cold
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOOR = [sys.executable, "-c", "import pydantic, yaml, typer, rich"]
TARGETS_S = {
    "--help": 0.3,
    "validate": 0.8,
    "compare unknown": 1.5,
    "sample unknown": 1.5,
    "report unknown": 1.5,
    "status unknown": 1.5,
    "compare 8 trials": 2.0,
}


def build_sweep(home: Path, trials: int = 8) -> str:
    """A finished sweep of `trials` trials in a SQLite store under `home`, tagged as a sweep tags
    it (parent run, one child run per trial with sampled values, metrics, a stop reason); its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from orchestrator import tracking

    home.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(client, "ganops-bench", uri)
    sweep_id = "bench-20261201-120000"
    spec_dump = {
        "trainer": {"model": "dcgan28", "data": "mnist"},
        "search": {"lr_g": {"kind": "loguniform", "args": [1e-4, 1e-3]}},
        "sweep": {"num_samples": trials},
        "resources": {"cpus_per_trial": 1},
    }
    parent = tracking.start_sweep_run(client, exp, sweep_id, spec_dump, "0" * 16, None, None, "fid", "min")
    now = int(time.time() * 1000)
    for i in range(trials):
        tid = f"bench_{i:05d}"
        rid = tracking.trial_run(
            client,
            exp,
            parent,
            sweep_id,
            tid,
            f"trial_{i}",
            "0" * 16,
            {"model": "dcgan28", "lr_g": 1e-4 * (i + 1)},
            {"lr_g": 1e-4 * (i + 1)},
        )
        metrics = [
            Metric(k, v * (1 + i / 10) + s / 1000, now + s, s)
            for s in (100, 200, 300)
            for k, v in {"fid": 80.0, "loss_d": 0.7, "loss_g": 1.2, "d_x": 0.6, "d_g_z": 0.4, "step": 1.0}.items()
        ]
        client.log_batch(rid, metrics=metrics)
        tracking.end_run(client, rid, "KILLED" if i % 3 == 2 else "FINISHED", "d_overpowers" if i % 3 == 2 else None)
    client.set_terminated(parent, "FINISHED")
    return sweep_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _time(cmd: list[str], cwd: Path, env: dict[str, str], cold: bool, expect: int) -> float:
    env = dict(env)
    with tempfile.TemporaryDirectory() as cache:
        if cold:
            env["PYTHONPYCACHEPREFIX"] = cache
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
    if p.returncode != expect:
        raise SystemExit(
            f"{' '.join(cmd)}: exit {p.returncode}, expected {expect}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        )
    return dt


def measure(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    runs: int,
    cold: bool,
    expect: int = 0,
    cwd: Path | None = None,
    creates_nothing: bool = False,
) -> tuple[float, float, float]:
    """(median seconds, median floor seconds, median ratio) of `runs` (floor, case) pairs; each
    case run in `cwd` or a fresh empty directory (checked to stay empty)."""
    times, floors = [], []
    if not cold:  # one unmeasured run each: the OS file cache holds what they read
        with tempfile.TemporaryDirectory() as d:
            _time(FLOOR, Path(d), env, False, 0)
            _time(cmd, cwd or Path(d), env, False, expect)
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            floors.append(_time(FLOOR, Path(d), env, cold, 0))
            times.append(_time(cmd, cwd or Path(d), env, cold, expect))
            if creates_nothing and (left := sorted(p.name for p in Path(d).iterdir())):
                raise SystemExit(
                    f"{name}: `{' '.join(cmd)}` created {left} in its "
                    "working directory; an unknown id must create nothing"
                )
    return statistics.median(times), statistics.median(floors), statistics.median(t / f for t, f in zip(times, floors))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--json", action="store_true", help="Results as JSON on stdout.")
    args = ap.parse_args()
    exe = shutil.which("ganops")
    if not exe:
        raise SystemExit("no `ganops` on PATH; install the project with `pip install -e .` first")
    env = {
        k: v for k, v in os.environ.items() if k not in ("GANOPS_HOME", "MLFLOW_TRACKING_URI", "PYTHONPYCACHEPREFIX")
    }
    spec = str(REPO / "search_spaces" / "dcgan.yaml")
    dead = f"http://127.0.0.1:{_free_port()}"
    with tempfile.TemporaryDirectory() as store_dir:
        sweep_id = build_sweep(Path(store_dir) / "ganops_runs")
        cases = [
            ("--help", [exe, "--help"], 0, None, False),
            ("validate", [exe, "validate", spec], 0, None, False),
            ("compare unknown", [exe, "compare", "no-such-sweep"], 2, None, True),
            ("sample unknown", [exe, "sample", "no_such_00000", "--out", "x.png"], 2, None, True),
            ("report unknown", [exe, "report", "no-such-sweep"], 2, None, True),
            ("status unknown", [exe, "status", "no-such-job", "--address", dead], 2, None, True),
            ("compare 8 trials", [exe, "compare", sweep_id], 0, Path(store_dir), False),
        ]
        rows = []
        for cold in [False] if args.skip_cold else [False, True]:
            label = "cold" if cold else "warm"
            for name, cmd, expect, cwd, nothing in cases:
                s, floor, ratio = measure(name, cmd, env, args.runs, cold, expect, cwd, nothing)
                target = TARGETS_S[name]
                rows.append(
                    {
                        "case": name,
                        "cache": label,
                        "median_s": s,
                        "floor_s": floor,
                        "ratio": ratio,
                        "target_s": target,
                        "met": s <= target if not cold else None,
                    }
                )
                print(f"{label:4} {name:18} {s:6.2f} s (floor {floor:.2f} s)", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"runs": args.runs, "cpus": os.cpu_count(), "load_1min": load, "rows": rows}, indent=1))
        return
    print(f"median of {args.runs} runs; {os.cpu_count()} CPUs, 1-min load {load:.1f}; targets on warm medians")
    print(f"| {'case':18} | cache | median s | floor s | x floor | target s | met |")
    print(f"|{'-' * 20}|-------|----------|---------|---------|----------|-----|")
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(
            f"| {r['case']:18} | {r['cache']:5} | {r['median_s']:8.2f} | {r['floor_s']:7.2f} | {r['ratio']:7.1f} | "
            f"{r['target_s']:8} | {met:3} |"
        )


if __name__ == "__main__":
    main()
