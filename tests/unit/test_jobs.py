"""Pure parts of the Ray Jobs path: the submission id and reading the result from a job's log."""

import json

from orchestrator.jobs import parse_result, sweep_id_for
from search_spaces.loader import spec_from_text

SPEC = (
    "name: my-sweep\n"
    "trainer: {model: mlp2d, data: grid25, steps: 100, eval_every: 50}\n"
    "search:\n"
    "  lr_d: {grid: [1.0e-3]}\n"
)


def test_sweep_id_follows_the_spec_content():
    a, b = spec_from_text(SPEC), spec_from_text(SPEC)
    other = spec_from_text(SPEC.replace("steps: 100", "steps: 200"))
    assert sweep_id_for(a) == sweep_id_for(b) == f"ganops-my-sweep-{a.spec_hash[:12]}"
    assert sweep_id_for(other) != sweep_id_for(a)


def _result(metric: float) -> dict:
    return {
        "sweep_id": "s",
        "experiment": "e",
        "experiment_id": "1",
        "parent_run_id": "p",
        "tracking_uri": "sqlite:///x",
        "storage": "/x",
        "metric": "mix_score",
        "mode": "max",
        "wall_seconds": 1.0,
        "first_result_seconds": None,
        "registered_model": None,
        "best": None,
        "trials": [
            {
                "trial_id": "t1",
                "run_id": "r1",
                "status": "done",
                "config": {"lr_d": 0.001},
                "metrics": {"mix_score": metric},
                "step": 100,
                "error": None,
                "stop_reason": None,
            }
        ],
    }


def test_the_last_result_in_the_log_wins_even_after_stderr_text_on_its_line():
    log = (
        "progress...\n"
        + json.dumps(_result(0.1))
        + "\nresumed\nleaderboard without newline"
        + json.dumps(_result(0.4))
        + "\n(raylet) bye\n"
    )
    result = parse_result(log)
    assert result.best.trial_id == "t1" and result.best.metrics["mix_score"] == 0.4


def test_no_result_in_a_log_of_a_failed_job():
    assert parse_result('Traceback ...\n{"sweep_id": truncated') is None
