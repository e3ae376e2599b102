"""Compare a sweep's trials from what MLflow holds: works on a finished sweep and a running one."""

from __future__ import annotations

import json
import math
from typing import Any

from mlflow import MlflowClient

from orchestrator import tracking

BALANCE = ("loss_d", "loss_g", "d_x", "d_g_z")
MIXTURE = ("modes", "hq_pct", "reverse_kl")


class CompareError(Exception):
    pass


def compare(tracking_uri: str, sweep: str) -> dict[str, Any]:
    """The sweep's trials, best first by the sweep's metric, with sampled values and balance metrics."""
    client = MlflowClient(tracking_uri)
    parent = tracking.find_sweep_run(client, sweep)
    if parent is None:
        raise CompareError(f"no sweep {sweep!r} in {tracking_uri}; pass the sweep id the leaderboard prints (name-YYYYmmdd-HHMMSS) or its MLflow run id")
    metric = parent.data.tags.get("ganops.metric", "fid")
    mode = parent.data.tags.get("ganops.mode", "min")
    trials = []
    for r in tracking.trial_runs(client, parent):
        m = r.data.metrics
        trials.append({
            "trial_id": r.data.tags.get(tracking.TAG_TRIAL),
            "run_id": r.info.run_id,
            "status": r.info.status,
            "sampled": json.loads(r.data.tags.get("ganops.sampled", "{}")),
            "step": int(m.get("step", 0)),
            metric: m.get(metric),
            **{k: m[k] for k in (*BALANCE, *MIXTURE) if k in m and k != metric},
            "stop_reason": r.data.tags.get(tracking.TAG_STOP),
            "stop_evidence": json.loads(r.data.tags["stop_evidence"]) if "stop_evidence" in r.data.tags else None,
        })
    sign = 1 if mode == "min" else -1
    trials.sort(key=lambda t: (not _finite(t.get(metric)), sign * t[metric] if _finite(t.get(metric)) else 0))
    return {"sweep_id": parent.data.tags.get(tracking.TAG_SWEEP), "parent_run_id": parent.info.run_id, "status": parent.info.status,
            "metric": metric, "mode": mode, "trials": trials}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
