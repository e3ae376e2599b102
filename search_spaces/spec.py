"""The sweep spec: what a person writes in YAML, validated into one frozen `SweepSpec`.

Each field is written once, here (or in `trainers.config.TrainerConfig` for the trainer's
own settings); the CLI, the Tune search space, MLflow params and the workers derive from
it. Loading and error reporting live in `search_spaces.loader`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trainers.config import MUTABLE_IN_FLIGHT, TrainerConfig

# What each dataset's trials report and which way is better (the sweep metric must be one).
from trainers.metric_names import (  # noqa: F401 - re-exported for gate.py
    BCE_ONLY_METRICS,
    CLASSIFIER_METRICS,
    CONDITIONAL_METRICS,
    FEATURE_METRICS,
    IMAGE_METRICS,
    MIXTURE_METRICS,
    STACKED_METRICS,
)

BCE_LOSSES = ("nonsaturating", "minimax")

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform", "qloguniform")

ECHO_CHARS = 200  # the most of a person's value a message repeats: a 294-byte `--set` once made a 33 MB message
SEED_MAX = 2**32 - 1  # numpy's and Optuna's seeds are 32-bit; torch's are 64-bit, and the trainer adds to its seed
# MLflow's API takes 500 characters, but its database column is VARCHAR(256) (MySQL, PostgreSQL refuse more).
EXPERIMENT_NAME_MAX = 256


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """`text`, or its first `limit` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def shown(value: Any) -> str:
    """`value` as a message quotes it (its repr), clipped."""
    return clip(repr(value))


# Query keys that carry a secret: ?token=, ?access_token=, ?api_key=, S3 presigned X-Amz-Signature, ...
_SECRET_WORDS = "token|secret|passw|pwd|key|signature|credential|auth"
_SECRET_KEY = re.compile(rf"{_SECRET_WORDS}|sig$", re.I)
_DATABASES = ("postgresql", "postgres", "mysql", "mssql", "oracle")  # a user (no password) there is fine
_WHERE_SECRETS_GO = {
    "http": "set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment",
    "s3": "use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, an AWS profile or an instance role",
    "db": "put the password in ~/.pgpass or PGPASSWORD (PostgreSQL), an option file (MySQL), or serve the store "
    "with `mlflow server` and point tracking.uri at it",
}


