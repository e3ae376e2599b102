"""Spot offers beside on-demand prices: the cheapest current spot price per instance type and
availability zone (EC2 `describe_spot_price_history`), and what it saves.

On-demand prices come from a small table (the AWS Pricing API needs a different endpoint and
is not in moto), overridable per profile with `on_demand_usd_per_hour`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

# On-demand Linux USD per instance-hour in us-east-1, from AWS's public price list
# (aws.amazon.com/ec2/pricing/on-demand), as the author knew them in 2024-2025; NOT fetched
# by any command here. Other regions cost more or less: set `on_demand_usd_per_hour` in the
# profile for your region or for a type missing here.
ON_DEMAND_USD_PER_HOUR_US_EAST_1: dict[str, float] = {
    "m5.large": 0.096,
    "m5.xlarge": 0.192,
    "m5.2xlarge": 0.384,
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.12xlarge": 5.672,
    "p3.2xlarge": 3.06,
    "p3.8xlarge": 12.24,
    "p2.xlarge": 0.90,
    "p2.8xlarge": 7.20,
}
TABLE_REGION = "us-east-1"


class SpotPriceHistory(Protocol):
    """The EC2 call this module makes (a boto3 EC2 client provides it)."""

    def get_paginator(self, operation_name: str) -> Any: ...


@dataclass(frozen=True)
class SpotOffer:
    instance_type: str
    zone: str
    spot_usd_per_hour: float
    on_demand_usd_per_hour: float | None
    on_demand_source: str  # "profile", "table (us-east-1 list price)" or "unknown"

    @property
    def saving_pct(self) -> float | None:
        """How much cheaper spot is than on demand, in percent (None without an on-demand price)."""
        if not self.on_demand_usd_per_hour:
            return None
        return 100.0 * (1.0 - self.spot_usd_per_hour / self.on_demand_usd_per_hour)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "saving_pct": None if self.saving_pct is None else round(self.saving_pct, 2)}


def on_demand_price(
    instance_type: str, region: str, overrides: dict[str, float] | None = None
) -> tuple[float | None, str]:
    """(USD/h, where it came from): the profile's override first, then the table."""
    if overrides and instance_type in overrides:
        return overrides[instance_type], "profile"
    if instance_type in ON_DEMAND_USD_PER_HOUR_US_EAST_1:
        note = "" if region == TABLE_REGION else f", not {region}"
        return ON_DEMAND_USD_PER_HOUR_US_EAST_1[instance_type], f"table ({TABLE_REGION} list price{note})"
    return None, "unknown"


def cheapest_per_zone(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """{(instance type, zone): lowest SpotPrice} over `describe_spot_price_history` records."""
    best: dict[tuple[str, str], float] = {}
    for r in records:
        key = (r["InstanceType"], r["AvailabilityZone"])
        price = float(r["SpotPrice"])
        if key not in best or price < best[key]:
            best[key] = price
    return best


def spot_prices(
    region: str,
    instance_types: list[str],
    *,
    ec2: SpotPriceHistory | None = None,
    on_demand_overrides: dict[str, float] | None = None,
    now: dt.datetime | None = None,
) -> list[SpotOffer]:
    """The cheapest current spot offer per instance type and zone, cheapest first within a type.

    `StartTime=now` asks EC2 for the prices in effect now (one record per type and zone,
    possibly several product variants); `ec2`: a boto3 EC2 client (default: one for `region`).
    """
    if ec2 is None:
        from infra.aws.session import client

        ec2 = client("ec2", region)
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=list(instance_types), ProductDescriptions=["Linux/UNIX"], StartTime=now or dt.datetime.now(dt.UTC)
    )
    best = cheapest_per_zone(r for page in pages for r in page["SpotPriceHistory"])
    offers = []
    for (itype, zone), price in best.items():
        od, source = on_demand_price(itype, region, on_demand_overrides)
        offers.append(SpotOffer(itype, zone, price, od, source))
    order = {t: i for i, t in enumerate(instance_types)}
    return sorted(offers, key=lambda o: (order.get(o.instance_type, len(order)), o.spot_usd_per_hour, o.zone))
