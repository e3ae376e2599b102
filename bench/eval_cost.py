"""Bench: what the feature scores (KID, IS, precision/recall, density/coverage, diversity)
add to one MNIST eval at eval_samples=1000, against the eval's other scores.

Times Evaluator.evaluate on an untrained dcgan28 generator (the scores' cost does not depend
on the weights) and, on the same fakes, FeatureScorer.score alone. Medians of --repeats.

    python bench/eval_cost.py --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from trainers.config import TrainerConfig
from trainers.evaluate import Evaluator
from trainers.metrics import density_coverage, mean_pairwise_distance, precision_recall
from trainers.models import build_models, sample_latent

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--eval-samples", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)  # a trial's worker runs on one CPU (cpus_per_worker: 1)
    cfg = TrainerConfig(model="dcgan28", data="mnist", eval_samples=args.eval_samples)
    G, _ = build_models(cfg)
    t0 = time.perf_counter()
    ev = Evaluator(cfg)
    setup = time.perf_counter() - t0
    noise = sample_latent(64, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        fakes = G.eval()(sample_latent(args.eval_samples, cfg, torch.Generator().manual_seed(1)))
    fs = ev.feature_scores
    parts = {  # the pieces of FeatureScorer.score, timed alone
        "forward": lambda: fs.features_and_logits(fakes),
        "kid": lambda: fs.kid(feats),
        "knn_scores_and_diversity": lambda: (
            precision_recall(real, feats),
            density_coverage(real, feats),
            mean_pairwise_distance(feats),
        ),
    }
    feats, _ = fs.features_and_logits(fakes)
    real = fs.real_shuffled[: feats.shape[0]]
    whole, extra, part_s = [], [], {k: [] for k in parts}
    for _ in range(args.repeats):
        t = time.perf_counter()
        ev.evaluate(G, noise)
        whole.append(time.perf_counter() - t)
        t = time.perf_counter()
        fs.score(fakes)
        extra.append(time.perf_counter() - t)
        for k, fn in parts.items():
            t = time.perf_counter()
            fn()
            part_s[k].append(time.perf_counter() - t)
    med_whole, med_extra = statistics.median(whole), statistics.median(extra)
    print(
        json.dumps(
            {
                "eval_samples": args.eval_samples,
                "threads": 1,
                "evaluator_setup_s": round(setup, 2),
                "eval_median_s": round(med_whole, 3),
                "feature_scores_median_s": round(med_extra, 3),
                "share_of_eval": round(med_extra / med_whole, 2),
                "parts_median_s": {k: round(statistics.median(v), 3) for k, v in part_s.items()},
                "load_avg_1m": round(os.getloadavg()[0], 1),
            }
        )
    )