def credential_problem(uri: str) -> str | None:
    """What in `uri` is a credential (a password, a token before @, a ?token= query), or None.
    A spec's URIs are logged to MLflow, tagged and printed, so none may carry one; the message
    never repeats it."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(uri)
        password, user = parts.password, parts.username
    except ValueError:  # a malformed netloc (e.g. an unclosed [): nothing to read a credential from
        return None
    scheme = parts.scheme.lower().split("+")[0]
    kind = "http" if scheme in ("http", "https") else "db" if scheme in _DATABASES else "s3"
    if password is not None:
        what = "a password (user:password@)"
    elif user is not None and kind != "db":
        what = "a user name or token before @"
    elif any(_SECRET_KEY.search(k) for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        what = "a secret in its query (a token=, key= or signature= value)"
    else:
        return None
    return f"has {what} in it, and the spec is logged to MLflow and printed; drop it and {_WHERE_SECRETS_GO[kind]}"


def _without_credentials(uri: str | None) -> str | None:
    """`uri`, for a field validator, or ValueError saying what credential it holds."""
    problem = credential_problem(uri) if uri else None
    if problem:
        raise ValueError(problem)
    return uri


def redact_secrets(text: str) -> str:
    """`text` (e.g. a `--set` flag a message repeats) with any URI's user:password@ and secret
    query values replaced by ***."""
    text = re.sub(r"(//)[^/@\s]+@", r"\1***@", text)
    return re.sub(
        rf"([?&](?:[^=&\s]*(?:{_SECRET_WORDS})[^=&\s]*|[^=&\s]*sig)=)[^&\s]*",
        r"\1***",
        text,
        flags=re.I,
    )


class SpecProblems(ValueError):
    """Several problems found by one cross-field check, each (YAML path, what to do); the loader
    reports them one by one, so a person sees every problem in one run."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Model):
    """One searched hyperparameter; exactly one key, e.g. `{loguniform: [1e-4, 1e-3]}`."""

    choice: list[Any] | None = Field(None, min_length=1, description="Sample uniformly from these values.")
    grid: list[Any] | None = Field(None, min_length=1, description="Try every value (multiplies the trial count).")
    uniform: tuple[float, float] | None = Field(None, description="[low, high], uniform.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], uniform in log space; low > 0.")
    randint: tuple[int, int] | None = Field(None, description="[low, high), integer.")
    quniform: tuple[float, float, float] | None = Field(
        None, description="[low, high, q], uniform rounded to a multiple of q."
    )
    qloguniform: tuple[float, float, float] | None = Field(
        None, description="[low, high, q], log-uniform rounded to a multiple of q."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "Distribution":
        given = [k for k in DISTRIBUTIONS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)} (got {', '.join(given) or 'none'})")
        kind = given[0]
        if kind in ("choice", "grid"):
            return self
        bounds = getattr(self, kind)
        if not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"{kind}: every number must be finite (got {list(bounds)})")
        low, high = bounds[:2]
        if not low < high:
            raise ValueError(f"{kind}: low must be below high (got [{low}, {high}])")
        if kind in ("loguniform", "qloguniform") and low <= 0:
            raise ValueError(f"{kind}: low must be > 0 (got {low}); use uniform for ranges that include 0")
        if kind.startswith("q"):
            q = bounds[2]
            if q <= 0:
                raise ValueError(f"{kind}: q must be > 0")
            # Tune rounds each draw to round(x / q) * q: a q this small makes x / q overflow.
            if not (math.isfinite(low / q) and math.isfinite(high / q)):
                raise ValueError(
                    f"{kind}: q {q:g} is too small for [{low:g}, {high:g}] (x / q overflows); use a q near "
                    f"the step you mean, or {kind.removeprefix('q')} for no rounding"
                )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if getattr(self, k) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)

    def candidates(self) -> list[Any]:
        """Values that must each form a valid trainer setting (list entries or the range's ends)."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        low, high = self.args[:2]
        if self.kind == "randint":
            return [low, high - 1]
        if self.kind.startswith("q"):
            q = self.args[2]
            return [math.ceil(low / q) * q, math.floor(high / q) * q]
        return [low, high]


class Asha(_Model):
    """Asynchronous successive halving on the sweep metric (Ray Tune's ASHAScheduler)."""

    grace_period: int = Field(1, ge=1, description="Evals every trial gets before it can be cut.")
    reduction_factor: float = Field(3.0, gt=1, description="Keep the best 1/reduction_factor at each rung.")


class Pbt(_Model):
    """Population Based Training (Ray Tune's PopulationBasedTraining, asynchronous): every
    `perturbation_interval` evals a trial in the bottom quantile takes the weights of one in
    the top quantile and a perturbed copy of its settings."""

    perturbation_interval: int = Field(2, ge=1, description="Evals between a trial's exploit/explore decisions.")
    burn_in: int = Field(0, ge=0, description="Evals before the first decision.")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="Bottom fraction that exploits the top fraction.")
    resample_probability: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Chance a mutated setting is resampled from its search distribution instead of perturbed (x0.8 / "
        "x1.2, or a neighbouring choice).",
    )
    mutate: list[str] | None = Field(
        None,
        description="Searched settings PBT mutates; default: every searched one among lr_g, lr_d, beta1, beta2, "
        "momentum, real_label, dg_ratio.",
    )


