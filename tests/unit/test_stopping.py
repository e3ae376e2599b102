"""Balance rules: pure functions of a trial's eval history, tested without Ray."""

import math

import pytest

from orchestrator.stopping import BalanceStopper, judge
from search_spaces.spec import Stopping

BALANCED = {"loss_d": 1.386, "loss_g": 0.693, "d_x": 0.5, "d_g_z": 0.5, "grad_norm_d": 5.0, "grad_norm_g": 3.0, "class_coverage": 10}


def history(*overrides, start=100, every=100):
    return [{**BALANCED, "step": start + i * every, **o} for i, o in enumerate(overrides)]


def test_balanced_trial_is_never_stopped():
    """A trial sitting at equilibrium (D = 0.5, BCE terms ln 2) runs on."""
    assert judge(history(*[{}] * 10), Stopping(), "fid", "min") is None


def test_non_finite_loss_stops_at_once_as_divergence():
    """One NaN loss is enough."""
    v = judge(history({}, {"loss_g": math.nan}), Stopping(), "fid", "min")
    assert v.rule == "divergence" and math.isnan(v.evidence["loss_g"])
    assert judge(history({"diverged": 1.0}), Stopping(), "fid", "min").rule == "divergence"


def test_d_overpowering_g_needs_patience():
    """D(x) -> 1 and G's loss high (geometric-mean D(G(z)) near 0): stopped after `patience`
    evals, not before, whether G's loss climbs or drifts down."""
    bad = [{"d_x": 0.99, "d_g_z": 0.01, "loss_g": 9.0 - i} for i in range(3)]
    assert judge(history(*bad[:2]), Stopping(), "fid", "min") is None
    v = judge(history(*bad), Stopping(), "fid", "min")
    assert v.rule == "d_overpowers" and v.evidence["evals"] == 3
    assert v.evidence["d_g_z_geo"] == pytest.approx(math.exp(-7.0)) and v.evidence["loss_g"] == 7.0


def test_d_overpowering_in_bursts_is_caught_by_the_geometric_mean():
    """A D that rejects most fakes with certainty and passes a few: arithmetic D(G(z)) 0.1,
    but G's loss 25 (measured at Adam lr_d 0.1) - that is D overpowering G."""
    bursts = [{"d_x": 0.96, "d_g_z": 0.1, "loss_g": 25.0}] * 3
    assert judge(history(*bursts), Stopping(), "fid", "min").rule == "d_overpowers"


def test_d_overpowering_but_g_recovering_is_spared():
    """G fighting back brings its loss under -ln 0.05 = 3.0 within the window: keep the trial."""
    recovering = [{"d_x": 0.99, "d_g_z": 0.02, "loss_g": g} for g in (6.0, 4.0, 2.5)]
    assert judge(history(*recovering), Stopping(), "fid", "min") is None
    unsure_d = [{"d_x": 0.9, "d_g_z": 0.01, "loss_g": 6.0}] * 3  # D not sure of the reals
    assert judge(history(*unsure_d), Stopping(), "fid", "min") is None


def test_d_fooled():
    """G's loss near 0 with D calling fakes real."""
    v = judge(history(*[{"loss_g": 0.01, "d_g_z": 0.99}] * 3), Stopping(), "fid", "min")
    assert v.rule == "d_fooled"


def test_gradient_explosion_threshold_and_patience():
    """Norms above the threshold for `patience` evals stop the trial; one spike does not."""
    s = Stopping.model_validate({"gradient_explosion": {"threshold": 100, "patience": 2}})
    assert judge(history({"grad_norm_d": 500}, {"grad_norm_d": 50}), s, "fid", "min") is None
    assert judge(history({"grad_norm_d": 500}, {"grad_norm_d": 600}), s, "fid", "min").rule == "gradient_explosion"


def test_mode_collapse_by_class_coverage_and_warmup():
    """Few classes for `patience` evals after the warm-up is collapse."""
    s = Stopping.model_validate({"mode_collapse": {"min_classes": 5, "after_step": 300, "patience": 2}})
    collapsed = [{"class_coverage": 2}] * 2
    assert judge(history(*collapsed), s, "fid", "min") is None  # steps 100, 200: warm-up
    assert judge(history(*collapsed, start=300), s, "fid", "min").rule == "mode_collapse"


def test_mode_collapse_on_mixtures_when_enabled():
    """Mixtures use modes captured; off by default."""
    h = [{"modes": 2, "step": 100}, {"modes": 2, "step": 200}]
    assert judge(h, Stopping(), "mix_score", "max") is None
    s = Stopping.model_validate({"mode_collapse": {"min_modes": 10, "after_step": 0}})
    assert judge(h, s, "mix_score", "max").rule == "mode_collapse"


def test_plateau_respects_mode():
    """No improvement over the best for `patience` evals."""
    s = Stopping.model_validate({"plateau": {"patience": 2}})
    assert judge(history({"fid": 100}, {"fid": 90}, {"fid": 80}), s, "fid", "min") is None
    assert judge(history({"fid": 100}, {"fid": 90}, {"fid": 95}, {"fid": 91}), s, "fid", "min").rule == "plateau"
    assert judge(history({"mix_score": 0.1}, {"mix_score": 0.3}, {"mix_score": 0.2}, {"mix_score": 0.25}), s, "mix_score", "max").rule == "plateau"


def test_rules_can_be_switched_off():
    """A rule set to null never fires."""
    s = Stopping.model_validate({"d_fooled": None})
    assert judge(history(*[{"loss_g": 0.01, "d_g_z": 0.99}] * 3), s, "fid", "min") is None


def test_stopper_keeps_per_trial_history_and_verdict():
    """The Tune adapter tracks each trial apart and remembers why it stopped one."""
    st = BalanceStopper(Stopping(), "fid", "min")
    assert st("a", {**BALANCED, "step": 1}) is False
    assert st("b", {**BALANCED, "step": 1, "loss_d": math.inf}) is True
    assert "b" in st.verdicts and "a" not in st.verdicts
    assert st("a", {"no_step": 1}) is False and not st.stop_all()
