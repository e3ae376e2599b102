"""Bench: what each sample metric scores on REAL data, the best a generator can hope for.

A metric's ceiling is not its ideal value: FID and KID are above 0 between two samples of
the same distribution, recall is below 1 with finite sets, reverse KL keeps a sampling floor.
Real-vs-real here:
- MNIST: the shipped 5k shuffled (seed 0) and cut into disjoint halves A and B; the real
  reference is A (2,500), the "fakes" the first 1,000 of B (what an eval scores at
  eval_samples=1000) or all 2,500 of B. Note the classifier was trained on 4,000 of these
  5,000 digits, so its features fit them better than they would fit unseen real digits.
- Stacked MNIST: three random digits of the 5k per sample (RGB channels), N = 26,000 (the
  VEEGAN / PacGAN Table 2 protocol) and N = 2,500.
- grid25 / ring8: 2,500 draws of the true mixture (PacGAN Table 1 protocol).

    python bench/metric_ceilings.py
"""

from __future__ import annotations

import math
import time

import torch

from trainers.data import load_mnist, load_mnist_labels, mixture_means, mixture_sigma
from trainers.evaluate import default_cache_dir
from trainers.metrics import (
    FeatureScorer,
    FidScorer,
    load_feature_extractor,
    mixture_scores,
    pixel_histogram_distance,
    stacked_mnist_scores,
)

# metric -> (what a perfect generator tends to, better is)
IMAGE_METRICS = {
    "fid": "0, lower",
    "kid": "0, lower",
    "inception_score": "10, higher",
    "precision": "1, higher",
    "recall": "1, higher",
    "density": "~1, higher",
    "coverage": "1, higher",
    "diversity": "~1 (real spread)",
    "class_coverage": "10, higher",
    "class_kl": "0, lower",
    "pixel_hist": "0, lower",
}


def mnist_rows(extractor) -> list[tuple[str, str, str, str]]:
    x = load_mnist()[torch.randperm(5000, generator=torch.Generator().manual_seed(0))]
    a, b = x[:2500], x[2500:]
    fid, feats = FidScorer(extractor, a), FeatureScorer(extractor, a)
    out = {}
    for n in (1000, 2500):
        fakes = b[:n]
        covered, kl = fid.class_coverage(fakes)
        out[n] = {
            "fid": fid.score(fakes),
            "class_coverage": covered,
            "class_kl": kl,
            "pixel_hist": pixel_histogram_distance(a[:n], fakes),
            **feats.score(fakes),
        }
    return [
        ("MNIST halves (A 2,500 vs B)", m, f"{out[1000][m]:.4g} / {out[2500][m]:.4g}", IMAGE_METRICS[m])
        for m in IMAGE_METRICS
    ]


def stacked_rows(classifier) -> list[tuple[str, str, str, str]]:
    x, y = load_mnist(), load_mnist_labels()
    rows = []
    for n in (26000, 2500):
        idx = torch.randint(0, x.shape[0], (n, 3), generator=torch.Generator().manual_seed(0))
        images = x[idx].squeeze(2)  # (n, 3, 28, 28)
        s = stacked_mnist_scores(images, classifier)
        true = y[idx[:, 0]] * 100 + y[idx[:, 1]] * 10 + y[idx[:, 2]]  # the labels' own modes: the sampling limit
        p = torch.bincount(true, minlength=1000).double() / n
        nz = p > 0
        label_kl = float((p[nz] * torch.log(1000 * p[nz])).sum())
        rows.append((f"Stacked MNIST, N={n:,}", "modes", f"{s['modes']} (labels: {int(nz.sum())})", "1000, higher"))
        rows.append(
            (
                f"Stacked MNIST, N={n:,}",
                "kl",
                f"{s['kl']:.4f} (labels: {label_kl:.4f})",
                f"0, lower; floor ~(K-1)/2N = {999 / (2 * n):.4f}",
            )
        )
    return rows


def mixture_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for name in ("grid25", "ring8"):
        g = torch.Generator().manual_seed(0)
        means = mixture_means(name)
        pts = means[torch.randint(0, len(means), (2500,), generator=g)] + mixture_sigma(name) * torch.randn(
            2500, 2, generator=g
        )
        s = mixture_scores(pts, name)
        k = len(means)
        rows += [
            (f"{name}, N=2,500", "modes", str(s["modes"]), f"{k}, higher"),
            (f"{name}, N=2,500", "hq_pct", f"{s['hq_pct']:.1f}", f"{100 * (1 - math.exp(-4.5)):.1f} (3 sigma in 2-D)"),
            (f"{name}, N=2,500", "reverse_kl", f"{s['reverse_kl']:.4f}", f"0; floor ~(K-1)/2N = {(k - 1) / 5000:.4f}"),
            (f"{name}, N=2,500", "mix_score", f"{s['modes'] / k * s['hq_pct'] / 100:.3f}", "~0.989"),
        ]
    return rows


if __name__ == "__main__":
    t0 = time.perf_counter()
    extractor = load_feature_extractor(default_cache_dir())
    rows = mnist_rows(extractor) + stacked_rows(extractor.classifier) + mixture_rows()
    print(f"classifier held-out accuracy: {100 * extractor.heldout_acc:.1f}%")
    print("| real data | metric | real-vs-real (MNIST: 1,000 / 2,500 of B) | ideal, direction |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"({time.perf_counter() - t0:.0f} s)")