class Sweep(_Model):
    """How many trials, how many at once, and what 'best' means."""

    scheduler: Literal["fifo", "asha", "pbt"] = Field(
        "fifo",
        description="fifo runs every trial to its end (or its balance stop); asha cuts the worse trials at rungs; "
        "pbt (Population Based Training) moves the worse trials onto the better ones' weights with "
        "perturbed settings.",
    )
    asha: Asha = Field(default_factory=Asha, description="ASHA settings, used when scheduler is asha.")
    pbt: Pbt = Field(default_factory=Pbt, description="PBT settings, used when scheduler is pbt.")
    search_alg: Literal["random", "optuna"] = Field(
        "random", description="random (and grid) sampling, or Optuna's TPE (needs `pip install optuna`)."
    )

    num_samples: int = Field(
        8, ge=1, le=100_000, description="Trials to sample (times the grid size when `grid` is used)."
    )
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials running at once; default: as many as the cluster's CPUs allow."
    )
    metric: str | None = Field(
        None, description="Metric that ranks trials; default fid (images) or mix_score (2-D mixtures)."
    )
    mode: Literal["min", "max"] | None = Field(
        None, description="Whether lower or higher `metric` is better; default: the metric's natural direction."
    )
    seed: int | None = Field(
        0,
        ge=0,
        le=SEED_MAX,
        description="Seed of the search algorithm (same seed, same sampled configs); 0 to 2**32 - 1.",
    )
    max_failures: int = Field(
        1,
        ge=0,
        le=100,
        description="Restarts of a trial from its last checkpoint after a worker or node is lost (or, with "
        "in_process, after its process fails).",
    )


class Resources(_Model):
    """What one trial asks of the cluster."""

    workers_per_trial: int = Field(
        1, ge=1, le=1024, description="Ray Train workers per trial (data parallel; gradients averaged)."
    )
    cpus_per_worker: float = Field(1.0, gt=0, le=1024, description="CPUs reserved per worker.")
    gpus_per_worker: float = Field(
        0.0,
        ge=0,
        le=16,
        description="GPUs per worker; 0 trains on CPU. A fraction 0 < x < 1 shares one GPU among several trials "
        "(0.25: four at once); "
        "more than 1 must be a whole number.",
    )
    in_process: bool = Field(
        False,
        description="Train a one-worker CPU trial in its Tune trial's own process instead of a Ray Train worker: "
        "no Ray Train controller, worker or helper processes per trial, so each trial starts sooner and costs "
        "fewer CPU-seconds (docs/benchmarks.md). A crashed trial is restarted by Tune (sweep.max_failures times) "
        "from its newest checkpoint. Needs workers_per_trial 1 and gpus_per_worker 0; not with scheduler pbt.",
    )

    @field_validator("gpus_per_worker")
    @classmethod
    def _schedulable_gpus(cls, v: float) -> float:
        # Ray schedules a fraction of one GPU, or whole GPUs, in steps of 1/10,000.
        if v > 1 and v != int(v):
            raise ValueError(
                f"{v:g} GPUs cannot be scheduled by Ray: a fraction of a GPU must be at most 1 (e.g. 0.5), more than "
                "1 must be whole (2, 4)"
            )
        if v and round(v, 4) != v:
            raise ValueError(f"{v!r}: Ray schedules GPU fractions in steps of 0.0001; round it (e.g. 0.3333)")
        return v

    @model_validator(mode="after")
    def _in_process_alone(self) -> "Resources":
        if self.in_process and (self.workers_per_trial > 1 or self.gpus_per_worker):
            raise ValueError(
                "in_process trains one CPU worker in the trial's own process; with "
                f"workers_per_trial: {self.workers_per_trial} and gpus_per_worker: {self.gpus_per_worker:g} leave it "
                "out (Ray Train's workers then train the trial)"
            )
        return self

    @model_validator(mode="after")
    def _one_gpu_per_rank(self) -> "Resources":
        if 0 < self.gpus_per_worker < 1 and self.workers_per_trial > 1:
            raise ValueError(
                f"workers_per_trial: {self.workers_per_trial} with gpus_per_worker: {self.gpus_per_worker:g} could "
                "put two ranks of one "
                "trial on the same GPU, which NCCL refuses; use gpus_per_worker: 1 for multi-worker trials, or one "
                "worker to share a GPU"
            )
        return self


class Divergence(_Model):
    """Non-finite loss or gradient: stop at once (no thresholds)."""


