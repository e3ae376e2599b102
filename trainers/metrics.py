"""Sample-based GAN metrics: mode coverage for the 2-D mixtures; for images FID, KID, an
Inception-style score, precision/recall, density/coverage and diversity, all in the feature
space of a small MNIST classifier (no downloads); Stacked MNIST modes; and the pictures
logged alongside them.

Balanced losses are not proof of health (GAN_NOTES), so every eval scores samples.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.data import load_mnist, load_mnist_labels, mixture_means, mixture_sigma

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- 2-D mixtures


def mixture_scores(samples: Tensor, name: str) -> dict[str, float | int]:
    """PacGAN Table 1 protocol on (N, 2) samples (use N = 2,500 to compare with the papers).

    - hq_pct: % of samples within 3 sigma (Euclidean) of their nearest mean; a perfect
      generator scores 1 - exp(-4.5) = 98.9%.
    - modes: means that are the nearest mean of at least one high-quality sample.
    - reverse_kl: sum_k p_k log(K p_k), p = histogram of nearest means over ALL samples
      (PacGAN assigns every sample to its closest mode); p_k = 0 contributes 0. Floor with
      2,500 perfect samples is about (K-1)/(2N), 0.005 for grid25.
    - eff_modes: exp(entropy) of that histogram = K exp(-reverse_kl), the number of means the
      samples effectively spread over: K for an even spread, 1 when every sample has the same
      nearest mean (total collapse), whatever their quality.
    - near_pct (not in the papers): % of samples within a quarter of the spacing between
      neighbouring means (10 sigma on grid25). Chance on grid25's 10x10 box is about 20%.
      It moves before hq_pct does, while G's samples are drawing toward the modes.
    """
    means = mixture_means(name).to(samples)  # (K, 2)
    k = means.shape[0]
    samples = samples.detach().reshape(-1, 2)  # (N, 2)
    dist = torch.cdist(samples, means)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)  # (N,), (N,)
    hq = nearest_dist <= 3 * mixture_sigma(name)  # (N,) bool
    spacing = torch.pdist(means).min()
    near = nearest_dist <= spacing / 4  # (N,) bool
    modes = int(torch.unique(nearest[hq]).numel())
    p = torch.bincount(nearest, minlength=k).double() / max(samples.shape[0], 1)  # (K,)
    nz = p > 0
    reverse_kl = float((p[nz] * torch.log(k * p[nz])).sum())
    return {
        "modes": modes,
        "hq_pct": 100.0 * float(hq.double().mean()),
        "reverse_kl": reverse_kl,
        "eff_modes": k * math.exp(-reverse_kl),
        "near_pct": 100.0 * float(near.double().mean()),
    }


# ---------------------------------------------------------------- MNIST classifier for FID


class MnistClassifier(nn.Module):
    """LeNet-class CNN on (B, 1, 28, 28) images in [-1, 1]; the 128-d penultimate layer feeds FID."""

    num_features = 128

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),  # (B, 16, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 5, padding=2),  # (B, 32, 14, 14)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 32, 7, 7)
            nn.Flatten(),  # (B, 1568)
        )
        self.fc = nn.Sequential(nn.Linear(32 * 7 * 7, self.num_features), nn.ReLU(inplace=True))
        self.head = nn.Linear(self.num_features, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))  # (B, 128)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 10) logits


class MnistFeatures(nn.Module):
    """What torchmetrics' FID calls: images -> (B, num_features) penultimate activations."""

    def __init__(self, classifier: MnistClassifier, heldout_acc: float = float("nan")) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features  # torchmetrics reads this instead of probing
        self.heldout_acc = heldout_acc

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x)


# Bump when the architecture or recipe changes: it is part of the cache file name.
_RECIPE = "lenet16-32-128/adam-onecycle3e-3/bs64/ep8/seed0/strat4000-1000/1thread/v2"
_HELDOUT_PER_CLASS = 100  # 1,000 held-out digits, 100 of each class


