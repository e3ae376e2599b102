"""Every shipped spec runs: each is loaded and swept for a few steps on a real local Ray."""

import pytest
import ray

from orchestrator.api import load_spec, run_sweep
from tests.conftest import SPECS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny(path):
    """The spec as shipped, cut to one trial of 4 iterations (grids to their first value)."""
    spec = load_spec(path)
    sets = ["trainer.steps=4", "trainer.eval_every=2", "sweep.num_samples=1", "stopping.mode_collapse=null"]
    sets += [f"search.{k}.grid=[{d.grid[0]!r}]" for k, d in spec.search.items() if d.kind == "grid"]
    if spec.sweep.scheduler == "asha":
        sets.append("sweep.asha.grace_period=1")
    return load_spec(path, sets)


# CI runs one spec per search algorithm and scheduler (dcgan: random + successive halving; grid25_pbt: PBT;
# grid25_tpe_asha: optuna + ASHA). The others differ in trainer settings, which tests/unit trains
# (test_trainers_knobs, test_trainers_models); every spec validates in tests/unit. `python -m pytest` sweeps all.
CI_SPECS = {"dcgan.yaml", "grid25_pbt.yaml", "grid25_tpe_asha.yaml"}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=() if p.name in CI_SPECS else pytest.mark.long) for p in SPECS],
    ids=[p.name for p in SPECS],
)
def test_shipped_spec_sweeps(path, local_ray, ganops_home):
    """The spec's trainer, search algorithm and scheduler all run for real."""
    spec = tiny(path)
    result = run_sweep(spec)
    (t,) = result.trials
    assert t.status == "done" and t.step == 4, t
    assert spec.metric in t.metrics
