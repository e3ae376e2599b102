"""What a trial costs: the price of the machines its workers hold, for as long as they hold them.

A node says what it costs through Ray node labels that `ganops cluster` writes into the
launcher config (infra/aws/launcher.py): its USD per hour, its on-demand USD per hour and its
market (spot / on-demand). A worker's share of its node is the fraction of the node's GPUs it
holds (CPUs on a CPU-only node), so a p3.8xlarge shared by four 1-GPU workers costs each of
them a quarter. A node without the labels (this machine, a cluster ganops did not configure)
costs $0, and the trial says so rather than guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.labels import LABEL_MARKET, LABEL_ON_DEMAND, LABEL_PRICE  # written by the cluster config (infra)

__all__ = ["LABEL_MARKET", "LABEL_ON_DEMAND", "LABEL_PRICE", "Rate", "current_worker_rate", "trial_rate", "worker_rate"]


@dataclass(frozen=True)
class Rate:
    """USD per hour of one worker (or, summed, of a trial) and what on demand would charge."""

    usd_per_hour: float = 0.0
    on_demand_usd_per_hour: float = 0.0
    priced: bool = False  # False: no node said its price (local machine): cost is $0

    def __add__(self, other: "Rate") -> "Rate":
        return Rate(
            self.usd_per_hour + other.usd_per_hour,
            self.on_demand_usd_per_hour + other.on_demand_usd_per_hour,
            self.priced or other.priced,
        )


def _label(labels: dict, key: str) -> str | None:
    v = labels.get(key)
    if isinstance(v, (list, tuple)):  # some Ray versions hand labels out as lists of values
        v = v[0] if v else None
    return v


def worker_rate(labels: dict, node_total: dict[str, float], held: dict[str, float]) -> Rate:
    """This worker's share of its node's price. `labels`: the node's labels; `node_total`: the
    node's resources (CPU, GPU); `held`: what this worker holds."""
    price = _label(labels, LABEL_PRICE)
    if price is None:
        return Rate()
    on_demand = _label(labels, LABEL_ON_DEMAND) or price
    unit = "GPU" if node_total.get("GPU", 0) > 0 else "CPU"
    share = min(1.0, held.get(unit, 0.0) / node_total[unit]) if node_total.get(unit) else 1.0
    return Rate(float(price) * share, float(on_demand) * share, True)


def current_worker_rate() -> Rate:
    """The rate of the calling Ray worker, read from its node's labels and resources."""
    import ray

    ctx = ray.get_runtime_context()
    labels = ctx.get_node_labels() or {}
    if _label(labels, LABEL_PRICE) is None:
        return Rate()
    node_id = ctx.get_node_id()
    total: dict[str, float] = next((n.get("Resources", {}) for n in ray.nodes() if n.get("NodeID") == node_id), {})
    return worker_rate(labels, total, ctx.get_assigned_resources())


def trial_rate(world_size: int, device=None) -> Rate:
    """The sum of every worker's rate, the same on every rank (an all-reduce when world > 1, on
    the worker's `device`: NCCL reduces CUDA tensors only)."""
    rate = current_worker_rate()
    if world_size <= 1:
        return rate
    import torch
    import torch.distributed as dist

    t = torch.tensor(
        [rate.usd_per_hour, rate.on_demand_usd_per_hour, float(rate.priced)], dtype=torch.float64, device=device
    )
    dist.all_reduce(t)
    return Rate(float(t[0]), float(t[1]), bool(t[2] > 0))
