"""Live progress of a sweep on stderr, and the trial-end bookkeeping Tune tells us about.

A Tune `Callback` runs in the sweep's driver process: it sees every trial's reports and how
each trial ended, so it both draws the live table and closes MLflow runs that Tune stopped
(their driver was killed before it could close them itself).

On a terminal the table is a rich Live display. When stderr is a file or a CI log (a Live
display there writes nothing readable until the end), each trial event is one plain line,
flushed at once, with a summary line every GANOPS_PROGRESS_EVERY_S seconds (default 30):

    [   12s] trial 3f2a1_00000 started: lr_g 0.0002, beta1 0.5
    [   45s] trial 3f2a1_00000 eval step 200/1000: fid 87.3
    [   60s] sweep: 2 running, 0 done, 0 stopped, 0 failed, 6 pending; best fid 87.3 (3f2a1_00000)
    [   90s] trial 3f2a1_00001 stopped at step 400/1000: fid 210; d_overpowers: ...
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import Any

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator import tracking
from orchestrator.format import STATES, event_line, fmt, plain_text, safe_text, summary_line
from orchestrator.results import Standings
from trainers.best_eval import BEST_STEP, best_key
from trainers.metric_names import is_score

log = logging.getLogger(__name__)
SHEET_EVERY_S = 60.0  # refresh the parent run's contact sheet at most this often (and at each trial end)
TABLE_ROWS = 20  # the live table shows the best this many trials and counts the rest: a terminal holds no more


def progress_every_s() -> float:
    """Seconds between summary lines without a terminal: GANOPS_PROGRESS_EVERY_S, default 30."""
    raw = os.environ.get("GANOPS_PROGRESS_EVERY_S", "30")
    try:
        every = float(raw)
    except ValueError:
        every = -1.0
    if not (math.isfinite(every) and every > 0):
        log.warning("GANOPS_PROGRESS_EVERY_S=%r is not a positive number of seconds; using 30", raw)
        return 30.0
    return every


def _last_error_line(trial) -> str | None:
    """The last line of the trial's error (the root cause, under Ray's traceback), if Tune kept it."""
    try:
        error = trial.get_error()
    except Exception:  # noqa: BLE001 - a progress line must never cost the sweep anything
        return None
    lines = [ln.strip() for ln in str(error or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else None


class SweepProgress(Callback):
    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        steps: int,
        searched: list[str],
        tracking_uri: str,
        console: Console | None,
        experiment_ids: list[str],
        stopper=None,
        parent_run_id: str | None = None,
    ):
        self.stopper = stopper
        self.parent_run_id = parent_run_id
        self._sheet_at = time.monotonic()
        self._sheet_thread: threading.Thread | None = None
        self._sheet_again = False  # a trial ended while a sheet was being drawn: draw once more
        self.metric, self.mode, self.steps, self.searched = metric, mode, steps, searched
        self.tracking_uri, self.experiment_ids = tracking_uri, experiment_ids
        self.console = console
        self.live: Live | None = None
        self.rows: dict[str, dict[str, Any]] = {}
        # Kept as events arrive, so that no report costs more in a bigger sweep (bench/driver_scale.py).
        self.counts: dict[str, int] = dict.fromkeys(STATES, 0)
        self.standings = Standings(mode)
        self.started = time.monotonic()
        self.first_result_s: float | None = None
        self.plain = False  # True: plain lines (stderr is not a terminal) instead of the Live table
        self.every_s = progress_every_s()
        self._summary_at = self.started

    def __getstate__(self):
        # Tune pickles its callbacks with the experiment state; a terminal is not state.
        state = self.__dict__.copy()
        state["console"] = state["live"] = state["_sheet_thread"] = None
        return state

    # -- Tune hooks ---------------------------------------------------------------------
    def setup(self, **info):
        if self.console is None:
            return
        self.plain = not self.console.is_terminal
        if not self.plain:
            # Drawn by Live's own thread at 2 Hz, not once per report: a report only updates rows.
            self.live = Live(console=self.console, refresh_per_second=2, transient=False, get_renderable=self._render)
            self.live.start()

    def on_step(self, iteration, trials, **info):
        if self.plain and time.monotonic() - self._summary_at >= self.every_s:
            self._summary_at = time.monotonic()
            self._say(summary_line(self._summary_at - self.started, self._counts(), self.metric, self.best()))

    def on_trial_start(self, iteration, trials, trial, **info):
        row = self._row(trial)
        self._set_state(row, "running")
        self._event(
            trial.trial_id, "started", detail=", ".join(f"{k} {fmt(v)}" for k, v in row["config"].items()) or None
        )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.first_result_s is None:
            self.first_result_s = time.monotonic() - self.started
        row = self._row(trial)
        self._set_state(row, "running")
        row["step"] = result.get("step")
        if self.metric in result:
            row["metric"] = result[self.metric]
            # A trial stands by its best eval (trainers/best_eval.py reports it with every eval), as the
            # sweep's result, leaderboard and gate judge it; a trial from before best_<metric> by its latest.
            best, at = result.get(best_key(self.metric)), result.get(BEST_STEP)
            if not is_score(best):
                best, at = row["metric"], row["step"]
            row["best"], row["best_step"] = best, at
            self.standings.update(trial.trial_id, best)
            later = is_score(at) and at != row["step"] and is_score(best)
            self._event(
                trial.trial_id,
                "eval",
                step=row["step"],
                value=row["metric"],
                detail=f"best {fmt(best)} at step {int(at)}" if later else None,
            )
        self._refresh_sheet()

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._row(trial)
        # A trial that trained all its steps is done, even if a rule fired at its last eval
        # (that verdict stopped nothing).
        done = (trial.last_result or {}).get("step", 0) >= self.steps
        verdict = self.stopper.verdicts.get(trial.trial_id) if self.stopper and not done else None
        if self.stopper:
            self.stopper.forget(trial.trial_id)  # an ended trial reports no more
        self._set_state(row, "done" if done else "stopped")
        if verdict is not None:
            row["stop_reason"] = verdict.describe()
        if not done:  # stopped by a balance rule or the scheduler: the sweep closes its run
            status = "FAILED" if verdict is not None and verdict.rule == "divergence" else "KILLED"
            self._close_run(trial.trial_id, status, verdict.rule if verdict else "scheduler", verdict)
        self._event(
            trial.trial_id,
            row["state"],
            step=(trial.last_result or {}).get("step"),
            value=row.get("metric"),
            detail=None if done else row.get("stop_reason", "by the scheduler"),
        )
        self._refresh_sheet(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._set_state(self._row(trial), "failed")
        self._close_run(trial.trial_id, "FAILED", "error")
        self._event(
            trial.trial_id, "failed", step=(trial.last_result or {}).get("step"), detail=_last_error_line(trial)
        )

    def on_experiment_end(self, trials, **info):
        if self.plain:
            self._say(summary_line(time.monotonic() - self.started, self._counts(), self.metric, self.best()))
        self.close()

    # -- helpers ------------------------------------------------------------------------
    def close(self):
        self._sheet_again = False
        if self._sheet_thread is not None:
            self._sheet_thread.join(timeout=120)  # the sweep's final sheet must not be overwritten by a late one
        if self.live is not None:
            self.live.stop()  # draws the table a last time
            self.live = None

    def _say(self, line: str) -> None:
        """One plain line on the console's stream, flushed now (a CI log shows it while the sweep runs).
        Without control characters: a trial's error or a searched string must not drive the terminal."""
        if self.plain and self.console is not None:
            self.console.file.write(plain_text(line) + "\n")
            self.console.file.flush()

    def _event(
        self, trial_id: str, event: str, *, step: int | None = None, value: Any = None, detail: str | None = None
    ) -> None:
        if self.plain:
            self._say(
                event_line(
                    time.monotonic() - self.started,
                    trial_id,
                    event,
                    step=step,
                    steps=self.steps,
                    metric=self.metric if value is not None else None,
                    value=value,
                    detail=detail,
                )
            )

    def _counts(self) -> dict[str, int]:
        return dict(self.counts)

    def _row(self, trial) -> dict[str, Any]:
        row = self.rows.get(trial.trial_id)
        if row is None:
            row = self.rows[trial.trial_id] = {
                "config": {k: trial.config.get(k) for k in self.searched},
                "state": "pending",
            }
            self.counts["pending"] += 1
            self.standings.update(trial.trial_id)
        return row

    def _set_state(self, row: dict[str, Any], state: str) -> None:
        self.counts[row["state"]] -= 1
        self.counts[state] += 1
        row["state"] = state

    def _close_run(self, trial_id: str, status: str, reason: str, verdict=None) -> None:
        from mlflow import MlflowClient

        from trainers.spool import is_outage

        client = MlflowClient(self.tracking_uri)
        try:
            run_id = self._posted_run(trial_id) or tracking.find_trial_run(client, trial_id, self.experiment_ids)
            if not run_id:
                return
            if verdict is not None:  # the evidence, for the person asking "why was this stopped?"
                client.set_tag(run_id, "stop_evidence", json.dumps(verdict.evidence, default=float))
            if client.get_run(run_id).info.status == "RUNNING" or verdict is not None:
                tracking.end_run(client, run_id, status, reason)
        except Exception as e:
            if not is_outage(e):
                raise
            # The tracking server is away: the sweep goes on; its end (or `ganops resume`) says so.
            log.warning("could not close trial %s's run (%s): MLflow did not answer", trial_id, status)

    def _posted_run(self, trial_id: str) -> str | None:
        """The run id the trial's driver posted on the board (orchestrator/board.py), if any."""
        board = getattr(self.stopper, "board", None)
        if board is None:
            return None
        import ray

        try:
            return ray.get(board.run.remote(trial_id), timeout=30)
        except Exception as e:  # noqa: BLE001 - the search by tag still finds it
            log.warning("trial board did not answer for trial %s's run (%s); searching MLflow", trial_id, e)
            return None

    def _refresh_sheet(self, force: bool = False) -> None:
        """Rebuild the parent run's contact sheet in the background, so a person watching the
        MLflow UI sees the sweep's state; at most every SHEET_EVERY_S, and at each trial end
        (a trial end that finds a drawing under way asks for one more after it)."""
        if self.parent_run_id is None:
            return
        if self._sheet_thread is not None and self._sheet_thread.is_alive():
            self._sheet_again = self._sheet_again or force
            return
        if not force and time.monotonic() - self._sheet_at < SHEET_EVERY_S:
            return
        self._sheet_at = time.monotonic()
        self._sheet_thread = threading.Thread(target=self._log_sheet, daemon=True, name="contact-sheet")
        self._sheet_thread.start()

    def _ranked_trial_ids(self, n: int) -> list[str]:
        """The best `n` trials' ids, best first (the contact sheet's rows)."""
        return self.standings.top(n)

    def _log_sheet(self) -> None:
        if self.parent_run_id is None:  # no sweep run to draw the sheet on
            return
        from mlflow import MlflowClient

        from orchestrator.contact_sheet import MAX_ROWS, log_contact_sheet

        while True:
            self._sheet_again = False
            try:
                client = MlflowClient(self.tracking_uri)
                run_ids = tracking.trial_run_ids(
                    client, self.experiment_ids[0], self.parent_run_id
                )  # one search, not one per trial
                trials = [(tid, run_ids[tid]) for tid in self._ranked_trial_ids(MAX_ROWS) if tid in run_ids]
                log_contact_sheet(client, self.parent_run_id, trials)
            except Exception:  # noqa: BLE001 - a picture must never cost the sweep anything
                log.debug("contact sheet refresh failed", exc_info=True)
            if not self._sheet_again:
                return

    def best(self) -> tuple[str, float] | None:
        return self.standings.best()

    def _render(self):
        """The live table: a head line with the counts and the best, then the best TABLE_ROWS
        trials and how many more there are (a table of every trial redrawn at 2 Hz cost the
        driver more the bigger the sweep, and a terminal shows a screenful anyway)."""
        counts = self._counts()
        best = self.best()
        head = Text.assemble(
            ("sweep ", "bold"),
            f"{time.monotonic() - self.started:5.0f}s  ",
            (f"running {counts['running']}", "cyan"),
            "  ",
            (f"done {counts['done']}", "green"),
            "  ",
            (f"stopped {counts['stopped']}", "yellow"),
            "  ",
            (f"failed {counts['failed']}", "red"),
            "  ",
            plain_text(f"best {self.metric} " + (f"{fmt(best[1])} ({best[0]})" if best else "-")),
        )
        table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
        # Cells are rich markup: every string from a spec or a trial goes through safe_text.
        table.add_column("trial")
        for k in self.searched:
            table.add_column(safe_text(k))
        table.add_column("step", justify="right")
        table.add_column(safe_text(self.metric), justify="right")
        table.add_column("best (at step)", justify="right")
        table.add_column("state")
        shown = self._ranked_trial_ids(TABLE_ROWS)
        for tid in shown:
            r = self.rows[tid]
            state = r["state"] + (f": {r['stop_reason']}" if r.get("stop_reason") else "")
            table.add_row(
                safe_text(tid),
                *[safe_text(fmt(r["config"].get(k))) for k in self.searched],
                f"{r.get('step') or 0}/{self.steps}",
                fmt(r.get("metric", "-")),
                f"{fmt(r['best'])} ({int(r['best_step'])})"
                if is_score(r.get("best_step"))
                else fmt(r.get("best", "-")),
                safe_text(state),
            )
        more = len(self.rows) - len(shown)
        if more > 0:
            return Group(
                head,
                table,
                Text(f"... and {more} more trial(s), best first above; `ganops compare` lists them all", style="dim"),
            )
        return Group(head, table)
