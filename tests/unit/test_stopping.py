"""Balance rules: pure functions of a trial's eval history, tested without Ray."""

import math

import pytest

from orchestrator.stopping import BalanceStopper, judge
from search_spaces.spec import Stopping

BALANCED = {
    "loss_d": 1.386,
    "loss_g": 0.693,
    "d_x": 0.5,
    "d_g_z": 0.5,
    "grad_norm_d": 5.0,
    "grad_norm_g": 3.0,
    "class_coverage": 10,
}


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


# Measured histories (hq_pct per 500-iteration eval, from step 500), MLP on grid25:
# bench/specs/grid25_bad_regions.yaml's control and the shipped grid25.yaml with rules off.
NEVER_LEARNT = [
    1.72,
    1.92,
    2.24,
    1.8,
    2.6,
    1.92,
    1.92,
    2.08,
    0.32,
    1.12,
    0.8,
    0.52,
]  # lr_g 2.7e-4: balanced losses, final mix_score 0.0015
LATE_START = [
    1.6,
    0.7,
    0.5,
    0.6,
    0.4,
    0.2,
    0.1,
    12.7,
    14.3,
    17.6,
    23.7,
    27.9,
]  # grid25.yaml lr_d 3e-4: 25 modes / 66% at 12,500
SLOW = [
    1.2,
    2.12,
    1.88,
    2.76,
    4.64,
    11.4,
    20.04,
    29.28,
    34.68,
    40.6,
    43.92,
    47.92,
]  # lr_g 8.4e-5, 5:1: final mix_score 0.31


def mixture(hq, modes=20, start=500, every=500, eff_modes=20.0):
    return [
        {**BALANCED, "step": start + every * i, "hq_pct": h, "modes": modes, "eff_modes": eff_modes}
        for i, h in enumerate(hq)
    ]


def first_stop(hist, stopping):
    return next(
        ((r["step"], v) for i, r in enumerate(hist) if (v := judge(hist[: i + 1], stopping, "mix_score", "max"))), None
    )


def test_mixture_samples_off_the_modes_are_stopped_after_the_warmup():
    """A G that never puts more than chance (~2%) of its samples on the modes, with balanced
    losses that no loss rule sees, is stopped at the first full window past the warm-up."""
    step, v = first_stop(mixture(NEVER_LEARNT), Stopping())
    assert (step, v.rule) == (4500, "mixture_quality")
    assert v.evidence == {"hq_pct": 0.32, "floor": 5.0, "evals": 2}


def test_mixture_collapsed_onto_one_mode_is_stopped():
    """Sharp samples all on one mode (a G that never left its first blob, measured) is collapse."""
    hist = mixture(
        [22.04, 15.72, 10.52, 9.6, 19.24, 33.44, 62.04, 91.84, 98.68, 99.68], modes=1
    )  # measured: lr_g 1.9e-6
    step, v = first_stop(hist, Stopping())
    assert (step, v.rule, v.evidence["modes"]) == (4500, "mixture_quality", 1.0)


def test_every_sample_in_one_cell_is_stopped_from_the_first_evals():
    """eff_modes 1 (every sample's nearest mean the same one, measured at every eval of every
    grid25 trial with lr_g <= 1.1e-5) is stopped at the second eval past its own short warm-up,
    long before the sample-quality warm-up ends; an even spread is not."""
    step, v = first_stop(mixture([22.04, 15.72, 10.52, 9.6], modes=1, eff_modes=1.0), Stopping())
    assert (step, v.rule, v.evidence) == (1000, "mixture_quality", {"eff_modes": 1.0, "floor": 1.5, "evals": 2})
    assert first_stop(mixture([1.0] * 6, eff_modes=1.6), Stopping()) is None
    late = Stopping.model_validate({"mixture_quality": {"collapse_after_step": 1000}})
    assert first_stop(mixture([22.0] * 4, modes=1, eff_modes=1.0), late)[0] == 1500
    off = Stopping.model_validate({"mixture_quality": {"min_effective_modes": None}})
    assert first_stop(mixture([22.0] * 4, modes=1, eff_modes=1.0), off) is None


def test_slow_healthy_mixtures_are_not_stopped():
    """Trials that ended in the better half of their sweep after a slow start under the floor
    (down to 0.1% at 3,500) run to their end under the defaults."""
    for hq in (LATE_START, SLOW):
        assert first_stop(mixture(hq), Stopping()) is None


def test_mixture_rule_respects_warmup_and_patience():
    """Under the floor before `after_step` is ignored; one dip under it is not enough."""
    s = Stopping.model_validate({"mixture_quality": {"after_step": 1000, "patience": 2}})
    assert judge(mixture([1.0, 1.0]), s, "mix_score", "max") is None  # 500, 1000: window starts in the warm-up
    assert judge(mixture([1.0, 1.0, 1.0]), s, "mix_score", "max").rule == "mixture_quality"  # 1000, 1500
    dip = mixture([1.2, 16.6, 4.4, 25.6, 14.6, 6.9, 7.3], start=3000)  # measured: grid25.yaml lr_d 2e-4, 3,000-6,000
    assert first_stop(dip, s) is None
    s3 = Stopping.model_validate({"mixture_quality": {"after_step": 0, "patience": 3}})
    assert judge(mixture([1.0, 1.0]), s3, "mix_score", "max") is None


