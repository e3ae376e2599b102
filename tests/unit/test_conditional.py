"""cdcgan28, the class-conditional DCGAN (trainers/models/conditional.py): the label reaches every layer
of both networks, training feeds real labels to D and uniform fake labels to G and D, a resume
replays bit for bit, and evaluation measures whether G draws the class it was asked for."""

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from trainers.checkpoint import (
    load_generator,
    load_state,
    restore,
    save_generator,
    save_state,
)
from trainers.config import TrainerConfig
from trainers.data import load_mnist, load_mnist_labels, make_data
from trainers.evaluate import Evaluator
from trainers.loop import fixed_noise
from trainers.models import build_models, sample_latent
from trainers.models.conditional import NUM_CLASSES, grid_labels
from trainers.step import build_optimizers, train_step

CDCGAN = TrainerConfig(model="cdcgan28", data="mnist", width=4, latent_dim=8, batch_size=8)


def _inputs(n=10, seed=0):
    z = sample_latent(n, CDCGAN, torch.Generator().manual_seed(seed))
    return z, torch.arange(n) % NUM_CLASSES


def test_shapes_range_and_raw_logit():
    G, D = build_models(CDCGAN)
    z, y = _inputs(6)
    x = G(z, y)
    assert x.shape == (6, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert D(x, y).shape == (6, 1)
    assert G.conditional and D.conditional and not any(isinstance(m, nn.Sigmoid) for m in D.modules())


def test_only_mnist_and_a_clear_message_otherwise():
    with pytest.raises(ValidationError, match="cannot train on data 'grid25'; use data: mnist"):
        TrainerConfig(model="cdcgan28", data="grid25")


@pytest.mark.parametrize("net", ["G", "D"])
def test_the_one_hot_class_is_concatenated_to_the_input_of_every_layer(net):
    """Every conv / linear layer's input ends with the one-hot: 10 constant maps (all zeros but
    map[class], all ones) for a conv, a length-10 vector for a linear layer (GAN_NOTES, DIGITS)."""
    G, D = build_models(CDCGAN)
    module = G if net == "G" else D
    z, y = _inputs(4)
    seen = []

    def check(layer, args):
        (x,) = args
        tail = x[:, -NUM_CLASSES:]
        expected = torch.nn.functional.one_hot(y, NUM_CLASSES).float()
        if x.dim() == 4:
            expected = expected[:, :, None, None].expand_as(tail)
        assert torch.equal(tail, expected), f"{layer} does not see the class"
        seen.append(type(layer).__name__)

    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    for m in layers:
        m.register_forward_pre_hook(check)
    with torch.no_grad():
        module(z, y) if net == "G" else module(G(z, y), y)
    assert len(seen) == len(layers) == 3


def test_the_label_changes_gs_samples_and_ds_verdict():
    G, D = build_models(CDCGAN)
    G.eval(), D.eval()
    z, _ = _inputs(10)
    with torch.no_grad():
        x3, x7 = G(z, torch.full((10,), 3)), G(z, torch.full((10,), 7))
        assert (x3 - x7).abs().max() > 1e-3  # same z, other class: another image
        real = load_mnist()[:10]
        assert (D(real, torch.full((10,), 3)) - D(real, torch.full((10,), 7))).abs().max() > 1e-4


def test_init_follows_radford():
    G, D = build_models(CDCGAN.model_copy(update={"width": 32}))
    convs = [m for m in [*G.modules(), *D.modules()] if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert abs(torch.cat([m.weight.flatten() for m in convs]).std().item() - 0.02) < 0.002
    assert not isinstance(list(D.children())[1], nn.BatchNorm2d)  # conv1 -> LeakyReLU, no BN on D's first layer


def test_labeled_source_returns_each_image_with_its_own_label_and_the_same_draws():
    data = make_data(CDCGAN)
    images, labels = data.sample_labeled(64, torch.Generator().manual_seed(5))
    idx = torch.randint(0, 5000, (64,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(images, load_mnist()[idx]) and torch.equal(labels, load_mnist_labels()[idx])
    assert torch.equal(data.sample(64, torch.Generator().manual_seed(5)), images)
    assert make_data(TrainerConfig()).labels is None  # unconditional: no labels kept


@pytest.mark.parametrize("loss", ["nonsaturating", "hinge", "wgan-gp"])
def test_a_train_step_runs_finite_and_updates_both_networks(loss):
    cfg = CDCGAN.model_copy(update={"loss": loss, "dg_ratio": "2:2"})
    G, D = build_models(cfg)
    og, od = build_optimizers(G, D, cfg)

    def params():
        return {f"{n}.{k}": p.detach().clone() for n, net in (("G", G), ("D", D)) for k, p in net.named_parameters()}

    before = params()
    m = train_step(G, D, og, od, make_data(cfg), cfg, torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) for v in m.values())
    unchanged = [k for k, v in params().items() if torch.equal(v, before[k])]
    # Under the critic losses D's output bias cancels (mean over real minus mean over fake).
    assert unchanged == ([] if loss == "nonsaturating" else ["D.out.bias"])


def test_d_is_trained_on_the_real_images_own_labels():
    """One D step on a batch whose labels are swapped for wrong ones gives another D than one on
    the true labels: the real labels reach D's loss."""

    class Relabeled:
        def __init__(self, shift):
            self.src, self.shift = make_data(CDCGAN), shift

        def sample_labeled(self, n, gen):
            x, y = self.src.sample_labeled(n, gen)
            return x, (y + self.shift) % NUM_CLASSES

    out = []
    for shift in (0, 1):
        G, D = build_models(CDCGAN)
        og, od = build_optimizers(G, D, CDCGAN)
        train_step(G, D, og, od, Relabeled(shift), CDCGAN, torch.Generator().manual_seed(0))
        out.append(torch.cat([p.detach().flatten() for p in D.parameters()]))
    assert not torch.equal(*out)


def test_resumed_run_matches_uninterrupted_run_bit_for_bit(tmp_path):
    cfg = CDCGAN
    G, D = build_models(cfg)
    og, od = build_optimizers(G, D, cfg)
    data, gen = make_data(cfg), torch.Generator().manual_seed(cfg.seed)
    for _ in range(3):
        train_step(G, D, og, od, data, cfg, gen)
    save_state(tmp_path / "state.pt", G, D, og, od, 3, cfg.model_dump(), gen)
    uninterrupted = [train_step(G, D, og, od, data, cfg, gen) for _ in range(2)]

    G2, D2 = build_models(cfg.model_copy(update={"seed": 99}))
    og2, od2 = build_optimizers(G2, D2, cfg)
    gen2 = torch.Generator().manual_seed(12345)
    assert restore(load_state(tmp_path / "state.pt"), G2, D2, og2, od2, gen2) == 3
    assert [train_step(G2, D2, og2, od2, data, cfg, gen2) for _ in range(2)] == uninterrupted
    for a, b in zip(
        [*G.state_dict().values(), *D.state_dict().values()], [*G2.state_dict().values(), *D2.state_dict().values()]
    ):
        assert torch.equal(a, b)


def test_saved_conditional_generator_rebuilds_from_its_config(tmp_path):
    G, _ = build_models(CDCGAN)
    save_generator(tmp_path / "g.pt", G, CDCGAN.model_dump())
    G2, cfg = load_generator(tmp_path / "g.pt")
    z, y = _inputs(5)
    with torch.no_grad():
        assert cfg.is_conditional and torch.equal(G.eval()(z, y), G2(z, y))


def test_fixed_noise_grid_has_one_column_per_class_and_one_z_per_row():
    z = fixed_noise(CDCGAN)
    assert z.shape == (80, 8)
    rows = z.view(8, NUM_CLASSES, 8)
    assert torch.equal(rows, rows[:, :1].expand_as(rows)) and not torch.equal(rows[0, 0], rows[1, 0])
    assert grid_labels(80)[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


class _Oracle(nn.Module):
    """A 'generator' that returns a real digit of the requested class (or of class+shift)."""

    conditional = True

    def __init__(self, shift=0):
        super().__init__()
        self.shift = shift
        images, labels = load_mnist(), load_mnist_labels()
        self.by_class = [images[labels == k] for k in range(NUM_CLASSES)]

    def forward(self, z, y):
        return torch.stack([self.by_class[(int(k) + self.shift) % NUM_CLASSES][i % 100] for i, k in enumerate(y)])


def test_class_match_measures_the_conditioning_and_the_grid_shows_the_classes(feature_cache):
    """An oracle drawing real digits of the asked class scores ~ the classifier's accuracy; one
    drawing the next class scores ~0. The grid: 8 rows x 10 columns of 28x28 cells."""
    cfg = CDCGAN.model_copy(update={"eval_samples": 500})
    ev = Evaluator(cfg, feature_cache)
    scores, picture = ev.evaluate(_Oracle(), fixed_noise(cfg))
    assert scores["class_match"] > 0.9 and scores["class_coverage"] == 10
    assert picture.shape == (8 * 30 + 2, 10 * 30 + 2)
    assert ev.evaluate(_Oracle(shift=1), fixed_noise(cfg))[0]["class_match"] < 0.1


def test_class_match_is_a_sweep_metric_of_conditional_models_only():
    """cdcgan28 sweeps may rank by class_match (higher is better); dcgan28 does not report it."""
    from search_spaces.loader import SpecError, spec_from_text

    spec = spec_from_text("name: c\ntrainer: {model: cdcgan28, data: mnist}\nsweep: {metric: class_match}\n")
    assert (spec.metric, spec.mode) == ("class_match", "max")
    with pytest.raises(SpecError, match="'class_match' is not reported"):
        spec_from_text("name: c\ntrainer: {model: dcgan28, data: mnist}\nsweep: {metric: class_match}\n")


def test_pbt_exploit_and_ema_work_on_the_conditional_networks(tmp_path):
    """A PBT exploit (trainers/loop.py _exploit) takes a cdcgan28 donor's networks and then trains
    on; with ema the averaged G is what save_state / load_generator hand to sampling."""
    from trainers.loop import CHECKPOINT_FILE, _exploit
    from trainers.step import build_ema

    cfg = CDCGAN.model_copy(update={"ema": 0.9})
    donor = build_models(cfg)
    d_opts = build_optimizers(*donor, cfg)
    d_ema = build_ema(donor[0], cfg)
    gen = torch.Generator().manual_seed(1)
    train_step(*donor, *d_opts, make_data(cfg), cfg, gen, ema=d_ema)
    save_state(tmp_path / CHECKPOINT_FILE, *donor, *d_opts, 1, cfg.model_dump(), gen, ema=d_ema)

    G, D = build_models(cfg.model_copy(update={"seed": 5}))
    opt_g, opt_d = build_optimizers(G, D, cfg)
    ema = build_ema(G, cfg)
    new = _exploit(
        {"donor": "d", "checkpoint": str(tmp_path), "config": {"lr_d": 1e-4}}, cfg, G, D, opt_g, opt_d, (), ema
    )
    assert new.lr_d == 1e-4
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            [*G.state_dict().values(), *D.state_dict().values()],
            [*donor[0].state_dict().values(), *donor[1].state_dict().values()],
        )
    )
    assert all(math.isfinite(v) for v in train_step(G, D, opt_g, opt_d, make_data(new), new, gen, ema=ema).values())

    G_avg, _ = load_generator(tmp_path / CHECKPOINT_FILE)
    z, y = _inputs(4)
    with torch.no_grad():
        assert torch.equal(G_avg(z, y), d_ema.module.eval()(z, y))