class DOverpowers(_Model):
    """D wins outright: it rejects G's samples with near certainty while calling real data real,
    for `patience` evals in a row."""

    d_g_z_below: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="D(G(z)) below this, as a geometric mean over the window: exp(-G's loss), i.e. G's loss above "
        "-ln 0.05 = 3.0 (balance: 0.5, G's loss ln 2 = 0.693). The arithmetic mean of D(G(z)) misses a D "
        "that rejects most fakes with certainty and passes a few.",
    )
    d_x_above: float = Field(0.95, gt=0.5, lt=1, description="D(x) above this (balance is 0.5).")
    patience: int = Field(3, ge=1, description="Consecutive evals before stopping.")


class DFooled(_Model):
    """D calls everything real: G's loss collapses toward 0."""

    loss_g_below: float = Field(0.1, gt=0, description="G's loss below this (balance is ln 2 = 0.693).")
    d_g_z_above: float = Field(0.9, gt=0.5, lt=1, description="D(G(z)) above this.")
    patience: int = Field(3, ge=1, description="Consecutive evals before stopping.")


class GradientExplosion(_Model):
    """A gradient norm of D or G above a threshold."""

    threshold: float = Field(
        1000.0,
        gt=0,
        description="ganhacks warns above 100, but a healthy 28x28 DCGAN's D norm reaches ~350 here, so the default "
        "is 1000.",
    )
    patience: int = Field(3, ge=1, description="Consecutive evals before stopping.")


class ModeCollapse(_Model):
    """Images: sample-based collapse (balanced losses are not proof of health). 2-D mixtures
    have their own rule, `mixture_quality`."""

    min_classes: int | None = Field(
        5, ge=1, le=10, description="Fewer MNIST classes than this among the generated samples."
    )
    after_step: int = Field(
        200, ge=0, description="Ignore evals before this iteration: a fresh G draws one blob (warm-up)."
    )
    patience: int = Field(2, ge=1, description="Consecutive evals before stopping.")

    @model_validator(mode="before")
    @classmethod
    def _min_modes_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "min_modes" in data:
            raise ValueError(
                "min_modes has moved to stopping.mixture_quality.min_modes (2-D mixtures have their own rule, "
                "warm-up and patience)"
            )
        return data


class MixtureQuality(_Model):
    """2-D mixtures: the samples miss the modes, or all sit on one, past a warm-up.

    Loss rules fire late here (D's dominance builds over thousands of iterations) or never (a
    G at balanced losses can still scatter its samples like noise), so this rule reads the
    samples. Chance level: a G spreading its samples evenly over grid25's 10x10 square puts
    25 * pi * (3 sigma)^2 / 100 = 1.8% of them within 3 sigma of a mean (measured 0.3-2.6% on
    trials that never learnt; ring8's slowest trial read 1-3% over its first 3,500 iterations).
    Published failures sit at 0.5% (VEEGAN's GAN on grid25), successes at 40% and above. The
    warm-up is measured (MLP, evals every 500 iterations, bench/specs/grid25_bad_regions.yaml
    and the shipped grid25/ring8 specs with every rule off): trials that went on to learn
    sat under 5% until iteration 3,500 at the latest (grid25.yaml lr_d 3e-4: 2 modes and 0.1%
    at 3,500, 25 modes and 66% at 12,500) and dipped under it for single evals later; trials
    that never learnt stayed under it to the end. Total collapse needs no such wait: a fresh MLP
    G draws one blob inside the centre mode's cell (eff_modes 1), a G that learns has spread
    out of it by the first eval, and one that has not by then (lr_g <= 1.1e-5 here) never does."""

    min_effective_modes: float | None = Field(
        1.5,
        ge=1,
        description="Total collapse: the samples' nearest means, counted over ALL samples whatever their quality, "
        "spread over fewer than this many means (eff_modes = K exp(-reverse_kl); 1 = every sample in one "
        "mode's cell). Judged from `collapse_after_step`, not `after_step`: measured on grid25 (MLP, "
        "evals every 500), every G with lr_g <= 1.1e-5 (and some up to 5.8e-5 against a fast D) sat at "
        "exactly 1 from the first or second eval to the last; every trial that learnt read 15 or more at "
        "its first eval and 8.6 or more later (bench/stopping_replay.py).",
    )
    collapse_after_step: int = Field(
        500, ge=0, description="Ignore evals before this iteration for `min_effective_modes`: a fresh G draws one blob."
    )
    min_hq_pct: float | None = Field(
        5.0,
        gt=0,
        lt=100,
        description="High-quality % (samples within 3 sigma of their nearest mean) below this: above chance (1.8% on "
        "grid25) and an order of magnitude under any published success (40%+).",
    )
    min_modes: int | None = Field(
        2,
        ge=1,
        description="Fewer modes captured than this. The default 2 means every good sample on one mode: collapse, "
        "whatever the mixture. Raise it per spec (e.g. 10 of grid25's 25).",
    )
    after_step: int = Field(
        4000,
        ge=0,
        description="Ignore evals before this iteration: trials measured here that went on to learn spent up to "
        "3,500 iterations under 5% high quality, some with 1-2 modes.",
    )
    patience: int = Field(
        2,
        ge=1,
        description="Consecutive evals before stopping: a learning trial can dip for one eval (measured: 16.6% -> "
        "4.4% -> 25.6%).",
    )