def test_mixture_rule_floors_can_be_set_and_switched_off():
    """min_modes is per spec (e.g. 10 of grid25's 25); null turns a floor, or the rule, off."""
    hist = mixture([50.0] * 10, modes=8)
    assert first_stop(hist, Stopping()) is None
    assert first_stop(hist, Stopping.model_validate({"mixture_quality": {"min_modes": 10}}))[1].evidence["modes"] == 8.0
    low = mixture(NEVER_LEARNT)
    assert first_stop(low, Stopping.model_validate({"mixture_quality": {"min_hq_pct": None}})) is None
    assert first_stop(low, Stopping.model_validate({"mixture_quality": None})) is None


def test_mixture_rule_ignores_image_trials():
    """Image reports carry no hq_pct or modes: the mixture rule never fires on them."""
    images = [{**BALANCED, "step": 1000 * (i + 1)} for i in range(10)]
    assert first_stop(images, Stopping()) is None


def test_min_modes_moved_out_of_mode_collapse_with_a_pointer():
    """The old place of min_modes says where it went."""
    with pytest.raises(ValueError, match="stopping.mixture_quality.min_modes"):
        Stopping.model_validate({"mode_collapse": {"min_modes": 10}})


def test_plateau_respects_mode():
    """No improvement over the best for `patience` evals."""
    s = Stopping.model_validate({"plateau": {"patience": 2}})
    assert judge(history({"fid": 100}, {"fid": 90}, {"fid": 80}), s, "fid", "min") is None
    assert judge(history({"fid": 100}, {"fid": 90}, {"fid": 95}, {"fid": 91}), s, "fid", "min").rule == "plateau"
    assert (
        judge(
            history({"mix_score": 0.1}, {"mix_score": 0.3}, {"mix_score": 0.2}, {"mix_score": 0.25}),
            s,
            "mix_score",
            "max",
        ).rule
        == "plateau"
    )


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


def test_budget_sum_follows_each_trials_latest_cost_and_a_restored_stopper():
    """The running budget sum counts each trial's latest cost once (a report replaces the trial's
    last cost), and a stopper pickled before the sum was kept sums its costs once on resume."""
    import pickle

    off = Stopping.model_validate(
        {"d_overpowers": None, "d_fooled": None, "mixture_quality": None, "mode_collapse": None, "plateau": None}
    )
    st = BalanceStopper(off, "fid", "min", max_usd=10.0)
    for i in range(100):
        st(f"t{i}", {**BALANCED, "step": 100, "cost_usd": 0.05})
        st(f"t{i}", {**BALANCED, "step": 200, "cost_usd": 0.09})
    assert st.spent_usd == pytest.approx(9.0) and not st.stop_all()
    old = pickle.loads(pickle.dumps(st))
    old.spent_usd = None  # as restored from an experiment state written before the field existed
    assert old("t0", {**BALANCED, "step": 300, "cost_usd": 1.5}) is True  # 8.91 + 1.5 >= 10
    assert old.budget_verdict.evidence["spent_usd"] == pytest.approx(10.41) and old.stop_all()


def _random_report(rng, step: int) -> dict:
    """An eval report that wanders between balance, D winning, G winning, collapse and NaN, with
    the extra keys a real report carries (which the stopper need not keep)."""
    nan = float("nan")
    return {
        "step": step,
        "loss_d": rng.choice([1.3, 0.2, 3.0, nan]) if rng.random() < 0.05 else rng.uniform(0.05, 2.0),
        "loss_g": rng.choice([0.02, 0.7, 6.0, 30.0]),
        "d_x": rng.choice([0.5, 0.95, 0.99]),
        "d_g_z": rng.choice([0.01, 0.5, 0.97]),
        "grad_norm_d": rng.choice([3.0, 5e4]),
        "grad_norm_g": rng.choice([2.0, 5e4]),
        "class_coverage": rng.choice([10, 9, 2]),
        "hq_pct": rng.uniform(0, 100),
        "modes": rng.choice([25, 24, 3]),
        "eff_modes": rng.uniform(1, 25),
        "fid": nan if rng.random() < 0.03 else rng.choice([rng.uniform(5, 80), 50.0]),
        "mix_score": rng.uniform(0, 1),
        "inception_score": rng.uniform(1, 9),
        "train_seconds": step * 0.1,
        "cost_usd": step * 1e-5,
    }


