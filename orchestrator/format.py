"""How numbers and sweep events read as plain text: table cells, and the progress lines a sweep
writes when stderr is a file or a CI log rather than a terminal. Pure functions, no Ray."""

from __future__ import annotations

import math
from typing import Any

STATES = ("pending", "running", "done", "stopped", "failed")


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e4) and v != 0 else f"{v:.4g}"
    return str(v)


def event_line(
    elapsed_s: float,
    trial_id: str,
    event: str,
    *,
    step: int | None = None,
    steps: int | None = None,
    metric: str | None = None,
    value: Any = None,
    detail: str | None = None,
) -> str:
    """One trial event as one line, e.g. `[  45s] trial 3f2a1_00000 eval step 200/1000: fid 87.3`.

    `event`: started, eval, done, stopped or failed; `detail`: the sampled values (started), the
    stop reason (stopped) or the error (failed)."""
    where = "" if step is None else f" step {step}" + (f"/{steps}" if steps else "")
    if event in ("done", "stopped", "failed") and where:
        where = " at" + where
    parts = [
        p for p in (f"{metric} {fmt(value)}" if metric is not None and value is not None else "", detail or "") if p
    ]
    return f"[{elapsed_s:5.0f}s] trial {trial_id} {event}{where}" + (": " + "; ".join(parts) if parts else "")


def summary_line(elapsed_s: float, counts: dict[str, int], metric: str, best: tuple[str, float] | None) -> str:
    """The sweep's state in one line, e.g. `[  30s] sweep: 2 running, 3 done, ...; best fid 45.2 (3f2a1_00004)`."""
    states = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("running", "done", "stopped", "failed", "pending"))
    return f"[{elapsed_s:5.0f}s] sweep: {states}; best {metric} " + (f"{fmt(best[1])} ({best[0]})" if best else "-")