class Plateau(_Model):
    """The sweep metric stopped improving."""

    patience: int = Field(3, ge=1, description="Evals without improvement.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")


class Stopping(_Model):
    """Balance rules that stop a trial early; set a rule to null to turn it off."""

    divergence: Divergence | None = Field(
        default_factory=Divergence, description="Stop at a non-finite loss or gradient; null = train on through NaN."
    )
    d_overpowers: DOverpowers | None = Field(
        default_factory=DOverpowers, description="Stop when D rejects G's samples with near certainty; null = off."
    )
    d_fooled: DFooled | None = Field(
        default_factory=DFooled, description="Stop when D calls everything real (G's loss near 0); null = off."
    )
    gradient_explosion: GradientExplosion | None = Field(
        default_factory=GradientExplosion, description="Stop when D's or G's gradient norm explodes; null = off."
    )
    mode_collapse: ModeCollapse | None = Field(
        default_factory=ModeCollapse, description="Images: stop when the samples cover too few classes; null = off."
    )
    mixture_quality: MixtureQuality | None = Field(
        default_factory=MixtureQuality,
        description="2-D mixtures: stop when the samples miss the modes or collapse onto one; null = off.",
    )
    plateau: Plateau | None = Field(None, description="Off by default.")


class Metrics(_Model):
    """How image samples are scored: the feature network of FID, KID, precision/recall,
    density/coverage and diversity (docs/metrics.md, "Image metrics")."""

    features: str | None = Field(
        None,
        description="Feature network for the image metrics: a TorchScript file (.pt / .ts, torch.jit.save of a "
        "scripted or traced net) "
        "or a callable returning the network (package.module:callable, importable here and on every worker, or "
        "path/to/file.py:callable); "
        "relative paths are read from the spec's folder. It maps images (N, C, H, W) in [-1, 1] to (N, D) features "
        "and is checked on a "
        "dummy batch of the data's shape when the spec is validated. With it, every image dataset reports fid, kid, "
        "precision, recall, "
        "density, coverage and diversity in its feature space (mnist: instead of the MNIST classifier's; "
        "class_coverage and "
        "inception_score still come from the classifier). null = the MNIST classifier, mnist only.",
    )

    @field_validator("features")
    @classmethod
    def _resolve_features(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        from trainers.metrics import FeatureNetworkError, resolve_feature_reference

        try:  # absolute, so the workers (and `ganops resume`) read the same file from any working directory
            return resolve_feature_reference(v.strip(), (info.context or {}).get("base_dir"))
        except FeatureNetworkError as e:
            raise ValueError(str(e)) from None


class Budget(_Model):
    """What the sweep may spend, from the prices the cluster's nodes advertise (trainers/cost.py)."""

    max_usd: float = Field(
        ...,
        gt=0,
        description="Stop starting trials once the trials' cost_usd adds up to this, then stop the sweep (its "
        "running trials end KILLED, stop_reason budget). A local machine costs $0 and never reaches it.",
    )


class Tracking(_Model):
    """Where MLflow records the sweep."""

    uri: str | None = Field(
        None,
        description="MLflow tracking URI (e.g. http://mlflow.internal:5000); default: a SQLite store under "
        "./ganops_runs (or $GANOPS_HOME).",
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        max_length=EXPERIMENT_NAME_MAX,
        description=f"MLflow experiment (at most {EXPERIMENT_NAME_MAX} characters); default: the spec's name.",
    )

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, uri: str | None) -> str | None:
        return _without_credentials(uri)


