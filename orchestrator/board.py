"""The trial board: how the sweep gives orders to running trials (stop; PBT exploit).

Tune's own ways of acting on a trial (stop, pause) go through the trial's driver, and ours
is blocked in `TorchTrainer.fit()`: force-killing it leaked its workers' CPUs (measured: the
next trials waited 900 s for them). So the sweep posts orders on this board, a named Ray
actor, and each trial's rank-0 worker polls it every few iterations and acts itself: it
leaves its loop (stop) or loads the donor's checkpoint and new settings (exploit), and
broadcasts the order so every worker of the trial does the same at the same step.
"""

from __future__ import annotations

from typing import Any

STOP = "stop"


class TrialBoard:
    def __init__(self) -> None:
        self.stopped: set[str] = set()
        self.exploits: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, str] = {}  # trial id -> its MLflow run id, posted by the trial's driver

    def set_run(self, trial_id: str, run_id: str) -> None:
        self.runs[trial_id] = run_id

    def run(self, trial_id: str) -> str | None:
        """The trial's MLflow run id, so the sweep closes a stopped trial's run without a search
        by tag (one per stop, each scanning the store's tags: it grew with the sweep)."""
        return self.runs.get(trial_id)

    def stop(self, trial_id: str) -> None:
        self.stopped.add(trial_id)

    def exploit(self, trial_id: str, order: dict[str, Any]) -> None:
        """Queue a PBT exploit: {"donor", "checkpoint" (URI of the donor's Ray Train checkpoint),
        "config" (new settings)}. A newer order replaces one the trial has not picked up yet."""
        self.exploits[trial_id] = order

    def poll(self, trial_id: str) -> str | dict[str, Any] | None:
        """STOP, an exploit order (handed out once), or None."""
        if trial_id in self.stopped:
            return STOP
        return self.exploits.pop(trial_id, None)


def start_board(sweep_id: str):
    """(name, handle) of a fresh board for this sweep; workers find it by name."""
    import ray

    from infra.aws.launcher import DRIVER_RESOURCE

    name = f"ganops-board-{sweep_id}"
    # On a `ganops cluster` the board lives on the on-demand head with the trial drivers: on a
    # spot worker, a reclaim would take it and every trial's next poll would fail.
    pin = {DRIVER_RESOURCE: 0.01} if ray.cluster_resources().get(DRIVER_RESOURCE, 0) >= 1 else {}
    return name, ray.remote(num_cpus=0)(TrialBoard).options(name=name, resources=pin).remote()


class HoldsBoard:
    """For the Tune objects that hold the board (stopper, schedulers): Tune pickles them into
    the experiment state, and a handle to a dead sweep's actor cannot be unpickled by the
    process that resumes it (`ganops resume`), which gives them its own board."""

    board = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["board"] = None
        return state
