"""Bench: what losing a worker node mid-trial costs (a spot reclaim without notice).

The scenario of tests/integration/test_node_loss_integration.py: a multi-node Ray on this
machine (`ray.cluster_utils.Cluster`, the head holds the trial driver), S3 storage on moto's
server, the workers' node removed once the trial has logged `--kill-after` steps, a new node
added a second later. Reports the steps trained twice (kill point minus the checkpoint it
resumed from; at most one eval interval) and the seconds from the kill until the trial logged
a step beyond the kill point (restart + re-training those steps + the next eval).

    python bench/node_loss.py --steps 4000 --eval-every 500 --kill-after 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_node_loss_integration import run_node_loss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--kill-after", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rows = []
    for i in range(a.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            r = run_node_loss(Path(tmp), steps=a.steps, eval_every=a.eval_every, kill_after_step=a.kill_after)
        if r["returncode"] != 0:
            sys.exit(f"run {i}: the sweep failed:\n{r['stderr']}")
        resumed = int(r["run"].data.tags["ganops.resumed_from_step"])
        ok = r["steps"] == list(range(a.eval_every, a.steps + 1, a.eval_every))
        rows.append(
            {
                "killed_at": r["step_at_kill"],
                "resumed_from": resumed,
                "steps_redone": r["step_at_kill"] - resumed,
                "seconds_to_progress": r["seconds_to_progress"],
                "every_step_once": ok,
                "cost_usd": r["result"]["cost_usd"],
            }
        )
        print(f"run {i}: {rows[-1]}", flush=True)
    secs = [x["seconds_to_progress"] for x in rows]
    print(
        "\n| runs | steps redone (max) | eval interval | seconds from "
        "kill to new progress (median, max) | every eval step once |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {len(rows)} | {max(x['steps_redone'] for x in rows)} | {a.eval_every} | {statistics.median(secs):.1f}, "
        f"{max(secs):.1f} | {all(x['every_step_once'] for x in rows)} |"
    )


if __name__ == "__main__":
    main()