class SweepSpec(_Model):
    """One sweep: a trainer with fixed settings, the settings to search, and where to run and record it."""

    name: str = Field(
        ...,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Sweep name: letters, digits, '_', '.', '-'.",
    )
    description: str | None = Field(None, description="Free text shown in MLflow.")
    trainer: TrainerConfig = Field(
        default_factory=TrainerConfig, description="Fixed trainer settings (see trainers/config.py)."
    )
    search: dict[str, Distribution] = Field(default_factory=dict, description="Trainer settings to search, by name.")
    sweep: Sweep = Field(
        default_factory=Sweep,
        description="How many trials, how many at once, the scheduler, the search algorithm and the metric that "
        "ranks them.",
    )
    resources: Resources = Field(
        default_factory=Resources, description="What one trial asks of the cluster: workers, CPUs and GPUs."
    )
    stopping: Stopping = Field(
        default_factory=Stopping,
        description="Balance rules that stop a trial early; set a rule to null to turn it off.",
    )
    tracking: Tracking = Field(default_factory=Tracking, description="Where MLflow records the sweep.")
    metrics: Metrics = Field(default_factory=Metrics, description="How image samples are scored (the feature network).")
    budget: Budget | None = Field(None, description="Spending cap in USD; null = none.")
    storage: str | None = Field(
        None,
        description="Ray checkpoints and experiment state: a local directory (default ./ganops_runs/ray) or s3://bucket/prefix.",
    )

    @field_validator("storage")
    @classmethod
    def _no_storage_credentials(cls, storage: str | None) -> str | None:
        return _without_credentials(storage)

    @model_validator(mode="after")
    def _cross_checks(self) -> "SweepSpec":
        """Every cross-field problem at once (not the first), each with its YAML path."""
        problems = [
            *self._search_problems(),
            *self._scheduler_problems(),
            *self._data_problems(),
            *self._metric_problems(),
            *self._feature_problems(),
        ]
        if problems:
            raise SpecProblems(problems)
        return self

    def _search_problems(self) -> Iterator[tuple[str, str]]:
        fields = TrainerConfig.model_fields
        base = self.trainer.model_dump()
        own = self.trainer.plugin_params_fields
        searchable = sorted([*(f for f in fields if f != "params"), *own])
        for key, dist in self.search.items():
            if key not in fields and key not in own or key == "params":
                near = difflib.get_close_matches(key, searchable, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                yield f"search.{key}", f"not a trainer setting; {hint}searchable settings: {', '.join(searchable)}"
                continue
            for value in dist.candidates():
                try:
                    TrainerConfig.model_validate({**base, key: value})
                except ValidationError as e:
                    msg = "; ".join(err["msg"] for err in e.errors())
                    yield f"search.{key}.{dist.kind}", f"value {shown(value)} is not a valid trainer.{key}: {msg}"
                    break
        if self.sweep.search_alg == "optuna":
            grids = [k for k, d in self.search.items() if d.kind == "grid"]
            if grids:
                yield f"search.{grids[0]}", "Optuna cannot take grid values; use choice, or search_alg: random"

    def _scheduler_problems(self) -> Iterator[tuple[str, str]]:
        if self.sweep.scheduler != "pbt":
            return
        if self.resources.in_process:
            yield (
                "resources.in_process",
                "PBT's exploits load Ray Train checkpoints in flight; leave in_process out with scheduler: pbt",
            )
        if self.sweep.search_alg != "random":
            yield (
                "sweep.search_alg",
                "PBT samples its initial population itself; use search_alg: random with scheduler: pbt",
            )
        for key in self.sweep.pbt.mutate or []:
            if key not in MUTABLE_IN_FLIGHT:
                yield (
                    "sweep.pbt.mutate",
                    f"{shown(key)} cannot change inside a running trial; "
                    f"PBT can mutate: {', '.join(sorted(MUTABLE_IN_FLIGHT))}",
                )
            elif key not in self.search:
                yield (
                    "sweep.pbt.mutate",
                    f"{shown(key)} is not searched; add it under search: (PBT perturbs within its distribution)",
                )
        if not self.pbt_mutations:
            yield (
                "sweep.scheduler",
                f"pbt needs at least one searched setting it can mutate ({', '.join(sorted(MUTABLE_IN_FLIGHT))})",
            )

    def _data_problems(self) -> Iterator[tuple[str, str]]:
        # The filesystem, checked here rather than in TrainerConfig: a saved generator's config
        # must still load (`ganops sample`) on a machine without the training data.
        from trainers.data_files import data_problem

        try:
            variants = [self.trainer, *self._data_variants()]
        except ValidationError:
            variants = [self.trainer]  # a searched data value that does not fit: reported by _search_problems
        for cfg in variants:
            problem = data_problem(cfg)
            if problem:
                yield "trainer.data_dir", problem
                return

    def _metric_problems(self) -> Iterator[tuple[str, str]]:
        metrics = self.metric_table
        if self.sweep.metric is not None and self.sweep.metric not in metrics:
            yield (
                "sweep.metric",
                f"{shown(self.sweep.metric)} is not reported for data {shown(self.trainer.data)}; "
                f"choose one of: {', '.join(metrics)}",
            )
        if self.sweep.metric in BCE_ONLY_METRICS:
            losses = [self.trainer.loss, *(self.search["loss"].candidates() if "loss" in self.search else ())]
            critics = sorted({str(loss) for loss in losses if loss not in BCE_LOSSES})
            if critics:
                yield (
                    "sweep.metric",
                    (
                        f"{self.sweep.metric!r} is a probability that loss {critics[0]!r} does not report "
                        "(its critic scores are critic_real / critic_fake); "
                        f"rank by another metric or use a BCE loss ({', '.join(BCE_LOSSES)})"
                    ),
                )

    def _feature_problems(self) -> Iterator[tuple[str, str]]:
        """metrics.features loads and maps a dummy batch of every image shape the sweep trains on to (N, D)."""
        ref = self.metrics.features
        if ref is None:
            return
        if not self.trainer.is_image:
            yield (
                "metrics.features",
                f"scores images, and data {self.trainer.data!r} is 2-D points (scored by its mixture metrics); "
                "remove it",
            )
            return
        from trainers.metrics import feature_network_problem

        shapes = {self.trainer.image_shape}
        base = self.trainer.model_dump()
        for key in ("data", "image_size", "channels", "model"):  # searched settings that change the images' shape
            for value in self.search[key].candidates() if key in self.search else ():
                try:
                    shapes.add(TrainerConfig.model_validate({**base, key: value}).image_shape)
                except ValidationError:
                    pass  # reported by _search_problems
        for shape in sorted(s for s in shapes if s is not None):
            problem = feature_network_problem(ref, shape)
            if problem:
                yield "metrics.features", problem
                return

    @property
    def trial_count(self) -> int:
        """Trials the sweep runs: num_samples times the size of every grid."""
        grid = 1
        for d in self.search.values():
            grid *= len(d.args) if d.kind == "grid" else 1
        return self.sweep.num_samples * grid

    @property
    def trials_identical(self) -> bool:
        """Every trial would train the same settings with the same seed (nothing, or one value, searched)."""
        return all(
            d.kind in ("choice", "grid") and len({json.dumps(v, sort_keys=True, default=str) for v in d.args}) == 1
            for d in self.search.values()
        )

    @property
    def pbt_mutations(self) -> list[str]:
        """The settings PBT mutates: pbt.mutate, or every searched setting it can mutate."""
        return (
            list(self.sweep.pbt.mutate)
            if self.sweep.pbt.mutate is not None
            else [k for k in self.search if k in MUTABLE_IN_FLIGHT]
        )

    def _data_variants(self) -> list[TrainerConfig]:
        """The trainer with each searched data / data_dir value (their files must exist too)."""
        base = self.trainer.model_dump()
        return [
            TrainerConfig.model_validate({**base, key: value})
            for key in ("data", "data_dir")
            if key in self.search
            for value in self.search[key].candidates()
        ]

    @property
    def metric_table(self) -> Mapping[str, str]:
        if not self.trainer.is_image:
            return MIXTURE_METRICS
        if self.trainer.is_conditional:
            return CONDITIONAL_METRICS
        if self.trainer.has_mnist_classifier:
            return IMAGE_METRICS
        scored = FEATURE_METRICS if self.metrics.features else ()  # in the feature network's space
        plain = {k: v for k, v in IMAGE_METRICS.items() if k not in CLASSIFIER_METRICS or k in scored}
        if self.trainer.data == "stacked_mnist":  # the MNIST classifier on each channel: 1,000 modes
            return {**plain, **STACKED_METRICS}
        return plain

    @property
    def metric(self) -> str:
        if self.sweep.metric:
            return self.sweep.metric
        if not self.trainer.is_image:
            return "mix_score"
        return "fid" if self.trainer.has_mnist_classifier or self.metrics.features else "pixel_hist"

    @property
    def mode(self) -> str:
        return self.sweep.mode or self.metric_table[self.metric]

    @property
    def spec_hash(self) -> str:
        """Content hash of the resolved spec: same settings, same hash, whatever the YAML's layout."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def json_schema() -> dict:
    """The spec's JSON Schema for editors (yaml-language-server, VS Code, JetBrains): pydantic's,
    with the descriptions of the fields, and no stricter than the loader.

    One loosening: a plugin model's own settings are trainer keys (`blocks: 3`) that
    TrainerConfig gathers into `params`, so the trainer section refuses unknown keys only when
    `model` is built in (or absent: dcgan28)."""
    from trainers.config import BUILTIN_MODELS, DATASETS, TORCHVISION_SHAPES

    schema = SweepSpec.model_json_schema()
    trainer = schema["$defs"]["TrainerConfig"]
    del trainer["additionalProperties"]
    trainer["if"] = {"properties": {"model": {"enum": list(BUILTIN_MODELS)}}}
    trainer["then"] = {"propertyNames": {"enum": list(trainer["properties"])}}
    # Value completion in editors; any other string stays allowed (plugins, torchvision:<Name>).
    trainer["properties"]["model"]["examples"] = list(BUILTIN_MODELS)
    trainer["properties"]["data"]["examples"] = [*DATASETS, *(f"torchvision:{n}" for n in TORCHVISION_SHAPES)]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ganops sweep spec",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def optional_needs(data: dict) -> list[tuple[str, str, str]]:
    """(field path, module, ganops extra) of each optional package a spec imports. `data` is a
    spec as written or `spec.model_dump()` (the same shape), so even a spec with errors is checked."""

    def section(key: str) -> dict:
        value = data.get(key)
        return value if isinstance(value, dict) else {}

    needs = []
    if section("sweep").get("search_alg") == "optuna":
        needs.append(("sweep.search_alg", "optuna", "optuna"))
    searched = section("search").get("data")
    values = [
        section("trainer").get("data"),
        *(
            v
            for d in ([searched] if isinstance(searched, dict) else [])
            for k in ("choice", "grid")
            for v in d.get(k) or []
        ),
    ]
    if any(isinstance(v, str) and v.startswith("torchvision:") for v in values):
        needs.append(("trainer.data", "torchvision", "torchvision"))
    if isinstance(data.get("storage"), str) and data["storage"].startswith("s3://"):
        needs.append(("storage", "boto3", "s3"))
    return needs
