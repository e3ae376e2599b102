"""The metrics a trial reports, which way each is better, and "best first" ranking: written once.

The names are those trainers/step.py and trainers/evaluate.py put in a trial's reports; the
spec picks the sweep metric from these tables, and the stopper, compare, the leaderboard,
the contact sheet and the report rank trials with `best_first`. No Ray, MLflow or torch here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeGuard, TypeVar

Mode = Literal["min", "max"]
MODES: tuple[Mode, ...] = ("min", "max")

# Every metric that can rank trials, and its natural direction (the spec's default `mode`).
DIRECTION: dict[str, Mode] = {
    # the step's losses and D's outputs (trainers/step.py); BCE balance: loss_d 2 ln 2, loss_g ln 2, D 0.5
    "loss_g": "min",
    "loss_d": "min",
    "d_x": "max",
    "d_g_z": "max",
    # images (trainers/evaluate.py)
    "fid": "min",
    "kid": "min",
    "pixel_hist": "min",
    "class_coverage": "max",
    "inception_score": "max",
    "precision": "max",
    "recall": "max",
    "coverage": "max",
    "class_match": "max",  # cdcgan28: share of samples classified as the class G was asked for
    "kl": "min",  # stacked_mnist: KL of the 1,000 3-digit classes to uniform (VEEGAN / PacGAN Table 2)
    # 2-D mixtures (PacGAN Table 1 protocol) and stacked_mnist's modes of 1,000
    "mix_score": "max",
    "mix_balanced": "max",
    "modes": "max",
    "hq_pct": "max",
    "reverse_kl": "min",
}


def _table(*names: str) -> dict[str, Mode]:
    return {n: DIRECTION[n] for n in names}


# What each dataset's trials report that may rank them (the sweep metric must be one).
IMAGE_METRICS = _table(
    "fid",
    "loss_g",
    "loss_d",
    "d_x",
    "d_g_z",
    "class_coverage",
    "pixel_hist",
    "kid",
    "inception_score",
    "precision",
    "recall",
    "coverage",
)
CONDITIONAL_METRICS = {**IMAGE_METRICS, **_table("class_match")}
STACKED_METRICS = _table("modes", "kl")
MIXTURE_METRICS = _table("mix_score", "mix_balanced", "modes", "hq_pct", "reverse_kl", "loss_g", "loss_d")

# Image metrics that need the MNIST feature classifier: reported for data: mnist only.
CLASSIFIER_METRICS = ("fid", "class_coverage", "kid", "inception_score", "precision", "recall", "coverage")
# ... of which these are computed in a feature space: with metrics.features, every image dataset
# reports them (class_coverage and inception_score need the classifier's class logits).
FEATURE_METRICS = ("fid", "kid", "precision", "recall", "coverage")
# D(x) and D(G(z)) are probabilities only under the BCE losses; hinge / wgan-gp do not report them.
BCE_ONLY_METRICS = ("d_x", "d_g_z")

# Columns shown beside the sweep metric: the balance signals, or a mixture's sample quality.
BALANCE_COLUMNS = ("loss_d", "loss_g", "d_x", "d_g_z")
MIXTURE_COLUMNS = ("modes", "hq_pct", "reverse_kl")
# Scalars every train step reports (trainers/step.py) that a quality gate may read.
STEP_SCALARS = ("loss_d", "loss_d_real", "loss_d_fake", "loss_g", "d_x", "d_g_z", "grad_norm_d", "grad_norm_g")
# A non-finite value in any of these is a divergence (orchestrator/stopping.py).
DIVERGENCE_SIGNALS = ("loss_d", "loss_g", "grad_norm_d", "grad_norm_g")


def side_columns(metric: str) -> tuple[str, ...]:
    """The columns a trial table shows beside `metric`: a mixture's quality or the balance signals."""
    cols = MIXTURE_COLUMNS if metric in (*MIXTURE_COLUMNS, "mix_score", "mix_balanced") else BALANCE_COLUMNS
    return tuple(c for c in cols if c != metric)


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: write min (lower is better) or max (higher is better)")
    return mode


def is_score(value: Any) -> TypeGuard[float]:
    """A finite number (bools excluded): a value that can rank a trial."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def oriented(value: float, mode: str) -> float:
    """`value` turned so that lower is better whatever the mode (for min() and comparisons)."""
    return value if check_mode(mode) == "min" else -value


T = TypeVar("T")


def _getter(metric: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
    if callable(metric):
        return metric
    return lambda row: row.get(metric) if isinstance(row, Mapping) else None


def best_first(rows: Iterable[T], metric: str | Callable[[T], Any], mode: str) -> list[T]:
    """`rows` best first by `metric` (a key of mapping rows, or a function of a row); rows whose
    value is missing, NaN, infinite or not a number go last, in their original order (the sort is
    stable, so ties keep theirs too)."""
    value, sign = _getter(metric), 1.0 if check_mode(mode) == "min" else -1.0

    def key(row: T) -> tuple[bool, float]:
        v = value(row)
        return (False, sign * v) if is_score(v) else (True, 0.0)

    return sorted(rows, key=key)


def best(rows: Iterable[T], metric: str | Callable[[T], Any], mode: str) -> T | None:
    """The best row by `metric` (the first of equals), or None when no row has a finite value."""
    value = _getter(metric)
    ranked = best_first(rows, value, mode)
    return ranked[0] if ranked and is_score(value(ranked[0])) else None
