"""D's toolbox (issue 16 part 3): PacGAN packing, spectral norm, R1/R2 gradient penalties."""

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from trainers.checkpoint import load_state, restore, save_state
from trainers.config import TrainerConfig
from trainers.data import make_data
from trainers.encoder import build_encoder
from trainers.models import build_models, sample_latent
from trainers.models.dcgan import ConvDiscriminator
from trainers.step import build_optimizers, r_penalty, train_step

# (model, data) for every built-in unconditional D that trains on shipped data.
PACKABLE = [("mlp2d", "grid25"), ("fc", "mnist"), ("dcgan28", "mnist"), ("dcgan28_upsample", "stacked_mnist")]


def _tiny(model, data, **kw):
    kw = {"width": 16 if model == "mlp2d" else 4, "latent_dim": 8, "batch_size": 8, **kw}
    return TrainerConfig(model=model, data=data, **kw)


def _setup(cfg):
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    return G, D, opt_g, opt_d, make_data(cfg), torch.Generator().manual_seed(cfg.seed)


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize("model,data", PACKABLE, ids=[m for m, _ in PACKABLE])
@pytest.mark.parametrize("pack", [2, 4])
def test_a_packing_d_judges_batch_over_pack_packs_and_a_step_runs(model, data, pack):
    """pack m: D takes B samples and returns B/m judgements; one train step gives finite metrics."""
    cfg = _tiny(model, data, pack=pack)
    G, D, og, od, source, gen = _setup(cfg)
    real = source.sample(8, torch.Generator().manual_seed(1))
    assert D(real).shape == (8 // pack, 1)
    assert D(G(sample_latent(8, cfg, gen))).shape == (8 // pack, 1)
    m = train_step(G, D, og, od, source, cfg, gen)
    assert all(math.isfinite(v) for v in m.values())
    assert 0 < m["d_x"] < 1 and 0 < m["d_g_z"] < 1


@pytest.mark.parametrize("model,data", PACKABLE, ids=[m for m, _ in PACKABLE])
def test_packing_widens_only_ds_first_layer_by_the_pack(model, data):
    """D's first layer takes pack times the inputs (2-D: coordinates; images: channels); the rest is unchanged."""
    shapes = {}
    for pack in (1, 3):
        _, D = build_models(_tiny(model, data, pack=pack, batch_size=6))
        shapes[pack] = [tuple(p.shape) for p in D.parameters()]
    first1, first3 = shapes[1][0], shapes[3][0]
    assert first3[1] == 3 * first1[1] and first3[0] == first1[0]
    assert shapes[1][1:] == shapes[3][1:]


@pytest.mark.parametrize("size", [32, 64])
def test_the_larger_conv_ds_pack_channels_too(size):
    """dcgan32 / dcgan64's D (ConvDiscriminator at 32 and 64): RGB packs of 2 -> 6 input channels, B/2 outputs."""
    D = ConvDiscriminator(4, 0.2, channels=3, size=size, pack=2)
    assert D.net[0].in_channels == 6
    assert D(torch.randn(6, 3, size, size)).shape == (3, 1)


def test_a_pack_holds_consecutive_samples_side_by_side():
    """Packing puts samples 0..m-1 in pack 0, m..2m-1 in pack 1: D(pack) sees exactly its own samples."""
    cfg = _tiny("mlp2d", "grid25", pack=2)
    _, D = build_models(cfg)
    x = torch.randn(4, 2)
    swapped_in_pack = x[[1, 0, 2, 3]]  # only pack 0's members move: pack 1's judgement is the same
    a, b = D(x), D(swapped_in_pack)
    assert torch.equal(a[1], b[1])
    other = x.clone()
    other[3] += 1.0  # a change in pack 1 leaves pack 0's judgement alone
    assert torch.equal(D(other)[0], a[0])


def test_a_batch_that_pack_does_not_divide_is_a_clear_validation_error():
    """batch_size not a multiple of pack -> the message names both and offers a batch that fits."""
    with pytest.raises(ValidationError) as e:
        TrainerConfig(model="mlp2d", data="grid25", batch_size=30, pack=4)
    msg = str(e.value)
    assert "pack 4" in msg and "batch_size 30" in msg and "batch_size 28" in msg


def test_pack_is_refused_for_the_conditional_model_with_a_reason():
    """cdcgan28's D reads labels per sample: pack > 1 is refused, naming the models that can pack."""
    with pytest.raises(ValidationError, match="cannot pack"):
        TrainerConfig(model="cdcgan28", data="mnist", pack=2)
    with pytest.raises(ValidationError):
        TrainerConfig(pack=5)


def test_a_packing_ds_encoder_still_maps_each_image_to_one_z():
    """The encoder built from a packing D feeds each image as a pack of copies: (B, C, H, W) -> (B, latent_dim)."""
    cfg = _tiny("dcgan28", "mnist", pack=2)
    _, D = build_models(cfg)
    E = build_encoder(D, cfg)
    assert E(torch.randn(3, 1, 28, 28)).shape == (3, cfg.latent_dim)


# ---------------------------------------------------------------- spectral norm


def _sn_layers(D):
    return [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("model,data", [("dcgan28", "mnist"), ("mlp2d", "ring8"), ("fc", "mnist")])
def test_spectral_norm_holds_each_d_layers_largest_singular_value_near_one(model, data):
    """spectral_norm: after a few training forwards (power iterations) every conv / linear layer of D
    has sigma_max ~ 1; G is left alone."""
    cfg = _tiny(model, data, spectral_norm=True)
    G, D = build_models(cfg)
    assert not any(hasattr(m, "parametrizations") for m in G.modules())
    x = make_data(cfg).sample(8, torch.Generator().manual_seed(0))
    D.train()
    for _ in range(10):
        D(x)
    layers = _sn_layers(D)
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.02), f"{m}: sigma_max {sigma}"


def test_spectral_norm_d_round_trips_through_a_weights_only_checkpoint(tmp_path):
    """save_state -> load_state (torch.load weights_only) -> restore into a fresh build: same D outputs,
    and the next steps match an uninterrupted run's."""
    cfg = _tiny("dcgan28", "mnist", spectral_norm=True, pack=2, r1=1.0)
    G, D, og, od, data, gen = _setup(cfg)
    for _ in range(2):
        train_step(G, D, og, od, data, cfg, gen)
    path = tmp_path / "state.pt"
    save_state(path, G, D, og, od, 2, cfg.model_dump(), gen)
    uninterrupted = [train_step(G, D, og, od, data, cfg, gen) for _ in range(2)]

    G2, D2 = build_models(cfg.model_copy(update={"seed": 7}))
    og2, od2 = build_optimizers(G2, D2, cfg)
    gen2 = torch.Generator().manual_seed(3)
    state = load_state(path)  # weights_only=True
    assert any(k.endswith("parametrizations.weight.original") for k in state["D"])
    assert restore(state, G2, D2, og2, od2, gen2) == 2
    assert [train_step(G2, D2, og2, od2, data, cfg, gen2) for _ in range(2)] == uninterrupted


# ---------------------------------------------------------------- R1 / R2


def test_r_penalty_equals_a_hand_computed_gradient_norm_on_a_linear_d():
    """D(x) = w.x + b has grad_x D = w for every x: R1 = E||w||^2 = ||w||^2 exactly; packed, it is the
    pack's gradient, pack * ||w||^2 for D(x1, x2) = w.x1 + w.x2."""
    w = torch.tensor([[3.0, -4.0]])
    D = nn.Linear(2, 1)
    with torch.no_grad():
        D.weight.copy_(w)
    x = torch.randn(6, 2, requires_grad=True)
    assert r_penalty(D(x).view(-1), x).item() == pytest.approx(25.0)
    packed = nn.Linear(4, 1)
    with torch.no_grad():
        packed.weight.copy_(torch.cat([w, w], dim=1))
    out = packed(x.reshape(3, 4)).view(-1)
    assert r_penalty(out, x).item() == pytest.approx(50.0)


def test_r1_matches_a_hand_computation_on_a_tiny_tanh_d():
    """D(x) = v tanh(u.x): grad_x D = v (1 - tanh(u.x)^2) u, so R1 = mean over samples of that norm squared."""
    torch.manual_seed(0)
    u, v = torch.randn(2), 1.7
    x = torch.randn(5, 2, requires_grad=True)
    out = v * torch.tanh(x @ u)
    by_hand = ((v * (1 - torch.tanh(x.detach() @ u) ** 2)) ** 2 * u.pow(2).sum()).mean()
    assert r_penalty(out, x).item() == pytest.approx(by_hand.item(), rel=1e-5)


@pytest.mark.parametrize("knob", ["r1", "r2"])
def test_r1_r2_are_reported_and_weighted_gamma_over_2_into_ds_loss(knob):
    """With the nonsaturating loss, r1 / r2 > 0 reports the penalty under its name and
    loss_d = loss_d_real + loss_d_fake + gamma / 2 * penalty."""
    cfg = _tiny("mlp2d", "grid25", **{knob: 4.0})
    G, D, og, od, data, gen = _setup(cfg)
    m = train_step(G, D, og, od, data, cfg, gen)
    assert m[knob] > 0 and math.isfinite(m[knob])
    assert m["loss_d"] == pytest.approx(m["loss_d_real"] + m["loss_d_fake"] + 2.0 * m[knob], rel=1e-5)


@pytest.mark.parametrize("knob", ["r1", "r2"])
def test_lazy_penalty_runs_every_reg_every_th_step_weighted_reg_every_times(knob):
    """reg_every 4 (StyleGAN2's lazy regularization): steps 1-3 compute no penalty and their loss_d is the
    plain loss; step 4 reports it and weighs it gamma / 2 * 4 into loss_d."""
    cfg = _tiny("mlp2d", "grid25", reg_every=4, **{knob: 4.0})
    G, D, og, od, data, gen = _setup(cfg)
    for step in (1, 2, 3):
        m = train_step(G, D, og, od, data, cfg, gen, step=step)
        assert knob not in m
        assert m["loss_d"] == pytest.approx(m["loss_d_real"] + m["loss_d_fake"], rel=1e-6)
    m = train_step(G, D, og, od, data, cfg, gen, step=4)
    assert m[knob] > 0
    assert m["loss_d"] == pytest.approx(m["loss_d_real"] + m["loss_d_fake"] + 2.0 * 4 * m[knob], rel=1e-5)


def test_r1_trains_d_through_the_penalty():
    """The penalty is differentiable in D's weights: with an lr, D's update differs from the same step without R1."""
    moved = {}
    for r1 in (0.0, 10.0):
        cfg = _tiny("mlp2d", "grid25", r1=r1)
        G, D, og, od, data, gen = _setup(cfg)
        train_step(G, D, og, od, data, cfg, gen)
        moved[r1] = torch.cat([p.detach().flatten() for p in D.parameters()])
    assert not torch.equal(moved[0.0], moved[10.0])


def test_defaults_leave_the_toolbox_off():
    """pack 1, no spectral norm, r1 = r2 = 0: no penalty metrics and plain layers."""
    cfg = _tiny("dcgan28", "mnist")
    G, D, og, od, data, gen = _setup(cfg)
    assert not any(hasattr(m, "parametrizations") for m in D.modules())
    m = train_step(G, D, og, od, data, cfg, gen)
    assert "r1" not in m and "r2" not in m


# ---------------------------------------------------------------- searchable like any setting


def test_the_toolbox_knobs_are_searchable_in_a_spec():
    """search: pack choice, spectral_norm choice, r1 loguniform -> Tune's space; a sampled trial validates."""
    from search_spaces.loader import spec_from_text
    from search_spaces.tune_space import param_space, trial_trainer_config

    spec = spec_from_text(
        "name: t\ntrainer: {model: mlp2d, data: grid25, batch_size: 64}\n"
        "search:\n  pack: {choice: [1, 2, 4]}\n  spectral_norm: {choice: [false, true]}\n"
        "  r1: {loguniform: [0.1, 10]}\n  r2: {uniform: [0, 1]}\n"
    )
    assert set(param_space(spec)) == {"pack", "spectral_norm", "r1", "r2"}
    cfg = trial_trainer_config(spec, {"pack": 4, "spectral_norm": True, "r1": 1.5, "r2": 0.5})
    assert (cfg["pack"], cfg["spectral_norm"], cfg["r1"], cfg["r2"]) == (4, True, 1.5, 0.5)


def test_a_spec_whose_batch_pack_does_not_divide_is_refused_with_its_path():
    """A searched pack that the fixed batch_size cannot hold is a spec error at search.pack, nothing launched."""
    from search_spaces.loader import SpecError, spec_from_text

    with pytest.raises(SpecError) as e:
        spec_from_text(
            "name: t\ntrainer: {model: mlp2d, data: grid25, batch_size: 30}\nsearch: {pack: {choice: [1, 4]}}\n"
        )
    assert "search.pack" in str(e.value) and "multiple of 4" in str(e.value)


def test_an_overflowing_scaled_inner_gradient_is_taken_again_unscaled():
    """fp16's loss scale multiplies the penalty's inner gradient; where that overflows, the penalty is
    computed unscaled instead of becoming inf (and the scaler, not a divergence, handles the update)."""
    D = nn.Linear(2, 1)
    with torch.no_grad():
        D.weight.copy_(torch.tensor([[3.0, -4.0]]))
    x = torch.randn(4, 2, requires_grad=True)
    assert r_penalty(D(x).view(-1), x, scale=1e38).item() == pytest.approx(25.0)  # 4e38 overflows fp32
