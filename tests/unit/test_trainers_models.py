import torch
from torch import nn

from trainers.config import TrainerConfig
from trainers.data import load_mnist, load_mnist_labels, make_data, mixture_means, mixture_sigma
from trainers.models import build_models, sample_latent

DCGAN = TrainerConfig(model="dcgan28", data="mnist", width=8, latent_dim=16)
MLP = TrainerConfig(model="mlp2d", data="grid25", width=16, latent_dim=8)


def test_dcgan28_maps_latent_to_28x28_images_in_tanh_range_and_d_to_one_logit():
    """G: (B, latent_dim) -> (B, 1, 28, 28) in [-1, 1]; D: images -> (B, 1) unbounded logits."""
    G, D = build_models(DCGAN)
    z = sample_latent(5, DCGAN, torch.Generator().manual_seed(0))
    x = G(z)
    assert x.shape == (5, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (5, 1)
    assert G.latent_dim == 16
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())


def test_dcgan28_discriminator_has_no_batchnorm_before_its_first_activation():
    """Radford et al.: D's first conv feeds LeakyReLU directly, not BN."""
    _, D = build_models(DCGAN)
    layers = list(D.net)
    assert isinstance(layers[0], nn.Conv2d) and isinstance(layers[1], nn.LeakyReLU)


def test_dcgan28_init_follows_radford():
    """Conv weights ~ N(0, 0.02), BN scales ~ N(1, 0.02), biases 0."""
    G, D = build_models(TrainerConfig(width=32))
    convs = [m for m in [*G.modules(), *D.modules()] if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    w = torch.cat([m.weight.flatten() for m in convs])
    assert abs(w.std().item() - 0.02) < 0.002
    bns = [m for m in [*G.modules(), *D.modules()] if isinstance(m, nn.BatchNorm2d)]
    s = torch.cat([m.weight for m in bns])
    assert abs(s.mean().item() - 1.0) < 0.01 and all((m.bias == 0).all() for m in bns)


def test_mlp2d_maps_latent_to_points_and_points_to_one_logit():
    """mlp2d: (B, latent_dim) -> (B, 2) -> (B, 1)."""
    G, D = build_models(MLP)
    z = sample_latent(7, MLP, torch.Generator().manual_seed(0))
    assert G(z).shape == (7, 2)
    assert D(G(z)).shape == (7, 1)


def test_build_models_is_a_function_of_the_seed_and_leaves_global_rng_alone():
    """Same seed -> same weights; other seed -> other weights; torch's global RNG is not consumed."""
    before = torch.get_rng_state()
    a, _ = build_models(MLP)
    b, _ = build_models(MLP)
    c, _ = build_models(MLP.model_copy(update={"seed": 1}))
    assert torch.equal(torch.get_rng_state(), before)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_uniform_latent_lies_in_unit_cube_and_normal_does_not():
    """latent_dist uniform draws U[-1, 1]; normal draws N(0, I)."""
    g = torch.Generator().manual_seed(0)
    u = sample_latent(2000, MLP.model_copy(update={"latent_dist": "uniform"}), g)
    n = sample_latent(2000, MLP, g)
    assert u.shape == (2000, 8) and u.abs().max() <= 1 and abs(u.mean().item()) < 0.05
    assert n.abs().max() > 1 and abs(n.std().item() - 1) < 0.05


def test_ring8_has_eight_distinct_means_on_the_unit_circle():
    """2*pi*k/8, k = 0..7: never linspace(0, 2*pi, 8), which repeats a mode."""
    m = mixture_means("ring8")
    assert m.shape == (8, 2)
    assert torch.allclose(m.norm(dim=1), torch.ones(8), atol=1e-6)
    assert torch.pdist(m).min() > 0.7  # neighbours are 2 sin(pi/8) ~ 0.765 apart
    assert mixture_sigma("ring8") == 0.01


def test_grid25_means_are_the_5x5_grid_with_spacing_2():
    """PacGAN grid: {-4, -2, 0, 2, 4}^2, sigma 0.05."""
    m = mixture_means("grid25")
    assert m.shape == (25, 2)
    assert set(m[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert len({tuple(r) for r in m.tolist()}) == 25
    assert mixture_sigma("grid25") == 0.05


def test_mixture_source_draws_points_near_the_means():
    """Real mixture samples sit within a few sigma of a mean."""
    x = make_data(MLP).sample(1000, torch.Generator().manual_seed(0))
    assert x.shape == (1000, 2)
    d = torch.cdist(x, mixture_means("grid25")).min(dim=1).values
    assert d.max() < 6 * 0.05


def test_mnist_is_5000_images_in_minus1_to_1_with_balanced_labels():
    """load_mnist: (5000, 1, 28, 28) float32 in [-1, 1]; labels 500 per class."""
    x, y = load_mnist(), load_mnist_labels()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(torch.bincount(y), torch.full((10,), 500))
    batch = make_data(DCGAN).sample(16, torch.Generator().manual_seed(0))
    assert batch.shape == (16, 1, 28, 28)
