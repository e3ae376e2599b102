"""What a trial reports at each eval, beside its losses: quality metrics and a picture.

Images: FID against features of a small MNIST classifier (trained once, cached), class
coverage, the pixel-histogram distance, and a grid of the sweep-wide fixed noise; from the
same features KID, an Inception-style score, precision/recall, density/coverage and
diversity (feature-space spread relative to real digits: ~1 real, 0 collapsed).
2-D mixtures: modes captured, high-quality %, reverse KL (PacGAN Table 1 protocol, 2,500
samples) and a scatter of the samples over the true means.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from trainers.config import TrainerConfig
from trainers.data import load_mnist, mixture_means
from trainers.metrics import (
    FeatureScorer,
    FidScorer,
    image_grid,
    load_feature_extractor,
    mixture_scores,
    pixel_histogram_distance,
    scatter_png,
)
from trainers.models import sample_latent

MIXTURE_EVAL_SAMPLES = 2500  # PacGAN / VEEGAN Table 1 score 2,500 samples


def default_cache_dir() -> Path:
    """Where the feature classifier is cached: $GANOPS_CACHE or ~/.cache/ganops."""
    return Path(os.environ.get("GANOPS_CACHE") or Path.home() / ".cache" / "ganops")


class Evaluator:
    def __init__(self, cfg: TrainerConfig, cache_dir: Path | None = None):
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(cfg.seed + 7)  # eval draws never disturb training's RNG
        if cfg.is_image:
            self.real = load_mnist()
            self.features = load_feature_extractor(cache_dir or default_cache_dir())
            self.fid = FidScorer(self.features, self.real)
            # metrics branch: KID, IS, precision/recall, density/coverage, diversity (~0.4 s per eval)
            self.feature_scores = FeatureScorer(self.features, self.real)

    @torch.no_grad()
    def _generate(self, G: torch.nn.Module, n: int, batch: int = 500) -> torch.Tensor:
        out = []
        for i in range(0, n, batch):
            z = sample_latent(min(batch, n - i), self.cfg, self.gen)
            out.append(G(z))
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, G: torch.nn.Module, fixed_noise: torch.Tensor) -> tuple[dict[str, float], np.ndarray]:
        was_training = G.training
        G.eval()
        try:
            if self.cfg.is_image:
                fakes = self._generate(G, self.cfg.eval_samples)
                covered, kl = self.fid.class_coverage(fakes)
                scores = {
                    "fid": self.fid.score(fakes),
                    "class_coverage": float(covered),
                    "class_kl": float(kl),
                    "pixel_hist": pixel_histogram_distance(self.real[: len(fakes)], fakes),
                }
                scores.update(self.feature_scores.score(fakes))  # metrics branch
                picture = image_grid(G(fixed_noise), nrow=8)
            else:
                points = self._generate(G, MIXTURE_EVAL_SAMPLES)
                s = mixture_scores(points, self.cfg.data)
                k = len(mixture_means(self.cfg.data))
                scores = {
                    "modes": float(s["modes"]),
                    "hq_pct": float(s["hq_pct"]),
                    "reverse_kl": float(s["reverse_kl"]),
                    # one number to rank trials: mode coverage times sample quality, in [0, 1]
                    "mix_score": float(s["modes"]) / k * float(s["hq_pct"]) / 100.0,
                }
                picture = scatter_png(points, self.cfg.data)
            return scores, picture
        finally:
            G.train(was_training)