def stratified_split(labels: Tensor, per_class: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(train indices, held-out indices): `per_class` random digits of each class held out.

    The labels arrive sorted by class, so a prefix would hold out whole classes; stratifying
    keeps the held-out set balanced like the training set.
    """
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        held.append(idx[:per_class])
        train.append(idx[per_class:])
    return torch.cat(train), torch.cat(held)


def train_mnist_classifier(epochs: int = 8, seed: int = 0) -> tuple[MnistClassifier, float]:
    """Train on 4,000 of the shipped digits; returns (classifier in eval mode, accuracy on the other 1,000).

    Adam under a one-cycle schedule (peak 3e-3): 8 epochs reach ~98% held out where a
    constant 1e-3 stalled near 96-97% (bench/classifier.py). Trained on ONE thread: on a
    shared 2-CPU machine two threads took 7-84 s for the same work (contention), one thread
    11-15 s; and one thread gives the same weights whatever the caller's thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_mnist_classifier(epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train_mnist_classifier(epochs: int, seed: int) -> tuple[MnistClassifier, float]:
    images, labels = load_mnist(), load_mnist_labels()
    train_idx, test_idx = stratified_split(labels, _HELDOUT_PER_CLASS, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = MnistClassifier()
    batch = 64
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * math.ceil(train_idx.numel() / batch))
    clf.train()
    for _ in range(epochs):
        for b in train_idx[torch.randperm(train_idx.numel(), generator=g)].split(batch):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(clf(images[b]), labels[b]).backward()
            opt.step()
            sched.step()
    clf.eval()
    with torch.no_grad():
        acc = float((clf(images[test_idx]).argmax(1) == labels[test_idx]).double().mean())
    return clf, acc


def _data_hash() -> str:
    h = hashlib.sha256(_RECIPE.encode())
    h.update(load_mnist().numpy().tobytes())
    return h.hexdigest()[:12]


def load_feature_extractor(cache_dir: Path) -> nn.Module:
    """FID feature extractor: the cached classifier, trained on first use (~10 s on 2 CPU threads)."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"mnist_lenet_{_data_hash()}.pt"
    clf = MnistClassifier()
    if path.exists():
        state = torch.load(path, weights_only=True, map_location="cpu")
        clf.load_state_dict(state["state_dict"])
        acc = float(state["heldout_acc"])
    else:
        t0 = time.perf_counter()
        clf, acc = train_mnist_classifier()
        log.info("trained MNIST feature classifier: %.1f%% held-out accuracy in %.1f s", 100 * acc, time.perf_counter() - t0)
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Atomic: concurrent trials may race to write the same file; each writes its own temp
        # file and os.replace makes one complete version win.
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"state_dict": clf.state_dict(), "heldout_acc": acc}, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    extractor = MnistFeatures(clf.eval(), acc).eval()
    extractor.requires_grad_(False)
    return extractor


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class FidScorer:
    """FID against a fixed real set whose statistics are computed once, at construction."""

    def __init__(self, extractor: nn.Module, real: Tensor, batch_size: int = 500) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance  # lazy: ~2 s import

        self.extractor = extractor.eval()
        self.batch_size = batch_size
        # sync_on_compute=False: only one Ray worker scores; a sync would wait for the others forever.
        self._fid = FrechetInceptionDistance(feature=self.extractor, reset_real_features=False, sync_on_compute=False)
        self._update(real, real=True)

    def to(self, device: torch.device | str) -> "FidScorer":
        """Featurise on `device` (the extractor and the real statistics move there)."""
        self._fid.to(device)
        return self

    def _update(self, images: Tensor, real: bool) -> None:
        with torch.no_grad():
            for chunk in images.detach().float().split(self.batch_size):
                self._fid.update(chunk.to(self._fid.device), real=real)

    def score(self, fakes: Tensor) -> float:
        """FID of (N, 1, 28, 28) fakes in [-1, 1]; use N >= ~500 (128-d features)."""
        self._fid.reset()  # keeps the real statistics
        self._update(fakes, real=False)
        return float(self._fid.compute())

    def class_coverage(self, fakes: Tensor) -> tuple[int, float]:
        """(digit classes predicted at least once, KL(predicted-class histogram || uniform))."""
        clf = getattr(self.extractor, "classifier", None)
        if clf is None:
            raise TypeError("class_coverage needs an extractor with a .classifier (use load_feature_extractor)")
        with torch.no_grad():
            dev = _device(clf)
            pred = torch.cat([clf(c.to(dev)).argmax(1).cpu() for c in fakes.detach().float().split(self.batch_size)])
        p = torch.bincount(pred, minlength=10).double() / pred.numel()
        nz = p > 0
        return int(nz.sum()), float((p[nz] * torch.log(10 * p[nz])).sum())


# ---------------------------------------------------------------- more scores from the same features


def inception_score(logits: Tensor) -> float:
    """exp E_x KL(p(y|x) || p(y)) over ALL samples (one split), p from the classifier's softmax.

    1 when every sample gets the same class distribution (collapse or noise the classifier is
    unsure of), at most the number of classes (10) for confident, balanced predictions.
    Salimans et al. average 10 splits; with ~1,000 samples one split is less noisy. Same
    formula as torchmetrics' InceptionScore(splits=1) (a test checks it).
    """
    logp = logits.detach().double().log_softmax(dim=1)  # (N, C)
    p = logp.exp()
    log_py = p.mean(dim=0).clamp_min(1e-300).log()  # (C,)
    return float((p * (logp - log_py)).sum(dim=1).mean().exp())


def _kth_neighbour_radius(x: Tensor, k: int) -> Tensor:
    """(N,) distance from each point to its k-th nearest other point (the point itself excluded)."""
    d = torch.cdist(x, x)  # (N, N)
    return d.kthvalue(k + 1, dim=1).values  # index 0 of the sorted row is the point itself


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> dict[str, float]:
    """Kynkäänniemi et al. 2019: each set's manifold is the union of balls reaching every
    point's k-th nearest neighbour. precision = share of fakes inside the real manifold
    (quality), recall = share of reals inside the fake manifold (coverage of the data).
    Use sets of equal size: the radii shrink as a set grows.
    """
    real, fake = real.detach().double(), fake.detach().double()
    r_real, r_fake = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)  # (R,), (F,)
    d = torch.cdist(fake, real)  # (F, R)
    precision = (d <= r_real[None, :]).any(dim=1).double().mean()
    recall = (d <= r_fake[:, None]).any(dim=0).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> dict[str, float]:
    """Naeem et al. 2020, balls around real points only (robust to outlying fakes):
    density = mean count of real balls holding each fake / k (~1 for real data, can exceed 1);
    coverage = share of real balls holding at least one fake.
    """
    real, fake = real.detach().double(), fake.detach().double()
    r_real = _kth_neighbour_radius(real, k)  # (R,)
    inside = torch.cdist(fake, real) <= r_real[None, :]  # (F, R)
    return {"density": float(inside.double().sum() / (k * fake.shape[0])), "coverage": float(inside.any(dim=0).double().mean())}


def mean_pairwise_distance(x: Tensor) -> float:
    """Mean L2 distance between distinct rows of (N, D) x: 0 when every sample is the same."""
    x = x.detach().double().reshape(x.shape[0], -1)
    n = x.shape[0]
    return float(torch.cdist(x, x).sum() / max(n * (n - 1), 1))


class FeatureScorer:
    """KID, Inception-style score, precision/recall, density/coverage and diversity of fakes,
    all from ONE forward pass of the MNIST classifier (features and its logits), against a
    fixed real set featurised once. No downloads: the classifier stands in for Inception.
    """

    def __init__(self, extractor: nn.Module, real: Tensor, batch_size: int = 500, seed: int = 0) -> None:
        from torchmetrics.image.kid import KernelInceptionDistance  # lazy: ~2 s import

        clf = getattr(extractor, "classifier", None)
        if clf is None:
            raise TypeError("FeatureScorer needs an extractor with a .classifier (use load_feature_extractor)")
        self.classifier = clf.eval()
        self.batch_size = batch_size
        self.seed = seed
        self.real_features, _ = self.features_and_logits(real)  # (R, 128)
        # A fixed order of the reals: precision/recall/density take the first len(fakes) of
        # them, so both sets have the same size (the k-NN radii depend on it).
        perm = torch.randperm(self.real_features.shape[0], generator=torch.Generator().manual_seed(seed))
        self.real_shuffled = self.real_features[perm]
        self.real_diversity = mean_pairwise_distance(self.real_shuffled[:1000])
        # Features are computed here once, so KID gets an identity "feature module" over them.
        # The cubic kernel (gamma x.y + 1)^3 is scale-dependent: torchmetrics' gamma = 1/d
        # suits Inception's pool features, but these ReLU features have norms ~50, which puts
        # kernel values in the thousands. gamma = 1 / mean |x_real|^2 keeps gamma x.y ~ 1.
        # sync_on_compute=False: only one Ray worker scores.
        gamma = float(1.0 / self.real_features.double().pow(2).sum(dim=1).mean())
        with warnings.catch_warnings():  # its note that it keeps every feature: 5k x 128 floats here
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self._kid = KernelInceptionDistance(feature=nn.Identity(), gamma=gamma, reset_real_features=False, sync_on_compute=False)
        self._kid.update(self.real_features, real=True)

    @torch.no_grad()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        dev = _device(self.classifier)  # the classifier's device (a GPU in a GPU trial); scores on the CPU
        feats = [self.classifier.features(c.to(dev)) for c in images.detach().float().split(self.batch_size)]
        f = torch.cat(feats)  # (N, 128)
        return f.cpu(), self.classifier.head(f).cpu()  # (N, 10) logits

    def kid(self, fake_features: Tensor, subsets: int = 100, subset_size: int = 500) -> float:
        """KID (unbiased MMD^2, cubic polynomial kernel; Binkowski et al. 2018), mean over
        `subsets` random subsets of min(subset_size, N) fakes and reals. ~0 real vs real."""
        self._kid.reset()  # keeps the real features
        self._kid.update(fake_features, real=False)
        self._kid.subsets = subsets
        self._kid.subset_size = min(subset_size, fake_features.shape[0], self.real_features.shape[0])
        # torchmetrics draws its subsets from the global RNG: a fixed seed makes the score
        # repeatable and leaves training's random stream untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mean, _std = self._kid.compute()
        return float(mean)

    def score(self, fakes: Tensor) -> dict[str, float]:
        """Every score of (N, 1, 28, 28) fakes in [-1, 1] (N >= ~500 for stable numbers)."""
        f, logits = self.features_and_logits(fakes)
        # k-NN scores on equal-size sets, at most 5,000 each (the N x N distances grow fast)
        m = min(f.shape[0], self.real_shuffled.shape[0], 5000)
        real, fk = self.real_shuffled[:m], f[:m]
        return {
            "kid": self.kid(f),
            "inception_score": inception_score(logits),
            **precision_recall(real, fk, k=3),
            **density_coverage(real, fk, k=5),
            # 1 ~ as spread as real digits, 0 = every sample the same (mode collapse)
            "diversity": mean_pairwise_distance(f[:1000]) / self.real_diversity,
        }


# ---------------------------------------------------------------- Stacked MNIST (VEEGAN / PacGAN Table 2)


@torch.no_grad()
def stacked_mnist_scores(images: Tensor, classifier: nn.Module | None = None, batch_size: int = 2000) -> dict[str, float | int]:
    """(N, 3, 28, 28) in [-1, 1] -> {"modes": distinct 3-digit classes predicted (of 1,000),
    "kl": KL(predicted histogram || uniform over 1,000)}. Each channel is classified as an
    MNIST digit; the class is 100 d0 + 10 d1 + d2. The papers score 26,000 samples; with
    that many, even perfect samples miss few modes but KL keeps a sampling floor of ~(K-1)/2N.
    """
    if classifier is None:
        from trainers.evaluate import (
            default_cache_dir,  # lazy: evaluate imports this module
        )

        classifier = load_feature_extractor(default_cache_dir()).classifier
    x = images.detach().float().to(_device(classifier))
    if x.ndim != 4 or x.shape[1:] != (3, 28, 28):
        raise ValueError(f"stacked_mnist_scores wants (N, 3, 28, 28) images, got {tuple(x.shape)}")
    n = x.shape[0]
    digits = torch.cat([classifier(c).argmax(1).cpu() for c in x.reshape(n * 3, 1, 28, 28).split(batch_size)]).reshape(n, 3)
    cls = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]  # (N,)
    p = torch.bincount(cls, minlength=1000).double() / max(n, 1)
    nz = p > 0
    return {"modes": int(nz.sum()), "kl": float((p[nz] * torch.log(1000 * p[nz])).sum())}


# ---------------------------------------------------------------- pictures and cheap checks


def image_grid(images: Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 grid (H', W') for C=1 or (H', W', C) otherwise."""
    x = images.detach().float().cpu().clamp(-1, 1)
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    grid = np.zeros((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), dtype=np.uint8)
    pix = ((x + 1) * 127.5).round().to(torch.uint8).numpy()  # (N, C, H, W)
    for i in range(n):
        r, col = divmod(i, ncol)
        y0, x0 = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y0 : y0 + h, x0 : x0 + w] = pix[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


_EXTENT = {"grid25": 5.5, "ring8": 1.4}  # half-width of the plotted square


def scatter_png(points: Tensor, name: str, size: int = 256) -> np.ndarray:
    """Rasterise (N, 2) samples (blue) with the mixture means (red crosses): uint8 (size, size, 3).

    Pure numpy, ~1 ms, so it can run at every eval. Points outside the view are dropped.
    """
    half = _EXTENT[name]
    img = np.full((size, size, 3), 255, dtype=np.uint8)

    def to_px(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        col = np.round((xy[:, 0] + half) / (2 * half) * (size - 1)).astype(np.int64)
        row = np.round((half - xy[:, 1]) / (2 * half) * (size - 1)).astype(np.int64)  # y up
        return row, col

    pts = points.detach().float().cpu().reshape(-1, 2).numpy()
    pts = pts[np.isfinite(pts).all(axis=1)]
    row, col = to_px(pts)
    for dr in (0, 1):  # 2x2 dots: single pixels vanish when the PNG is scaled down
        for dc in (0, 1):
            r, c = row + dr, col + dc
            ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            img[r[ok], c[ok]] = (31, 119, 180)
    mr, mc = to_px(mixture_means(name).numpy())
    for d in range(-3, 4):
        for r, c in ((mr + d, mc), (mr, mc + d)):
            ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            img[r[ok], c[ok]] = (214, 39, 40)
    return img


def pixel_histogram_distance(real: Tensor, fake: Tensor, bins: int = 64) -> float:
    """L1 distance (0..2) between normalised pixel-value histograms over [-1, 1] (DIGITS tutorial)."""

    def hist(x: Tensor) -> Tensor:
        h = torch.histc(x.detach().float().cpu().clamp(-1, 1), bins=bins, min=-1.0, max=1.0).double()
        return h / h.sum().clamp_min(1)

    return float((hist(real) - hist(fake)).abs().sum())
