"""Quality gates: conditions on the best trial's metrics, for CI."""

import math

import pytest

from orchestrator.gate import GateError, evaluate, parse
from orchestrator.sweep import SweepResult, TrialSummary
from search_spaces.loader import spec_from_text

MNIST = spec_from_text("name: t\n")


def result(*fids):
    trials = [
        TrialSummary(f"t{i}", f"r{i}", "done", {}, {"fid": f, "class_coverage": 10.0}, 100) for i, f in enumerate(fids)
    ]
    return SweepResult("s", "e", "1", "p", "sqlite:///x", "/tmp", "fid", "min", 1.0, None, trials)


def test_conditions_hold_on_the_best_trial():
    gate = evaluate(parse(["fid<30", "class_coverage>=9"], MNIST), result(45.0, 28.5))
    assert gate["passed"] and gate["best_trial"] == "t1"
    assert gate["conditions"] == [
        {"require": "fid<30", "value": 28.5, "met": True},
        {"require": "class_coverage>=9", "value": 10.0, "met": True},
    ]


def test_one_unmet_condition_fails_the_gate():
    gate = evaluate(parse(["fid<= 20", "class_coverage==10"], MNIST), result(45.0, 28.5))
    assert not gate["passed"] and [c["met"] for c in gate["conditions"]] == [False, True]


def test_a_sweep_without_a_scored_trial_fails_every_condition():
    gate = evaluate(parse(["fid<1e9"], MNIST), result(math.nan))
    assert not gate["passed"] and gate["best_trial"] is None


@pytest.mark.parametrize(
    "text,message",
    [
        ("fid", "METRIC OP NUMBER"),
        ("fid<<3", "METRIC OP NUMBER"),
        ("modes>=24", "'modes' is not reported for data 'mnist'"),
    ],
)
def test_bad_conditions_say_what_is_allowed(text, message):
    with pytest.raises(GateError, match=message):
        parse([text], MNIST)
