"""What a trial reports at each eval, beside its losses: quality metrics and a picture.

Images: the pixel-histogram distance and a grid of the sweep-wide fixed noise; on MNIST also
FID against features of a small MNIST classifier (trained once, cached), class coverage, and
from the same features KID, an Inception-style score, precision/recall, density/coverage and
diversity (feature-space spread relative to real digits: ~1 real, 0 collapsed). With a feature
network (the spec's `metrics.features`) every image dataset reports FID, KID,
precision/recall, density/coverage and diversity in its feature space instead; on MNIST the
classifier still gives class coverage and the Inception-style score (they need its logits).
Whatever G's output range (cfg.output), the metrics and the grid see images in [-1, 1].
A conditional model (cdcgan28) is scored on samples of uniformly drawn classes, plus
class_match: the fraction of them the classifier assigns to the class G was asked for; its
grid has one column per class.
2-D mixtures: modes captured, high-quality %, reverse KL (PacGAN Table 1 protocol, 2,500
samples) and a scatter of the samples over the true means.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from trainers.config import TrainerConfig
from trainers.data import default_cache_dir, mixture_means, real_images, to_tanh_range
from trainers.metrics import (
    FeatureScorer,
    FidScorer,
    cached_real_features,
    class_coverage,
    classifier_logits,
    featurise,
    image_grid,
    inception_score,
    load_feature_extractor,
    load_feature_network,
    mixture_scores,
    pixel_histogram_distance,
    scatter_png,
    stacked_mnist_scores,
)
from trainers.models import sample_latent
from trainers.models.conditional import NUM_CLASSES, grid_labels, sample_labels

MIXTURE_EVAL_SAMPLES = 2500  # PacGAN / VEEGAN Table 1 score 2,500 samples


__all__ = ["Evaluator", "default_cache_dir", "MIXTURE_EVAL_SAMPLES"]


class Evaluator:
    """`features`: the spec's `metrics.features` (a TorchScript file, package.module:callable or
    path/to/file.py:callable, already resolved to an absolute path by the spec); None: the MNIST
    classifier scores mnist, other image data get no feature-space scores."""

    def __init__(self, cfg: TrainerConfig, cache_dir: Path | None = None, features: str | None = None):
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(cfg.seed + 7)  # eval draws never disturb training's RNG
        if features is not None and not cfg.is_image:
            raise ValueError(f"metrics.features scores images; data {cfg.data!r} is 2-D points")
        if cfg.is_image:
            self.real = real_images(cfg)  # (N, C, H, W) in [-1, 1]
        if cfg.has_mnist_classifier or cfg.data == "stacked_mnist":
            # the MNIST classifier: class coverage, IS and class_match; stacked_mnist: each channel's digit
            self.features = load_feature_extractor(cache_dir or default_cache_dir())
        self.feature_net: torch.nn.Module  # what FID and the feature scores embed images with, where there is one
        if features is not None:
            assert cfg.image_shape is not None  # image data: checked above
            self.feature_net = load_feature_network(features, cfg.image_shape)
        elif cfg.has_mnist_classifier:
            self.feature_net = self.features
        if hasattr(self, "feature_net"):
            # The real set featurised once per (data, feature network), on disk: each trial of a sweep
            # loads it rather than featurising the same 5,000 digits again; FID and the rest share it.
            net = self.feature_net
            real_features = cached_real_features(
                net, self.real, cache_dir or default_cache_dir(), lambda: featurise(net, self.real)
            )
            self.fid = FidScorer(self.feature_net, self.real, real_features=real_features)
            # metrics branch (~0.4 s per eval): KID, IS (MNIST classifier only), precision/recall, density/coverage,
            # diversity
            self.feature_scores = FeatureScorer(self.feature_net, self.real, real_features=real_features)

    def _networks(self) -> list[torch.nn.Module]:
        return [getattr(self, a) for a in ("features", "feature_net") if hasattr(self, a)]

    def to(self, device: torch.device | str) -> "Evaluator":
        """Run the feature networks on `device` (a GPU trial's own); the scores are computed on the CPU."""
        if hasattr(self, "fid"):
            self.fid.to(device)  # moves the extractor too (FID holds it)
        for net in self._networks():
            net.to(device)
        return self

    def devices(self) -> list[str]:
        """Where the feature networks live (for the trial's placement report)."""
        return sorted(
            {str(p.device) for net in self._networks() for p in itertools.chain(net.parameters(), net.buffers())}
        )

    @torch.no_grad()
    def _generate(self, G: torch.nn.Module, n: int, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n samples and, for a conditional G, the classes they were drawn for (else None)."""
        out, labels = [], []
        dev = next(G.parameters(), torch.empty(0)).device  # a G without parameters (a test's oracle): the CPU
        for i in range(0, n, batch):
            # Drawn on the CPU whatever G's device: the same eval samples for a trial on any device.
            z = sample_latent(min(batch, n - i), self.cfg, self.gen).to(dev)
            if self.cfg.is_conditional:
                labels.append(sample_labels(z.shape[0], self.gen).to(dev))
                out.append(G(z, labels[-1]))
            else:
                out.append(G(z))
        fakes = torch.cat(out)
        return (to_tanh_range(fakes, self.cfg) if self.cfg.is_image else fakes), (torch.cat(labels) if labels else None)

    @torch.no_grad()
    def class_match(self, fakes: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of `fakes` the MNIST classifier assigns to the class each was generated for."""
        clf = self.features.classifier
        pred = torch.cat([clf(c).argmax(1) for c in fakes.split(500)])
        return float((pred == labels).double().mean())

    @torch.no_grad()
    def evaluate(self, G: torch.nn.Module, fixed_noise: torch.Tensor) -> tuple[dict[str, float], np.ndarray]:
        was_training = G.training
        G.eval()
        try:
            if self.cfg.is_image:
                fakes, labels = self._generate(G, self.cfg.eval_samples)  # in [-1, 1]
                scores = {}
                # One pass of the feature network serves FID, the feature scores and (the MNIST
                # classifier's logits) class coverage.
                shared = self.feature_scores.features_and_logits(fakes) if hasattr(self, "feature_scores") else None
                if shared is not None:
                    scores["fid"] = self.fid.score(fakes, features=shared[0])
                if self.cfg.has_mnist_classifier:
                    logits = shared[1] if shared is not None and shared[1] is not None else None
                    if logits is None:
                        logits = classifier_logits(self.features.classifier, fakes)
                    covered, kl = class_coverage(logits)
                    scores.update({"class_coverage": float(covered), "class_kl": float(kl)})
                    if self.feature_net is not self.features:  # a metrics.features network has no class logits
                        scores["inception_score"] = inception_score(logits)
                if shared is not None:
                    scores.update(self.feature_scores.score(fakes, features=shared))
                if self.cfg.data == "stacked_mnist":
                    # VEEGAN / PacGAN Table 2: modes of 1,000 and KL; the papers score 26,000
                    # samples (set eval_samples: 26000), fewer miss modes by chance alone.
                    scores.update(
                        {k: float(v) for k, v in stacked_mnist_scores(fakes, self.features.classifier).items()}
                    )
                scores["pixel_hist"] = pixel_histogram_distance(self.real[: len(fakes)], fakes.cpu())
                if labels is not None:
                    scores["class_match"] = self.class_match(fakes, labels)
                    picture = image_grid(
                        G(fixed_noise, grid_labels(len(fixed_noise)).to(fixed_noise.device)), nrow=NUM_CLASSES
                    )
                else:
                    picture = image_grid(to_tanh_range(G(fixed_noise), self.cfg), nrow=8)
            else:
                points, _ = self._generate(G, MIXTURE_EVAL_SAMPLES)
                points = points.cpu()
                s = mixture_scores(points, self.cfg.data)
                k = len(mixture_means(self.cfg.data))
                scores = {
                    "modes": float(s["modes"]),
                    "hq_pct": float(s["hq_pct"]),
                    "reverse_kl": float(s["reverse_kl"]),
                    "eff_modes": float(s["eff_modes"]),
                    "near_pct": float(s["near_pct"]),
                    # one number to rank trials: mode coverage times sample quality, in [0, 1]
                    "mix_score": float(s["modes"]) / k * float(s["hq_pct"]) / 100.0,
                    # the same with the spread over the means: a G that piles its samples on a
                    # few of them (high reverse KL) ranks lower; a perfect G scores about 0.98
                    "mix_balanced": float(s["eff_modes"]) / k * float(s["hq_pct"]) / 100.0,
                }
                picture = scatter_png(points, self.cfg.data)
            return scores, picture
        finally:
            G.train(was_training)
