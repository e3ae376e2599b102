"""Bench: what the shipped 2-D mixture sweeps find, scored from the best generator as a user would.

Runs `ganops sweep SPEC --json`, then `ganops sample BEST --n 2500 --out points.npy`, and
scores those 2,500 points with the PacGAN Table 1 protocol (3-sigma high quality, modes,
reverse KL) beside the published figures.

    python bench/mixture_quality.py search_spaces/grid25.yaml search_spaces/ring8.yaml
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainers.metrics import mixture_scores

PUBLISHED = {  # modes / HQ %, GAN_NOTES (PacGAN Table 1, VEEGAN Table 1)
    "grid25": "GAN (PacGAN setup, 400k it.) 17.3 / 94.8%; VEEGAN 24.6 / 40%; PacGAN4 24.8 / 93.6%",
    "ring8": "GAN (PacGAN setup) 6.3 / 98.2%; VEEGAN 8 / 52.9%",
}


def run(spec: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GANOPS_HOME": str(Path(tmp) / "runs")}
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "sweep", str(Path(spec).resolve()), "--json"],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        wall = time.time() - t0
        if out.returncode != 0:
            sys.exit(f"sweep failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout)
        best = result["best"]
        pts = Path(tmp) / "points.npy"
        s = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "sample", best["trial_id"], "--n", "2500", "--out", str(pts)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if s.returncode != 0:
            sys.exit(f"sample failed:\n{s.stderr[-3000:]}")
        data = json.loads(
            subprocess.run(
                [sys.executable, "-m", "orchestrator.cli", "validate", spec, "--json"], capture_output=True, text=True
            ).stdout
        )["spec"]["trainer"]["data"]
        scores = mixture_scores(torch.from_numpy(np.load(pts)), data)
        return {
            "spec": spec,
            "data": data,
            "trials": len(result["trials"]),
            "sweep_wall_s": round(wall, 1),
            "best_trial": best["trial_id"],
            "best_config": best["config"],
            "sampled_modes": scores["modes"],
            "sampled_hq_pct": round(scores["hq_pct"], 1),
            "sampled_reverse_kl": round(scores["reverse_kl"], 4),
            "published": PUBLISHED.get(data),
        }


if __name__ == "__main__":
    for spec in sys.argv[1:] or ["search_spaces/grid25.yaml", "search_spaces/ring8.yaml"]:
        print(json.dumps(run(spec)), flush=True)
