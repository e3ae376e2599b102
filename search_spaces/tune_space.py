"""Translate the spec's distributions into Ray Tune's: the only module that calls `tune.loguniform` & co."""

from __future__ import annotations

from typing import Any

from ray import tune

from search_spaces.spec import Distribution, SweepSpec


def to_tune(dist: Distribution) -> Any:
    a = dist.args
    match dist.kind:
        case "choice":
            return tune.choice(list(a))
        case "grid":
            return tune.grid_search(list(a))
        case "uniform":
            return tune.uniform(a[0], a[1])
        case "loguniform":
            return tune.loguniform(a[0], a[1])
        case "randint":
            return tune.randint(int(a[0]), int(a[1]))
        case "quniform":
            return tune.quniform(a[0], a[1], a[2])
        case "qloguniform":
            return tune.qloguniform(a[0], a[1], a[2])
    raise ValueError(f"unknown distribution {dist.kind!r}")


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's param_space: one entry per searched trainer setting (fixed settings stay in the spec)."""
    return {key: to_tune(dist) for key, dist in spec.search.items()}


def trial_trainer_config(spec: SweepSpec, sampled: dict[str, Any]) -> dict[str, Any]:
    """The full trainer config of one trial: the spec's fixed settings with the sampled ones on top."""
    from trainers.config import TrainerConfig

    merged = {**spec.trainer.model_dump(), **{k: v for k, v in sampled.items() if k in spec.search}}
    # q-distributions return floats; integer settings (e.g. steps, width) want ints.
    for k, v in merged.items():
        field = TrainerConfig.model_fields.get(k)  # None: a plugin's own setting (its Params converts it)
        if field is not None and field.annotation is int and isinstance(v, float) and v.is_integer():
            merged[k] = int(v)
    return TrainerConfig.model_validate(merged).model_dump()
