"""Bench: where a sweep's CPU goes, process by process (the processes a local sweep starts).

Runs `ganops sweep SPEC --json` as a user would (a fresh process, a fresh MLflow store and Ray
storage in a temp dir) and samples every new process's CPU time (/proc/PID/stat, user +
system) every 0.2 s until it ends. Ray names its worker processes after what they run
(`ray::RayTrainWorker`, `ray::TrainController`, ...), so the table says which part of Ray
Tune, Ray Train, Ray itself, MLflow or ganops each CPU-second went to. A process that exits
between two samples loses at most its last 0.2 s. Linux only.

On a machine with few cores, CPU spent outside training is time the trials wait for: this is
where a sweep's start-up and per-trial overhead (bench/sweep_overhead.py) come from.

    python bench/sweep_processes.py search_spaces/dcgan.yaml --set sweep.num_samples=1 \\
        --set trainer.steps=100 --set trainer.eval_every=100
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
# The local Ray's own daemons, by a word in their command line (checked in this order: a Ray
# worker's command line names the raylet, and the raylet's names default_worker.py).
DAEMONS = ("default_worker.py", "gcs_server", "dashboard/agent.py", "runtime_env/agent", "log_monitor", "monitor.py")


def kind(cmdline: str) -> str:
    if not cmdline:
        return "?"  # a zombie, or a process not yet exec'd
    if cmdline.startswith("ray::"):
        return cmdline.split()[0].split(".")[0]  # ray::ClassName(.method)
    if "orchestrator.cli" in cmdline:
        return "ganops sweep (the driver)"
    if "/raylet" in cmdline.split()[0]:
        return "raylet"
    for word in DAEMONS:
        if word in cmdline:
            return "ray worker (not yet assigned)" if word == "default_worker.py" else word
    return cmdline[:50] or "?"


def specific(name: str) -> bool:
    return name.startswith("ray::") and name != "ray::IDLE"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--json", action="store_true", help="Print the figures as JSON on stdout.")
    args = ap.parse_args()
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    seen: dict[str, tuple[str, float]] = {}  # pid -> (what it ran, CPU seconds)

    def sample() -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid in before:
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / HZ
            name, old = kind(cmdline), seen.get(pid)
            if old and (name == "?" or (specific(old[0]) and not specific(name))):
                name = old[0]  # an exited process, or a Ray worker gone idle, keeps what it ran
            seen[pid] = (name, cpu)

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GANOPS_HOME": str(Path(tmp) / "runs")}
        cmd = [sys.executable, "-m", "orchestrator.cli", "sweep", str(Path(args.spec).resolve()), "--json"]
        cmd += sum((["--set", o] for o in args.overrides), [])
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            sample()
            time.sleep(0.2)
        sample()
        wall = time.monotonic() - t0
        out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}):\n{err[-3000:]}")
    cpu, count = collections.Counter(), collections.Counter()
    for name, seconds in seen.values():
        cpu[name] += seconds
        count[name] += 1
    rows = [{"process": n, "count": count[n], "cpu_s": round(s, 1)} for n, s in cpu.most_common()]
    report = {
        "spec": args.spec,
        "overrides": args.overrides,
        "wall_s": round(wall, 1),
        "cpu_s": round(sum(cpu.values()), 1),
        "cpus": os.cpu_count(),
        "processes": sum(count.values()),
        "by_process": rows,
        "trials": len(json.loads(out)["trials"]),
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(
        f"{report['trials']} trial(s): {report['wall_s']} s wall, {report['cpu_s']} CPU-s in "
        f"{report['processes']} processes on {report['cpus']} CPUs"
    )
    print("| process | count | CPU s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['process']} | {r['count']} | {r['cpu_s']} |")


if __name__ == "__main__":
    main()
