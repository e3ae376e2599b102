"""Population Based Training with Ray Tune's scheduler deciding and the trial acting.

Ray Tune's `PopulationBasedTraining` decides who exploits whom (quantiles on the sweep
metric every `perturbation_interval` evals) and explores the new settings (x0.8 / x1.2,
neighbouring choices, resampling). Its own exploit then pauses the trial and restarts it
from the donor's Tune checkpoint. That does not fit a trial whose driver is blocked in
`TorchTrainer.fit()`: pausing kills the driver (its workers' CPUs leaked, see
orchestrator/board.py), and the checkpoints are Ray Train's, not Tune's.

So here the exploit is an order on the trial board: the donor's newest Ray Train
checkpoint and the explored settings. The trial's workers load it at their next poll and
go on in the same processes (trainers/loop.py), which also saves a ~15 s TorchTrainer
restart per exploit. The trial keeps its own step count, RNG and MLflow run; the change is
recorded there (tags `pbt.exploit.N`, metrics `hp_<setting>`), since MLflow params are
write-once. Works the same for multi-worker trials (rank 0 broadcasts the order).
"""

from __future__ import annotations

import logging
import random

from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.tune.schedulers import PopulationBasedTraining

from orchestrator.board import HoldsBoard

log = logging.getLogger(__name__)


def checkpoint_uri(path: str | None, storage: str) -> str | None:
    """Ray Train reports a checkpoint's path within its storage filesystem; workers on
    another node need the full URI for remote storage (s3://bucket/... from bucket/...)."""
    if not path:
        return None
    if "://" in storage and "://" not in path:
        return f"{storage.split('://', 1)[0]}://{path}"
    return path


class InTrialPBT(HoldsBoard, PopulationBasedTraining):
    """Tune's PBT whose exploit is carried out by the running trial (see module doc)."""

    def __init__(self, *, board, storage: str, steps: int, **kwargs):
        super().__init__(synch=False, **kwargs)  # synchronous PBT pauses trials; we never pause
        self.board, self.storage, self.steps = board, storage, steps

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        # Async PBT pauses a trial to let waiting ones run; pausing kills our driver. The
        # waiting trials start as running ones finish instead.
        return self.CONTINUE if decision == self.PAUSE else decision

    def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile):
        state = self._trial_state[trial]
        # A top trial's checkpoint is the one its workers wrote with this very result.
        state.last_checkpoint = (
            checkpoint_uri(state.last_result.get(CHECKPOINT_PATH_KEY), self.storage)
            if trial in upper_quantile
            else None
        )
        if trial not in lower_quantile or not upper_quantile:
            return
        if state.last_result.get("step", 0) >= trial.config.get("steps", self.steps):
            return  # its last eval: nothing left to train with new weights
        donor = random.choice(upper_quantile)
        if not self._trial_state[donor].last_checkpoint:
            log.info("pbt: %s has no checkpoint yet; %s keeps its own weights", donor.trial_id, trial.trial_id)
            return
        self._exploit(tune_controller, trial, donor)

    def _exploit(self, tune_controller, trial, donor):
        from ray.tune.schedulers.pbt import _make_experiment_tag

        state, donor_state = self._trial_state[trial], self._trial_state[donor]
        new_config, _ = self._get_new_config(trial, donor)
        settings = {k: new_config[k] for k in self._hyperparam_mutations}
        order = {
            "donor": donor.trial_id,
            "checkpoint": donor_state.last_checkpoint,
            "donor_step": donor_state.last_result.get("step"),
            "config": settings,
        }
        log.info(
            "pbt: %s exploits %s (step %s), explores %s", trial.trial_id, donor.trial_id, order["donor_step"], settings
        )
        self.board.exploit.remote(trial.trial_id, order)
        trial.set_experiment_tag(_make_experiment_tag(state.orig_tag, new_config, self._hyperparam_mutations))
        trial.set_config(new_config)  # what Tune (and the leaderboard) report as the trial's config
        self._num_perturbations += 1
        # The trial keeps its own clock (evals it has run), unlike Tune's exploit, which takes
        # the donor's: its step count is its compute budget and its MLflow steps stay unique.


def build_pbt(spec, board, storage: str, param_space: dict) -> InTrialPBT:
    p = spec.sweep.pbt
    return InTrialPBT(
        board=board,
        storage=storage,
        steps=spec.trainer.steps,
        time_attr="training_iteration",  # evals
        require_attrs=False,  # a diverged trial's last report has no metric
        perturbation_interval=p.perturbation_interval,
        burn_in_period=p.burn_in,
        quantile_fraction=p.quantile_fraction,
        resample_probability=p.resample_probability,
        hyperparam_mutations={k: _mutation_space(param_space[k]) for k in spec.pbt_mutations},
        custom_explore_fn=Clamp(
            {
                k: spec.search[k].candidates()
                for k in spec.pbt_mutations
                if spec.search[k].kind not in ("choice", "grid")
            }
        ),
    )


def _mutation_space(domain):
    """PBT's mutation space for a setting: a list for choices and grids (PBT then moves to a
    neighbouring value), the Tune domain for ranges (PBT multiplies by 0.8 or 1.2)."""
    if isinstance(domain, dict) and "grid_search" in domain:
        return list(domain["grid_search"])
    if hasattr(domain, "categories"):
        return list(domain.categories)
    return domain


class Clamp:
    """PBT's x1.2 can leave a setting's searched range (lr above its max, real_label > 1):
    clamp each perturbed range setting back into [low, high]."""

    def __init__(self, bounds: dict[str, list[float]]):
        self.bounds = bounds

    def __call__(self, config: dict) -> dict:
        for key, (low, high) in self.bounds.items():
            config[key] = min(max(config[key], low), high)
        return config
