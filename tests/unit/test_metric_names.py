"""Metric names, their directions and "best first" ranking, written once (trainers/metric_names.py)."""

import math
import subprocess
import sys

import pytest

from orchestrator.results import SweepResult, TrialSummary
from trainers import metric_names
from trainers.metric_names import DIRECTION, best, best_first, side_columns


def test_best_first_ranks_by_direction_and_puts_missing_nan_and_inf_last_in_their_order():
    """Lower first for min, higher first for max; rows without a finite number keep their order, last."""
    rows = [
        {"id": "nan", "fid": math.nan},
        {"id": "b", "fid": 3.0},
        {"id": "none", "fid": None},
        {"id": "a", "fid": 1.0},
        {"id": "missing"},
        {"id": "inf", "fid": math.inf},
        {"id": "text", "fid": "7"},
        {"id": "c", "fid": 5.0},
    ]
    assert [r["id"] for r in best_first(rows, "fid", "min")] == ["a", "b", "c", "nan", "none", "missing", "inf", "text"]
    assert [r["id"] for r in best_first(rows, "fid", "max")] == ["c", "b", "a", "nan", "none", "missing", "inf", "text"]


def test_best_is_the_first_of_equals_and_none_without_a_finite_value():
    """best() agrees with best_first's head, and a sweep where nothing scored has no best."""
    rows = [{"id": 1, "m": 2.0}, {"id": 2, "m": 2.0}, {"id": 3, "m": 1.0}]
    assert best(rows, "m", "max")["id"] == 1
    assert best(rows, lambda r: r["m"], "min")["id"] == 3
    assert best([{"m": math.nan}, {}], "m", "min") is None
    assert best([], "m", "min") is None


def test_a_mode_other_than_min_or_max_is_refused_with_what_to_write():
    with pytest.raises(ValueError, match="write min .* or max"):
        best_first([{"m": 1}], "m", "lowest")


def test_sweep_result_leaderboard_and_best_rank_with_the_helper():
    """SweepResult ranks through best_first: the NaN trial last, the best one first."""
    trials = [
        TrialSummary(tid, None, "done", {}, {"mix_score": v}, 10)
        for tid, v in (("t0", 0.2), ("t1", math.nan), ("t2", 0.7), ("t3", 0.5))
    ]
    result = SweepResult("s", "e", "0", "p", "sqlite://", "/tmp", "mix_score", "max", 1.0, None, trials)
    assert [t.trial_id for t in result.leaderboard()] == ["t2", "t3", "t0", "t1"]
    assert result.best.trial_id == "t2"


def test_the_spec_tables_are_the_ones_written_here_with_their_directions_unchanged():
    """search_spaces.spec re-exports these tables (one copy), and each is what it was before the move."""
    from search_spaces import spec

    for name in (
        "IMAGE_METRICS",
        "CONDITIONAL_METRICS",
        "STACKED_METRICS",
        "MIXTURE_METRICS",
        "CLASSIFIER_METRICS",
        "FEATURE_METRICS",
        "BCE_ONLY_METRICS",
    ):
        assert getattr(spec, name) is getattr(metric_names, name), name
    assert metric_names.IMAGE_METRICS == {
        "fid": "min",
        "loss_g": "min",
        "loss_d": "min",
        "d_x": "max",
        "d_g_z": "max",
        "class_coverage": "max",
        "pixel_hist": "min",
        "kid": "min",
        "inception_score": "max",
        "precision": "max",
        "recall": "max",
        "coverage": "max",
    }
    assert list(metric_names.IMAGE_METRICS) == [
        "fid",
        "loss_g",
        "loss_d",
        "d_x",
        "d_g_z",
        "class_coverage",
        "pixel_hist",
        "kid",
        "inception_score",
        "precision",
        "recall",
        "coverage",
    ]
    assert metric_names.CONDITIONAL_METRICS == {**metric_names.IMAGE_METRICS, "class_match": "max"}
    assert metric_names.STACKED_METRICS == {"modes": "max", "kl": "min"}
    assert metric_names.MIXTURE_METRICS == {
        "mix_score": "max",
        "mix_balanced": "max",
        "modes": "max",
        "hq_pct": "max",
        "reverse_kl": "min",
        "loss_g": "min",
        "loss_d": "min",
    }
    assert set(metric_names.CLASSIFIER_METRICS) | set(metric_names.FEATURE_METRICS) | set(
        metric_names.BCE_ONLY_METRICS
    ) <= set(DIRECTION)


def test_side_columns_are_a_mixtures_quality_or_the_balance_signals_without_the_metric():
    assert side_columns("mix_score") == ("modes", "hq_pct", "reverse_kl")
    assert side_columns("mix_balanced") == ("modes", "hq_pct", "reverse_kl")
    assert side_columns("modes") == ("hq_pct", "reverse_kl")
    assert side_columns("fid") == ("loss_d", "loss_g", "d_x", "d_g_z")
    assert side_columns("loss_g") == ("loss_d", "d_x", "d_g_z")


def test_the_table_imports_no_torch_ray_or_mlflow():
    """The CLI reads it on every answer (issue 19's latency budget): plain Python only."""
    code = (
        "import sys\nfor m in ('torch', 'ray', 'mlflow', 'pydantic'): sys.modules[m] = None\n"
        "import trainers.metric_names as t\nprint(t.best_first([{'m': 2}, {'m': 1}], 'm', 'min')[0]['m'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
