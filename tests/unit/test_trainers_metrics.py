import math

import numpy as np
import pytest
import torch

import trainers.metrics as metrics
from trainers.data import load_mnist, mixture_means, mixture_sigma
from trainers.metrics import (
    FidScorer,
    MnistClassifier,
    MnistFeatures,
    image_grid,
    load_feature_extractor,
    mixture_scores,
    pixel_histogram_distance,
    scatter_png,
)


def _true_mixture(name, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = mixture_means(name)
    comp = torch.randint(0, len(means), (n,), generator=g)
    return means[comp] + mixture_sigma(name) * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("name,k", [("grid25", 25), ("ring8", 8)])
def test_true_mixture_samples_cover_all_modes_at_the_hq_ceiling(name, k):
    """2,500 real samples: every mode, ~98.9% within 3 sigma, reverse KL near its ~(K-1)/2N floor."""
    s = mixture_scores(_true_mixture(name, 2500), name)
    assert s["modes"] == k
    assert 98.0 <= s["hq_pct"] <= 99.7
    assert 0 <= s["reverse_kl"] < 0.02


def test_samples_all_at_one_mean_score_one_mode_and_reverse_kl_log_k():
    """Total collapse onto one mean: 1 mode, 100% HQ, reverse KL = log K."""
    s = mixture_scores(mixture_means("grid25")[7].repeat(2500, 1), "grid25")
    assert s == {"modes": 1, "hq_pct": 100.0, "reverse_kl": pytest.approx(math.log(25))}


def test_low_quality_samples_count_for_kl_but_not_for_modes():
    """A mode needs an HQ sample; reverse KL bins every sample by its nearest mean."""
    means = mixture_means("ring8")
    far = means * 1.2  # 0.2 from each mean: nearest is still that mean, but far outside 3 sigma
    s = mixture_scores(torch.cat([means[:1].repeat(8, 1), far]), "ring8")
    assert s["modes"] == 1
    assert s["hq_pct"] == pytest.approx(50.0)
    # histogram: mean 0 has 9/16, the other seven 1/16 each
    p = torch.tensor([9 / 16] + [1 / 16] * 7)
    assert s["reverse_kl"] == pytest.approx(float((p * torch.log(8 * p)).sum()))


def test_pixel_histogram_distance_is_zero_for_identical_and_large_for_disjoint():
    """L1 between normalised histograms: 0 for the same images, 2 for disjoint pixel values."""
    x = load_mnist()[:200]
    assert pixel_histogram_distance(x, x.clone()) == 0.0
    assert pixel_histogram_distance(-torch.ones(10, 1, 28, 28), torch.ones(10, 1, 28, 28)) == pytest.approx(2.0)
    assert pixel_histogram_distance(x, torch.rand_like(x) * 2 - 1) > 0.5


def test_fid_is_small_real_vs_real_and_large_real_vs_noise():
    """Two disjoint halves of MNIST are close in feature space; uniform noise is far."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        extractor = MnistFeatures(MnistClassifier()).eval()  # untrained: enough to separate digits from noise
    x = load_mnist()[torch.randperm(5000, generator=torch.Generator().manual_seed(0))]
    scorer = FidScorer(extractor, x[:1000])
    real_vs_real = scorer.score(x[1000:2000])
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    real_vs_noise = scorer.score(noise)
    assert real_vs_real >= 0
    assert real_vs_noise > 20 * real_vs_real
    # reset() between evals keeps the real statistics: scoring again gives the same number
    assert scorer.score(x[1000:2000]) == pytest.approx(real_vs_real, rel=1e-6)


def test_class_coverage_counts_predicted_classes():
    """class_coverage: number of argmax classes hit and KL of their histogram to uniform."""
    clf = MnistClassifier().eval()
    with torch.no_grad():
        clf.head.weight.zero_()
        clf.head.bias.copy_(torch.arange(10.0))  # always predicts class 9
    scorer = FidScorer(MnistFeatures(clf), load_mnist()[:300])
    n, kl = scorer.class_coverage(load_mnist()[:50])
    assert n == 1 and kl == pytest.approx(math.log(10))


def test_feature_extractor_is_trained_once_then_loaded_from_cache(tmp_path, monkeypatch):
    """First call trains and writes mnist_lenet_<hash>.pt atomically; later calls load it without training."""
    calls = []

    def fake_train(epochs=8, seed=0):
        calls.append(1)
        return MnistClassifier().eval(), 0.5

    monkeypatch.setattr(metrics, "train_mnist_classifier", fake_train)
    a = load_feature_extractor(tmp_path)
    b = load_feature_extractor(tmp_path)
    assert len(calls) == 1
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("mnist_lenet_") and files[0].suffix == ".pt"
    assert a.num_features == 128 and not a.training and b.heldout_acc == 0.5
    x = load_mnist()[:4]
    assert torch.equal(a(x), b(x)) and a(x).shape == (4, 128)


def test_mnist_classifier_reaches_96_percent_held_out():
    """The FID feature net must be a real digit classifier: >= 96% on 1,000 held-out digits."""
    _, acc = metrics.train_mnist_classifier()
    assert acc >= 0.96  # (its training time is a benchmark's business, not a test's)


def test_image_grid_lays_out_images_as_uint8():
    """N images in [-1, 1] -> one uint8 mosaic, -1 -> 0 and 1 -> 255, grey for C=1, HWC for C=3."""
    x = -torch.ones(10, 1, 28, 28)
    x[3] = 1.0
    g = image_grid(x, nrow=4, padding=2)
    assert g.dtype == np.uint8 and g.shape == (3 * 30 + 2, 4 * 30 + 2)
    assert g[2 + 5, 2 + 3 * 30 + 5] == 255 and g[2 + 5, 2 + 5] == 0
    assert image_grid(torch.zeros(2, 3, 8, 8), nrow=2).shape == (12, 22, 3)


@pytest.mark.parametrize("name", ["grid25", "ring8"])
def test_scatter_png_is_rgb_uint8(name):
    """scatter_png renders 2,500 points plus means as (H, W, 3) uint8."""
    pts = _true_mixture(name, 2500)
    img = scatter_png(pts, name)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    assert (img != 255).any(axis=2).sum() > 100
