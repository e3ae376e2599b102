"""The training knobs of issue 3: losses, labels, clipping, lr decay, EMA of G (trainers/step.py)."""

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from orchestrator.stopping import judge
from search_spaces.spec import Stopping
from trainers.checkpoint import adopt, load_generator, load_state, restore, save_state
from trainers.config import TrainerConfig
from trainers.data import make_data
from trainers.models import build_models
from trainers.step import (
    DivergenceError,
    build_ema,
    build_optimizers,
    build_schedulers,
    d_loss,
    d_targets,
    g_loss,
    gradient_penalty,
    set_hyperparams,
    train_step,
)

TINY_MLP = TrainerConfig(model="mlp2d", data="grid25", width=16, latent_dim=4, batch_size=32)
TINY_DCGAN = TrainerConfig(model="dcgan28", data="mnist", width=4, latent_dim=8, batch_size=8)
REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 1.0])


def _setup(cfg):
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    return G, D, opt_g, opt_d, make_data(cfg), torch.Generator().manual_seed(cfg.seed)


def _one_step(cfg):
    G, D, og, od, data, gen = _setup(cfg)
    return train_step(G, D, og, od, data, cfg, gen)


def _flat(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


def _knobs(**kw):
    return TINY_MLP.model_copy(update=kw)


# ---- losses ---------------------------------------------------------------------------------


def test_hinge_loss_on_known_logits():
    """D: mean max(0, 1 - D(x)) + mean max(0, 1 + D(G(z))); G: -mean D(G(z))."""
    cfg = _knobs(loss="hinge")
    real_t, fake_t, extra = d_loss(None, REAL, FAKE, None, None, cfg, torch.Generator())
    assert real_t.item() == pytest.approx((0 + 0.5 + 2.0) / 3)
    assert fake_t.item() == pytest.approx((0 + 1.0 + 2.0) / 3)
    assert extra == {}
    assert g_loss(FAKE, cfg).item() == pytest.approx(1 / 3)


def test_minimax_and_nonsaturating_g_losses_on_known_logits():
    """minimax G minimises mean log(1 - D(G(z))); non-saturating minimises -mean log D(G(z))."""
    p = torch.sigmoid(FAKE)
    assert g_loss(FAKE, _knobs(loss="minimax")).item() == pytest.approx(torch.log(1 - p).mean().item(), rel=1e-6)
    assert g_loss(FAKE, _knobs()).item() == pytest.approx(-torch.log(p).mean().item(), rel=1e-6)
    # Both BCE losses train D the same way.
    for loss in ("minimax", "nonsaturating"):
        real_t, fake_t, _ = d_loss(None, REAL, FAKE, None, None, _knobs(loss=loss), torch.Generator())
        assert real_t.item() == pytest.approx(-torch.log(torch.sigmoid(REAL)).mean().item(), rel=1e-6)
        assert fake_t.item() == pytest.approx(-torch.log(1 - p).mean().item(), rel=1e-6)


def test_wgan_terms_are_raw_critic_means_plus_a_penalty():
    cfg = _knobs(loss="wgan-gp")
    D = nn.Linear(2, 1)
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    real_t, fake_t, extra = d_loss(D, REAL, FAKE, real, fake, cfg, torch.Generator().manual_seed(0))
    assert real_t.item() == pytest.approx(-REAL.mean().item())
    assert fake_t.item() == pytest.approx(FAKE.mean().item())
    assert set(extra) == {"gp"}
    assert g_loss(FAKE, cfg).item() == pytest.approx(-FAKE.mean().item())


@pytest.mark.parametrize("scale, expected", [(1.0, 0.0), (3.0, 4.0), (0.5, 0.25)])
def test_gradient_penalty_of_a_linear_critic_is_its_slope_minus_one_squared(scale, expected):
    """A linear critic w.x + b has gradient w everywhere: the penalty is (||w|| - 1)^2, ~0 for a
    1-Lipschitz one with a unit-norm weight (Gulrajani et al. 2017)."""
    D = nn.Linear(3, 1)
    with torch.no_grad():
        D.weight.copy_(torch.tensor([[1.0, -2.0, 2.0]]) / 3 * scale)
    gp = gradient_penalty(D, torch.randn(64, 3), torch.randn(64, 3), torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx(expected, abs=1e-6)


def test_gradient_penalty_trains_the_critic():
    """create_graph: the penalty's gradient reaches D's weights (it pulls ||w|| toward 1)."""
    D = nn.Linear(2, 1)
    with torch.no_grad():
        D.weight.copy_(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    gradient_penalty(D, torch.randn(8, 2), torch.randn(8, 2), torch.Generator().manual_seed(0)).backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 4 * [0.6, 0.8]
    assert torch.allclose(D.weight.grad, torch.tensor([[4.8, 6.4]]), atol=1e-5)


@pytest.mark.parametrize("loss", ["hinge", "wgan-gp"])
def test_critic_losses_report_raw_scores_not_probabilities(loss):
    """hinge / wgan-gp D outputs are scores: d_x / d_g_z are not reported (the balance rules read
    them as probabilities); critic_real / critic_fake are, and wgan-gp adds the penalty gp."""
    cfg = _knobs(loss=loss)
    m = _one_step(cfg)
    assert "d_x" not in m and "d_g_z" not in m
    assert {"critic_real", "critic_fake", "loss_d", "loss_g", "grad_norm_d", "grad_norm_g"} <= set(m)
    assert ("gp" in m) == (loss == "wgan-gp")
    if loss == "wgan-gp":
        assert m["loss_d"] == pytest.approx(m["loss_d_real"] + m["loss_d_fake"] + cfg.gp_lambda * m["gp"], rel=1e-5)


@pytest.mark.parametrize("loss", ["minimax", "hinge", "wgan-gp"])
def test_tiny_mlp_runs_each_loss_for_a_few_steps_without_diverging(loss):
    """30 iterations of mlp2d on grid25 (wgan-gp with the paper's n_critic = 5): finite, and the
    networks move."""
    cfg = _knobs(loss=loss, dg_ratio="5:1" if loss == "wgan-gp" else "1:1", lr_g=1e-3, lr_d=1e-3)
    G, D, og, od, data, gen = _setup(cfg)
    g0 = _flat(G)
    for i in range(30):
        m = train_step(G, D, og, od, data, cfg, gen, step=i + 1)
        assert all(math.isfinite(v) for v in m.values()), m
    assert not torch.equal(g0, _flat(G))


@pytest.mark.parametrize("loss", ["nonsaturating", "minimax", "hinge", "wgan-gp"])
def test_every_loss_turns_nan_weights_into_a_divergence_error(loss):
    cfg = _knobs(loss=loss)
    G, D, og, od, data, gen = _setup(cfg)
    with torch.no_grad():
        next(D.parameters()).fill_(float("nan"))
    with pytest.raises(DivergenceError) as e:
        train_step(G, D, og, od, data, cfg, gen, step=7)
    assert e.value.quantity in ("loss_d", "grad_norm_d") and e.value.step == 7


def test_balance_rules_do_not_read_critic_scores_as_probabilities():
    """A hinge trial whose G loss sits far above -ln 0.05 (what d_overpowers reads for BCE) is
    not stopped by the probability rules: it reports no d_x / d_g_z."""
    cfg = _knobs(loss="hinge")
    m = _one_step(cfg)
    history = [{**m, "loss_g": 10.0, "step": 100 * (i + 1)} for i in range(5)]
    assert judge(history, Stopping(), "mix_score", "max") is None
    bce = [{**h, "d_x": 0.99, "d_g_z": 0.01} for h in history]  # the same losses under BCE would stop
    assert judge(bce, Stopping(), "mix_score", "max").rule == "d_overpowers"


def test_minimax_reports_the_nonsaturating_loss_the_balance_rules_read():
    """Under minimax loss_g = mean log(1 - D(G(z))) <= 0 could never pass d_overpowers' floor
    (-ln 0.05 = 3.0); the rules read loss_g_nonsat = -mean log D(G(z)) instead."""
    m = _one_step(_knobs(loss="minimax"))
    assert m["loss_g"] <= 0 < m["loss_g_nonsat"]
    history = [{**m, "loss_g_nonsat": 6.0, "d_x": 0.99, "d_g_z": 0.01, "step": 100 * (i + 1)} for i in range(3)]
    v = judge(history, Stopping(), "mix_score", "max")
    assert v.rule == "d_overpowers" and v.evidence["loss_g"] == 6.0
    fooled = [{**h, "loss_g_nonsat": 0.01, "d_x": 0.5, "d_g_z": 0.99} for h in history]
    assert judge(fooled, Stopping(), "mix_score", "max").rule == "d_fooled"


# ---- labels ---------------------------------------------------------------------------------


def test_default_labels_draw_nothing_and_keep_one_sided_smoothing():
    gen = torch.Generator().manual_seed(0)
    before = gen.get_state()
    assert d_targets(8, _knobs(real_label=0.9), gen) == (0.9, 0.0)
    assert torch.equal(gen.get_state(), before)


def test_soft_labels_are_uniform_in_the_ganhacks_ranges():
    t_real, t_fake = d_targets(100_000, _knobs(soft_labels=True), torch.Generator().manual_seed(0))
    assert 0.7 <= t_real.min() and t_real.max() <= 1.2 and t_real.mean().item() == pytest.approx(0.95, abs=0.005)
    assert 0.0 <= t_fake.min() and t_fake.max() <= 0.3 and t_fake.mean().item() == pytest.approx(0.15, abs=0.005)


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_label_flip_swaps_targets_at_the_configured_rate(p):
    """Fraction of real samples labelled fake (and fake labelled real) within 5 sigma of p."""
    n = 100_000
    t_real, t_fake = d_targets(n, _knobs(label_flip=p, real_label=0.9), torch.Generator().manual_seed(1))
    sigma = math.sqrt(p * (1 - p) / n)
    for flipped in ((t_real == 0.0).float().mean().item(), (t_fake == 0.9).float().mean().item()):
        assert abs(flipped - p) < 5 * sigma
    assert bool(((t_real == 0.0) | (t_real == torch.tensor(0.9))).all())


def test_soft_labels_with_flip_move_flipped_reals_into_the_fake_range():
    t_real, _ = d_targets(10_000, _knobs(soft_labels=True, label_flip=0.2), torch.Generator().manual_seed(2))
    low = (t_real <= 0.3).float().mean().item()
    assert abs(low - 0.2) < 0.02 and bool(((t_real <= 0.3) | (t_real >= 0.7)).all())


def test_label_knobs_change_ds_bce_terms():
    """Soft/flipped targets are what D's BCE is computed against."""
    out = torch.zeros(4)
    cfg = _knobs(label_flip=0.5)
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    t_real, t_fake = d_targets(4, cfg, gen)
    gen.set_state(state)
    real_t, fake_t, _ = d_loss(None, out, out, None, None, cfg, gen)
    assert real_t.item() == pytest.approx(F.binary_cross_entropy_with_logits(out, t_real).item())
    assert fake_t.item() == pytest.approx(F.binary_cross_entropy_with_logits(out, t_fake).item())


def test_label_settings_are_bounded():
    with pytest.raises(ValidationError, match="label_flip"):
        TrainerConfig(label_flip=0.6)
    with pytest.raises(ValidationError, match="loss"):
        TrainerConfig(loss="wgan")


# ---- gradient clipping ----------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [TINY_MLP, TINY_DCGAN], ids=["mlp2d", "dcgan28"])
def test_clip_grad_norm_bounds_each_networks_update(cfg):
    """Plain SGD (no momentum) moves the weights by lr times the applied gradient: with clipping
    that gradient's norm is at most clip_grad_norm, without it is larger (and reported before clipping)."""
    c, lr = 1e-3, 1e-2
    base = cfg.model_copy(update={"optimizer_g": "sgd", "optimizer_d": "sgd", "lr_g": lr, "lr_d": lr, "momentum": 0.0})
    for clip in (None, c):
        run = base.model_copy(update={"clip_grad_norm": clip})
        G, D, og, od, data, gen = _setup(run)
        g0, d0 = _flat(G), _flat(D)
        m = train_step(G, D, og, od, data, run, gen)
        moved_g, moved_d = (_flat(G) - g0).norm().item() / lr, (_flat(D) - d0).norm().item() / lr
        if clip is None:
            assert moved_d > c and moved_g > c
            assert moved_d == pytest.approx(m["grad_norm_d"], rel=1e-4)
        else:
            assert moved_d <= c * (1 + 1e-4) and moved_g <= c * (1 + 1e-4)
            assert moved_d == pytest.approx(c, rel=1e-3)
            assert m["grad_norm_d"] > c  # reported before clipping


# ---- lr decay -------------------------------------------------------------------------------


@pytest.mark.parametrize("decay", ["linear", "exponential"])
def test_lr_decay_reaches_the_final_fraction_at_the_last_iteration(decay):
    cfg = _knobs(lr_decay=decay, lr_decay_final=0.25, steps=6, lr_g=1e-3, lr_d=4e-4)
    G, D, og, od, data, gen = _setup(cfg)
    scheds = build_schedulers(og, od, cfg)
    lrs = []
    for _ in range(cfg.steps):
        train_step(G, D, og, od, data, cfg, gen, schedulers=scheds)
        lrs.append(og.param_groups[0]["lr"])
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 1e-3
    assert og.param_groups[0]["lr"] == pytest.approx(0.25e-3, rel=1e-6)
    assert od.param_groups[0]["lr"] == pytest.approx(0.25 * 4e-4, rel=1e-6)


def test_no_lr_decay_builds_no_scheduler():
    G, D, og, od, _, _ = _setup(TINY_MLP)
    assert build_schedulers(og, od, TINY_MLP) == []


def test_set_hyperparams_rescales_a_scheduled_lr():
    """A PBT explore of lr_g keeps the schedule's progress: lr = new lr_g * decay so far."""
    cfg = _knobs(lr_decay="linear", lr_decay_final=0.5, steps=4, lr_g=1e-3)
    G, D, og, od, data, gen = _setup(cfg)
    scheds = build_schedulers(og, od, cfg)
    for _ in range(2):
        train_step(G, D, og, od, data, cfg, gen, schedulers=scheds)
    before = og.param_groups[0]["lr"]
    set_hyperparams(og, od, cfg, scheds)
    assert og.param_groups[0]["lr"] == before  # same settings: a no-op
    set_hyperparams(og, od, cfg.model_copy(update={"lr_g": 2e-3}), scheds)
    assert og.param_groups[0]["lr"] == pytest.approx(2 * before)
    train_step(G, D, og, od, data, cfg, gen, schedulers=scheds)
    train_step(G, D, og, od, data, cfg, gen, schedulers=scheds)
    assert og.param_groups[0]["lr"] == pytest.approx(0.5 * 2e-3)


# ---- EMA of G -------------------------------------------------------------------------------


def test_ema_weights_trail_the_raw_weights():
    cfg = _knobs(ema=0.9)
    G, D, og, od, data, gen = _setup(cfg)
    ema = build_ema(G, cfg)
    g0 = _flat(G)
    for _ in range(5):
        train_step(G, D, og, od, data, cfg, gen, ema=ema)
    assert not torch.equal(_flat(ema.module), _flat(G))
    # The average lags: closer to the current weights than the initial ones are, but not on them.
    assert 0 < (_flat(ema.module) - _flat(G)).norm() < (g0 - _flat(G)).norm()


def test_ema_follows_the_formula():
    """ema_1 = G_1; ema_2 = d ema_1 + (1 - d) G_2."""
    cfg = _knobs(ema=0.75)
    G, D, og, od, data, gen = _setup(cfg)
    ema = build_ema(G, cfg)
    train_step(G, D, og, od, data, cfg, gen, ema=ema)
    g1 = _flat(G)
    assert torch.equal(_flat(ema.module), g1)
    train_step(G, D, og, od, data, cfg, gen, ema=ema)
    assert torch.allclose(_flat(ema.module), 0.75 * g1 + 0.25 * _flat(G), atol=1e-7)


def test_ema_with_decay_zero_equals_the_raw_weights_and_buffers():
    cfg = TINY_DCGAN.model_copy(update={"ema": 0.0})  # dcgan28: BN buffers are averaged too
    G, D, og, od, data, gen = _setup(cfg)
    ema = build_ema(G, cfg)
    for _ in range(3):
        train_step(G, D, og, od, data, cfg, gen, ema=ema)
    for (k, v), (k2, v2) in zip(G.state_dict().items(), ema.module.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_no_ema_by_default():
    assert build_ema(build_models(TINY_MLP)[0], TINY_MLP) is None


# ---- checkpoints ----------------------------------------------------------------------------

ALL_KNOBS = [
    _knobs(
        loss="nonsaturating",
        soft_labels=True,
        label_flip=0.1,
        clip_grad_norm=0.5,
        lr_decay="linear",
        lr_decay_final=0.2,
        ema=0.99,
        steps=8,
        dg_ratio="2:1",
    ),
    TINY_DCGAN.model_copy(
        update={
            "loss": "wgan-gp",
            "gp_lambda": 5.0,
            "clip_grad_norm": 5.0,
            "lr_decay": "exponential",
            "ema": 0.9,
            "steps": 8,
            "dg_ratio": "3:1",
        }
    ),
    _knobs(
        loss="hinge",
        clip_grad_norm=1.0,
        lr_decay="exponential",
        lr_decay_final=0.5,
        ema=0.999,
        steps=8,
        latent_dist="uniform",
    ),
]


@pytest.mark.parametrize("cfg", ALL_KNOBS, ids=["bce-all-knobs", "dcgan-wgan-gp", "hinge"])
def test_resume_with_every_knob_on_is_bit_identical(cfg, tmp_path):
    """Scheduler and EMA states survive save/restore: metrics, lr, G, D and the averaged G after
    the resumed steps equal an uninterrupted run's."""
    G, D, og, od, data, gen = _setup(cfg)
    scheds, ema = build_schedulers(og, od, cfg), build_ema(G, cfg)
    for _ in range(3):
        train_step(G, D, og, od, data, cfg, gen, schedulers=scheds, ema=ema)
    save_state(tmp_path / "s.pt", G, D, og, od, 3, cfg.model_dump(), gen, schedulers=scheds, ema=ema)
    uninterrupted = [train_step(G, D, og, od, data, cfg, gen, schedulers=scheds, ema=ema) for _ in range(3)]

    G2, D2 = build_models(cfg.model_copy(update={"seed": 99}))
    og2, od2 = build_optimizers(G2, D2, cfg)
    scheds2, ema2 = build_schedulers(og2, od2, cfg), build_ema(G2, cfg)
    gen2 = torch.Generator().manual_seed(5)
    state = load_state(tmp_path / "s.pt")
    assert restore(state, G2, D2, og2, od2, gen2, schedulers=scheds2, ema=ema2) == 3
    set_hyperparams(og2, od2, TrainerConfig.model_validate(state["config"]), scheds2)  # as the loop does
    resumed = [train_step(G2, D2, og2, od2, data, cfg, gen2, schedulers=scheds2, ema=ema2) for _ in range(3)]

    assert resumed == uninterrupted
    assert [s.get_last_lr() for s in scheds2] == [s.get_last_lr() for s in scheds]
    for a, b in ((G, G2), (D, D2), (ema.module, ema2.module)):
        assert torch.equal(_flat(a), _flat(b))
    assert int(ema2.n_averaged) == int(ema.n_averaged) == 6


def test_load_generator_from_a_full_checkpoint_returns_the_averaged_g(tmp_path):
    cfg = _knobs(ema=0.5)
    G, D, og, od, data, gen = _setup(cfg)
    ema = build_ema(G, cfg)
    for _ in range(3):
        train_step(G, D, og, od, data, cfg, gen, ema=ema)
    save_state(tmp_path / "s.pt", G, D, og, od, 3, cfg.model_dump(), gen, ema=ema)
    loaded, _ = load_generator(tmp_path / "s.pt")
    assert torch.equal(_flat(loaded), _flat(ema.module)) and not torch.equal(_flat(loaded), _flat(G))


def test_adopting_a_donor_without_an_average_restarts_it_from_the_donors_g(tmp_path):
    """PBT with `ema` searched: a donor trained without an average; the recipient's average
    restarts from the adopted G instead of mixing two trials' weights."""
    donor_cfg, cfg = _knobs(seed=1), _knobs(ema=0.9)
    dG, dD, dog, dod, data, gen = _setup(donor_cfg)
    train_step(dG, dD, dog, dod, data, donor_cfg, gen)
    save_state(tmp_path / "d.pt", dG, dD, dog, dod, 1, donor_cfg.model_dump(), gen)
    G, D, og, od, _, gen2 = _setup(cfg)
    ema = build_ema(G, cfg)
    train_step(G, D, og, od, data, cfg, gen2, ema=ema)
    adopt(load_state(tmp_path / "d.pt"), G, D, og, od, ema=ema)
    assert torch.equal(_flat(ema.module), _flat(dG)) and int(ema.n_averaged) == 1


def test_pbt_exploit_takes_the_donors_schedule_and_average_and_rescales_the_lr(tmp_path):
    """The in-trial exploit (trainers/loop.py) with lr_decay and ema: the donor's scheduler and
    G-average states come along, and the explored lr_d applies at the donor's point in the schedule."""
    from trainers.loop import CHECKPOINT_FILE, _exploit

    cfg = _knobs(lr_decay="linear", lr_decay_final=0.5, steps=4, ema=0.9, lr_d=1e-3)
    dG, dD, dog, dod, data, gen = _setup(cfg.model_copy(update={"seed": 1}))
    d_scheds, d_ema = build_schedulers(dog, dod, cfg), build_ema(dG, cfg)
    for _ in range(2):
        train_step(dG, dD, dog, dod, data, cfg, gen, schedulers=d_scheds, ema=d_ema)
    save_state(tmp_path / CHECKPOINT_FILE, dG, dD, dog, dod, 2, cfg.model_dump(), gen, schedulers=d_scheds, ema=d_ema)

    G, D, og, od, _, _ = _setup(cfg)
    scheds, ema = build_schedulers(og, od, cfg), build_ema(G, cfg)
    order = {"donor": "d", "checkpoint": str(tmp_path), "config": {"lr_d": 2e-3}}
    assert _exploit(order, cfg, G, D, og, od, scheds, ema).lr_d == 2e-3
    assert od.param_groups[0]["lr"] == pytest.approx(2 * dod.param_groups[0]["lr"])
    assert scheds[1].last_epoch == 2 and scheds[1].base_lrs == [2e-3]
    assert torch.equal(_flat(ema.module), _flat(d_ema.module))
