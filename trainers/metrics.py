"""Sample-based GAN metrics: mode coverage for the 2-D mixtures, FID with an MNIST
classifier for images, and the pictures logged alongside them.

Balanced losses are not proof of health (GAN_NOTES), so every eval scores samples.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
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
    """
    means = mixture_means(name).to(samples)  # (K, 2)
    k = means.shape[0]
    samples = samples.detach().reshape(-1, 2)  # (N, 2)
    dist = torch.cdist(samples, means)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)  # (N,), (N,)
    hq = nearest_dist <= 3 * mixture_sigma(name)  # (N,) bool
    modes = int(torch.unique(nearest[hq]).numel())
    p = torch.bincount(nearest, minlength=k).double() / max(samples.shape[0], 1)  # (K,)
    nz = p > 0
    reverse_kl = float((p[nz] * torch.log(k * p[nz])).sum())
    return {"modes": modes, "hq_pct": 100.0 * float(hq.double().mean()), "reverse_kl": reverse_kl}


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
_RECIPE = "lenet16-32-128/adam1e-3/bs64/ep8/seed0/v1"
_HELDOUT = 1000


def train_mnist_classifier(epochs: int = 8, seed: int = 0) -> tuple[MnistClassifier, float]:
    """Train on 4,000 of the shipped digits; returns (classifier in eval mode, accuracy on the other 1,000)."""
    images, labels = load_mnist(), load_mnist_labels()
    g = torch.Generator().manual_seed(seed)
    # The labels arrive sorted by class, so the hold-out split must be a random permutation.
    perm = torch.randperm(images.shape[0], generator=g)
    test_idx, train_idx = perm[:_HELDOUT], perm[_HELDOUT:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = MnistClassifier()
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    clf.train()
    for _ in range(epochs):
        for batch in train_idx[torch.randperm(train_idx.numel(), generator=g)].split(64):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(clf(images[batch]), labels[batch]).backward()
            opt.step()
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


class FidScorer:
    """FID against a fixed real set whose statistics are computed once, at construction."""

    def __init__(self, extractor: nn.Module, real: Tensor, batch_size: int = 500) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance  # lazy: ~2 s import

        self.extractor = extractor.eval()
        self.batch_size = batch_size
        # sync_on_compute=False: only one Ray worker scores; a sync would wait for the others forever.
        self._fid = FrechetInceptionDistance(feature=self.extractor, reset_real_features=False, sync_on_compute=False)
        self._update(real, real=True)

    def _update(self, images: Tensor, real: bool) -> None:
        with torch.no_grad():
            for chunk in images.detach().float().cpu().split(self.batch_size):
                self._fid.update(chunk, real=real)

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
            pred = torch.cat([clf(c).argmax(1) for c in fakes.detach().float().cpu().split(self.batch_size)])
        p = torch.bincount(pred, minlength=10).double() / pred.numel()
        nz = p > 0
        return int(nz.sum()), float((p[nz] * torch.log(10 * p[nz])).sum())


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
