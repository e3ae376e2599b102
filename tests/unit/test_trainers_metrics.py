import math

import numpy as np
import pytest
import torch

import trainers.metrics as metrics
from trainers.data import load_mnist, load_mnist_labels, mixture_means, mixture_sigma
from trainers.metrics import (
    FeatureScorer,
    FidScorer,
    MnistClassifier,
    MnistFeatures,
    density_coverage,
    image_grid,
    inception_score,
    load_feature_extractor,
    mean_pairwise_distance,
    mixture_scores,
    pixel_histogram_distance,
    precision_recall,
    scatter_png,
    stacked_mnist_scores,
    stratified_split,
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
    assert k - 0.5 < s["eff_modes"] <= k
    assert s["near_pct"] == 100.0  # a quarter spacing is >= 7 sigma on both


def test_near_pct_counts_samples_within_a_quarter_spacing_and_is_near_chance_for_noise():
    """grid25: spacing 2, so 0.5 from a mean is near and 0.6 is not; uniform noise over the
    grid's box lands near a mean about pi * 0.5^2 / 2^2 = 20% of the time."""
    means = mixture_means("grid25")
    s = mixture_scores(torch.cat([means + torch.tensor([0.45, 0.0]), means + torch.tensor([0.0, 0.6])]), "grid25")
    assert s["near_pct"] == pytest.approx(50.0)
    assert s["hq_pct"] == 0.0
    noise = torch.rand(20000, 2, generator=torch.Generator().manual_seed(0)) * 10 - 5
    assert 18.0 < mixture_scores(noise, "grid25")["near_pct"] < 22.0


def test_samples_all_at_one_mean_score_one_mode_and_reverse_kl_log_k():
    """Total collapse onto one mean: 1 mode, 100% HQ, reverse KL = log K."""
    s = mixture_scores(mixture_means("grid25")[7].repeat(2500, 1), "grid25")
    assert s == {
        "modes": 1,
        "hq_pct": 100.0,
        "reverse_kl": pytest.approx(math.log(25)),
        "eff_modes": pytest.approx(1.0),
        "near_pct": 100.0,
    }


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


def test_mnist_classifier_reaches_97_percent_held_out(feature_cache):
    """The feature net must be a real digit classifier: >= 97% on 1,000 stratified held-out digits
    (the session's cached classifier, trained by the same function with its default epochs)."""
    acc = load_feature_extractor(feature_cache).heldout_acc
    assert acc >= 0.97  # (its training time is bench/classifier.py's business, not a test's)


def test_classifier_training_runs_on_one_thread_and_gives_the_callers_count_back():
    threads = torch.get_num_threads()
    metrics.train_mnist_classifier(epochs=1)
    assert torch.get_num_threads() == threads


def test_stratified_split_holds_out_100_of_each_class_disjoint_from_training():
    labels = load_mnist_labels()
    train, held = stratified_split(labels, 100, seed=0)
    assert held.numel() == 1000 and train.numel() == 4000
    assert set(train.tolist()).isdisjoint(held.tolist())
    assert torch.bincount(labels[held], minlength=10).tolist() == [100] * 10


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


# ---------------------------------------------------------------- KID, IS, precision/recall, density/coverage


@pytest.fixture(scope="module")
def trained_extractor(feature_cache):
    """The real cached classifier (trained once per test session)."""
    return load_feature_extractor(feature_cache)


@pytest.fixture(scope="module")
def shuffled_mnist():
    return load_mnist()[torch.randperm(5000, generator=torch.Generator().manual_seed(0))]


def _cloud(n, center, seed, dim=8):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + center


def test_precision_recall_toy_clouds():
    """Same distribution -> both high; far apart -> 0; fakes on half the data -> precision high, recall low."""
    real = _cloud(500, 0.0, 0)
    same = precision_recall(real, _cloud(500, 0.0, 1), k=3)
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    assert precision_recall(real, real, k=3) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(real, _cloud(500, 100.0, 2), k=3) == {"precision": 0.0, "recall": 0.0}
    # two real clusters; the fakes sit on one of them only (mode dropping)
    two = torch.cat([_cloud(250, 0.0, 3), _cloud(250, 50.0, 4)])
    half = torch.cat([_cloud(250, 0.0, 5), _cloud(250, 0.0, 6)])
    pr = precision_recall(two, half, k=3)
    assert pr["precision"] > 0.8 and pr["recall"] < 0.55
    # fakes that are a subset of the reals (one cluster): every fake is real, half the data missed
    sub = precision_recall(two, two[:250], k=3)
    assert sub["precision"] == 1.0 and sub["recall"] < 0.55


def test_density_coverage_toy_clouds():
    """Identical sets: coverage 1, density ~1; far fakes: 0, 0; fakes piled on a few reals: low coverage."""
    real = _cloud(500, 0.0, 0)
    same = density_coverage(real, _cloud(500, 0.0, 1), k=5)
    assert 0.7 < same["density"] < 1.3 and same["coverage"] > 0.9
    assert density_coverage(real, real, k=5)["coverage"] == 1.0
    assert density_coverage(real, _cloud(500, 100.0, 2), k=5) == {"density": 0.0, "coverage": 0.0}
    collapsed = real[:5].repeat(100, 1)  # every fake is one of 5 reals
    assert density_coverage(real, collapsed, k=5)["coverage"] < 0.1


def test_inception_score_known_answers_and_matches_torchmetrics():
    """Confident and balanced over C classes -> C; the same prediction everywhere -> 1; and the
    formula equals torchmetrics' InceptionScore(splits=1) over a logits-returning module."""
    from torchmetrics.image.inception import InceptionScore

    eye = 50.0 * torch.eye(10).repeat(30, 1)  # 300 confident samples, 30 per class
    assert inception_score(eye) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(eye[:1].repeat(300, 1)) == pytest.approx(1.0)
    assert inception_score(torch.zeros(300, 10)) == pytest.approx(1.0)
    logits = torch.randn(400, 10, generator=torch.Generator().manual_seed(0)) * 3
    tm = InceptionScore(feature=torch.nn.Identity(), splits=1)
    tm.update(logits)
    assert inception_score(logits) == pytest.approx(float(tm.compute()[0]), rel=1e-4)


def test_mean_pairwise_distance():
    assert mean_pairwise_distance(torch.ones(10, 3)) == 0.0
    two = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert mean_pairwise_distance(two) == pytest.approx(5.0)


@pytest.mark.slow
def test_feature_scorer_real_vs_real_is_near_the_ceiling_and_noise_is_far(trained_extractor, shuffled_mnist):
    """Disjoint halves of MNIST: KID ~0, IS near 10, precision/recall/coverage high, diversity ~1;
    uniform noise: KID clearly larger, IS lower, precision 0."""
    scorer = FeatureScorer(trained_extractor, shuffled_mnist[:2500])
    real = scorer.score(shuffled_mnist[2500:3500])
    noise = scorer.score(torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert abs(real["kid"]) < 0.005
    assert noise["kid"] > 0.3
    assert 8.0 < real["inception_score"] <= 10.0
    assert 1.0 <= noise["inception_score"] < real["inception_score"]
    assert real["precision"] > 0.6 and real["recall"] > 0.6 and real["coverage"] > 0.8
    assert noise["recall"] < 0.05 and noise["coverage"] < 0.05 and noise["density"] < 0.5
    # (noise's precision is NOT reliably low: its features huddle in one small clump that a few
    # real digits' k-NN balls can hold, 0.14 with one classifier and 0.74 with another, the
    # outlier weakness Naeem et al. built density/coverage against.)
    assert 0.9 < real["diversity"] < 1.1
    # one digit repeated: no diversity, low recall
    one = scorer.score(shuffled_mnist[2500:2501].repeat(1000, 1, 1, 1))
    assert one["diversity"] == pytest.approx(0.0, abs=1e-6) and one["recall"] < 0.05
    # scoring is repeatable and leaves the global RNG alone
    state = torch.random.get_rng_state()
    assert scorer.score(shuffled_mnist[2500:3500])["kid"] == pytest.approx(real["kid"], rel=1e-9, abs=1e-12)
    assert torch.equal(state, torch.random.get_rng_state())


# ---------------------------------------------------------------- Stacked MNIST


def _stacked_real(n, seed=0):
    """n Stacked MNIST samples from the 5k: three random digits as the RGB channels, and their 3-digit class."""
    g = torch.Generator().manual_seed(seed)
    x, y = load_mnist(), load_mnist_labels()
    idx = torch.randint(0, x.shape[0], (n, 3), generator=g)
    return x[idx].squeeze(2), y[idx[:, 0]] * 100 + y[idx[:, 1]] * 10 + y[idx[:, 2]]


@pytest.mark.slow
def test_stacked_mnist_scores_on_real_samples_reach_near_all_modes(trained_extractor):
    """26,000 real stacked samples (the papers' N): ~all 1,000 modes, KL near its ~0.02 sampling floor."""
    images, cls = _stacked_real(26000)
    assert images.shape == (26000, 3, 28, 28)
    s = stacked_mnist_scores(images, trained_extractor.classifier)
    assert s["modes"] >= 990
    assert s["kl"] < 0.06
    # collapse onto one 3-digit class: 1 mode, KL = ln 1000
    same = images[cls == cls[0]][:1].repeat(500, 1, 1, 1)
    c = stacked_mnist_scores(same, trained_extractor.classifier)
    assert c["modes"] == 1 and c["kl"] == pytest.approx(math.log(1000))


def test_stacked_mnist_scores_rejects_wrong_shape(trained_extractor):
    with pytest.raises(ValueError, match=r"\(N, 3, 28, 28\)"):
        stacked_mnist_scores(torch.zeros(4, 1, 28, 28), trained_extractor.classifier)


def test_evaluator_reports_the_new_image_scores_beside_the_old(feature_cache):
    """The mnist eval keeps fid/class_coverage/class_kl/pixel_hist and adds the feature scores."""
    from trainers.config import TrainerConfig
    from trainers.evaluate import Evaluator
    from trainers.models import build_models, sample_latent

    cfg = TrainerConfig(model="dcgan28", data="mnist", eval_samples=200)
    G, _ = build_models(cfg)
    ev = Evaluator(cfg, cache_dir=feature_cache)
    scores, picture = ev.evaluate(G, sample_latent(16, cfg, torch.Generator().manual_seed(0)))
    assert set(scores) == {
        "fid",
        "class_coverage",
        "class_kl",
        "pixel_hist",
        "kid",
        "inception_score",
        "precision",
        "recall",
        "density",
        "coverage",
        "diversity",
    }
    assert all(math.isfinite(v) for v in scores.values())
    assert 1.0 <= scores["inception_score"] <= 10.0 and scores["kid"] > 0
    assert picture.dtype == np.uint8


@pytest.mark.parametrize(
    "metric,mode",
    [("kid", "min"), ("inception_score", "max"), ("precision", "max"), ("recall", "max"), ("coverage", "max")],
)
def test_new_image_scores_can_be_a_sweep_metric(metric, mode):
    from orchestrator.api import load_spec

    spec = load_spec("search_spaces/dcgan.yaml", [f"sweep.metric={metric}", f"sweep.mode={mode}"])
    assert spec.sweep.metric == metric


def test_feature_scorer_handles_more_fakes_than_reals(trained_extractor, shuffled_mnist):
    """More fakes than reals (eval_samples may exceed the 5k): the k-NN scores use equal-size sets."""
    scorer = FeatureScorer(trained_extractor, shuffled_mnist[:300])
    s = scorer.score(shuffled_mnist[300:1100])
    assert all(math.isfinite(v) for v in s.values())
    assert s["precision"] > 0.5 and s["recall"] > 0.5


def test_evaluator_scores_stacked_mnist_modes_and_kl(feature_cache):
    """data: stacked_mnist reports modes of 1,000 and KL: real stacked digits find most modes
    at 2,600 samples, a collapsed G one."""
    import torch

    from trainers.config import TrainerConfig
    from trainers.data import stacked_mnist_batch
    from trainers.evaluate import Evaluator

    cfg = TrainerConfig(model="dcgan28", data="stacked_mnist", eval_samples=2600)
    ev = Evaluator(cfg, feature_cache)
    gen = torch.Generator().manual_seed(1)

    class Real(torch.nn.Module):
        def forward(self, z):
            return stacked_mnist_batch(z.shape[0], gen)[0]

    class Collapsed(torch.nn.Module):
        def forward(self, z):
            return stacked_mnist_batch(1, torch.Generator().manual_seed(0))[0].expand(z.shape[0], -1, -1, -1)

    noise = torch.zeros(8, cfg.latent_dim)
    real, picture = ev.evaluate(Real(), noise)
    assert real["modes"] > 850 and real["kl"] < 0.4, real
    assert picture.shape[-1] == 3  # an RGB grid
    collapsed, _ = ev.evaluate(Collapsed(), noise)
    assert collapsed["modes"] == 1 and collapsed["kl"] > 6.5  # log(1000) = 6.91


def test_real_features_are_featurised_once_per_real_set_and_network(tmp_path, trained_extractor, shuffled_mnist):
    """cached_real_features: the first call computes and keeps the features on disk, the next
    loads them; another real set or other weights miss; an unreadable file is computed again.
    FID from the cached features equals FID that featurises the reals itself."""
    real, fakes = shuffled_mnist[:400], shuffled_mnist[400:800]
    calls = []

    def compute(net=trained_extractor, x=real):
        calls.append(1)
        return metrics.featurise(net, x)

    first = metrics.cached_real_features(trained_extractor, real, tmp_path, compute)
    again = metrics.cached_real_features(trained_extractor, real, tmp_path, compute)
    assert len(calls) == 1 and torch.equal(first, again) and first.shape == (400, 128)
    other = shuffled_mnist[800:1200]
    metrics.cached_real_features(trained_extractor, other, tmp_path, lambda: compute(x=other))
    assert len(calls) == 2
    retrained = MnistFeatures(MnistClassifier())  # same architecture, other weights
    metrics.cached_real_features(retrained, real, tmp_path, lambda: compute(net=retrained))
    assert len(calls) == 3
    files = sorted((tmp_path / "real_features").iterdir())
    assert len(files) == 3
    for f in files:
        f.write_bytes(b"not a tensor")
    assert torch.equal(metrics.cached_real_features(trained_extractor, real, tmp_path, compute), first)
    assert len(calls) == 4
    own = FidScorer(trained_extractor, real).score(fakes)
    assert FidScorer(trained_extractor, real, real_features=first).score(fakes) == pytest.approx(own, rel=1e-9)
    shared = metrics.featurise(trained_extractor, fakes)
    assert FidScorer(trained_extractor, real).score(fakes, features=shared) == pytest.approx(own, rel=1e-9)