@pytest.mark.parametrize("metric,mode", [("fid", "min"), ("mix_score", "max")])
def test_bounded_stopper_history_judges_as_the_whole_history_would(metric, mode):
    """The stopper keeps only the rules' keys and the latest `window` reports (the plateau rule
    gets the earlier ones summarised), and stops every trial at the same eval with the same
    verdict as judging the trial's whole history would, over many random trials and rule sets."""
    import pickle
    import random

    from orchestrator.stopping import window

    rng = random.Random(7)
    setups = [
        Stopping(),
        Stopping.model_validate({"plateau": {"patience": 2, "min_delta": 0.5}, "d_overpowers": {"patience": 5}}),
        Stopping.model_validate({"divergence": None, "d_fooled": {"patience": 1}, "plateau": {"patience": 6}}),
        Stopping.model_validate({"mixture_quality": {"patience": 4, "after_step": 300}, "plateau": None}),
    ]
    fired = 0
    for stopping in setups:
        st = BalanceStopper(stopping, metric, mode)
        for t in range(60):
            tid, full = f"t{t}", []
            for e in range(1, 40):
                report = _random_report(rng, 100 * e)
                full.append({k: v for k, v in report.items() if isinstance(v, (int, float))})
                expected = judge(full, stopping, metric, mode)
                assert st(tid, report) is (expected is not None), (tid, e)
                assert st.verdicts.get(tid) == expected, (tid, e)
                assert len(st.histories.get(tid, [])) <= window(stopping)
                if expected is not None:
                    fired += 1
                    break
            if t == 30:  # Tune pickles the stopper into its experiment state; a restored one goes on
                st = pickle.loads(pickle.dumps(st))
    assert fired > 50  # the streams do reach the rules, and not only at the first eval


def test_a_stopper_restored_from_before_the_bounded_history_still_judges():
    """A stopper pickled with whole histories and no summaries (`ganops resume` of an older
    sweep) trims them at its next report and judges as before."""
    s = Stopping.model_validate({"plateau": {"patience": 2}})
    st = BalanceStopper(s, "fid", "min")
    st.histories["a"] = history({"fid": 100}, {"fid": 90}, {"fid": 95})
    st.earlier = None  # as restored from an experiment state written before the field existed
    assert st("a", {**BALANCED, "step": 400, "fid": 91}) is True
    assert st.verdicts["a"].rule == "plateau" and st.verdicts["a"].evidence["best"] == 90


def _bench(name: str):
    """A bench/ script as a module (bench/ is not a package; its scripts import each other by name)."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_stopping_bench_counts_false_positives_and_the_ceiling_any_rule_has():
    """The issue's false positive is a stop of a control top-3 trial. With 1 trial of 8 learning
    (ring8_bad_regions, seed 2), stopping all 7 failures scores 2 however they are chosen, and
    the most a rule could save at 0 is the 5 worst stopped at the first eval."""
    bench = _bench("stopping_savings")
    final = {"learnt": 0.674, **{f"failed{i}": 0.002 / (i + 1) for i in range(7)}}
    stopped = {f"failed{i}" for i in range(7)}
    fp = bench.false_positives(final, stopped, "max")
    assert fp["false_positives"] == 2 and fp["false_positive_trials"] == ["failed0", "failed1"]
    steps = dict.fromkeys(final, 6000)
    ceiling = bench.ceiling(final, steps, "max", first_eval=500)
    assert ceiling == {"oracle_saved_pct": round(100 * 5 * 5500 / 48000, 1), "stoppable_without_fp": 5}
    # min mode ranks the other way: the lowest FID is best
    fid = {"a": 10.0, "b": 20.0, "c": 30.0, "d": 400.0}
    assert bench.ceiling(fid, dict.fromkeys(fid, 1000), "min", first_eval=100)["stoppable_without_fp"] == 1
    assert bench.false_positives(fid, {"d"}, "min")["false_positives"] == 0


def test_replay_judges_the_reports_the_stopper_got_not_every_logged_loss_point():
    """MLflow holds the losses every `log_every` steps (each point the mean since the previous
    one); the live stopper got one report per eval, its losses the mean over the eval window.
    The replay rebuilds those reports: on the kept MNIST and ring controls it then gives the
    live runs' trial-steps exactly (bench/stopping_replay.py)."""
    replay = _bench("stopping_replay")
    points = [
        {"step": 10, "loss_g": 9.0, "d_x": 1.0},
        {"step": 20, "loss_g": 7.0, "d_x": 0.9},
        {"step": 30, "loss_g": 2.0, "d_x": 0.6, "fid": 300.0},  # eval 1: window of 30 steps
        {"step": 50, "loss_g": 1.0, "d_x": 0.5},  # a point 20 steps after the last
        {"step": 60, "loss_g": 4.0, "d_x": 0.8, "fid": 250.0},  # eval 2: window of 30 steps
    ]
    reports = replay.as_reports(points, "fid")
    assert [r["step"] for r in reports] == [30, 60] and [r["fid"] for r in reports] == [300.0, 250.0]
    assert reports[0]["loss_g"] == pytest.approx(6.0) and reports[0]["d_x"] == pytest.approx(2.5 / 3)
    assert reports[1]["loss_g"] == pytest.approx((20 * 1.0 + 10 * 4.0) / 30)
    # evals that log every step (no loss points between them) pass through as they are
    assert replay.as_reports(points[2:3], "fid") == [points[2]]
