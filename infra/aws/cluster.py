"""A named AWS cluster profile (infra/clusters/*.yaml): what ganops needs to know to build a
spot GPU pool, validated before anything reaches AWS.

Loaded by `search_spaces.loader.load_profile` (bad input: SpecError with file, line, field path and what to do,
the same messages a sweep spec gets.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_INSTANCE_TYPE = r"^[a-z][a-z0-9-]*\.[a-z0-9]+$"  # g4dn.xlarge, p3.2xlarge, m5.large
_NAME = r"^[a-z][a-z0-9-]{0,39}$"  # becomes the Ray cluster name and the security group's
# Widest ssh_cidr accepted without a warning: a /16 is one organisation's network (65,536
# addresses); a /48 is one IPv6 site. Wider, and SSH is open to much of someone else's internet.
WIDEST_SSH_PREFIX = {4: 16, 6: 48}
InstanceType = Annotated[str, Field(pattern=_INSTANCE_TYPE, description="EC2 instance type, e.g. g4dn.xlarge.")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkerType(_Strict):
    """One GPU worker instance type of the pool."""

    instance_type: InstanceType
    gpus: int = Field(
        ge=1,
        le=16,
        description="GPUs per instance (g4dn.xlarge: 1, p3.8xlarge: 4); becomes the node's Ray `GPU` resource.",
    )


class ClusterProfile(_Strict):
    """An AWS Ray cluster: an on-demand head that runs the trial drivers, spot GPU workers."""

    name: str = Field(
        pattern=_NAME,
        description="Cluster name: lowercase letters, digits, '-'; names the Ray cluster and its security group.",
    )
    region: str = Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$", description="AWS region, e.g. us-east-1.")
    head_instance_type: InstanceType = Field(
        description="The head node, always on demand: it runs every trial driver, so a spot reclaim never kills one."
    )
    workers: list[WorkerType] = Field(
        min_length=1, description="GPU worker instance types; the autoscaler picks among them."
    )
    spot: bool = Field(True, description="Workers on spot instances.")
    max_price: float | None = Field(
        None,
        gt=0,
        description="Highest spot price to pay, USD per instance-hour; default: up to the on-demand price (AWS's "
        "default).",
    )
    fallback_on_demand: bool = Field(
        False, description="Also offer on-demand worker types, used when spot capacity is not there."
    )
    min_workers: int = Field(0, ge=0, description="Workers kept running even when idle (all types together).")
    max_workers: int = Field(4, ge=1, le=1000, description="Most workers at once (all types together).")
    idle_timeout_minutes: float = Field(5, gt=0, description="An idle worker is terminated after this long.")
    s3_bucket: str = Field(
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="Bucket for checkpoints and experiment state (name only, no s3://).",
    )
    iam_instance_profile: str = Field(
        description="IAM instance profile for every node (ARN or name): how nodes reach the bucket without keys."
    )
    ssh_cidr: str = Field(
        description="The only network allowed to SSH to the nodes, e.g. 203.0.113.7/32 (your address)."
    )
    allow_ssh_from_anywhere: bool = Field(
        False, description="Needed for ssh_cidr 0.0.0.0/0 or ::/0; anyone on the internet can then try to log in."
    )
    security_group_id: str | None = Field(
        None,
        pattern=r"^sg-[0-9a-f]{8,17}$",
        description="An existing security group to use instead of the one `ganops cluster up` creates.",
    )
    image_id: str | None = Field(
        None,
        pattern=r"^ami-[0-9a-f]{8,17}$",
        description="AMI for every node; default: Ray's deep-learning AMI for the region.",
    )
    on_demand_usd_per_hour: dict[str, float] = Field(
        default_factory=dict,
        description="On-demand USD/h per instance type, overriding infra/aws/prices.py's table (e.g. for another "
        "region).",
    )

    @field_validator("ssh_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{v!r} is not a CIDR; write an address with its prefix, e.g. 203.0.113.7/32") from None

    @field_validator("iam_instance_profile")
    @classmethod
    def _iam(cls, v: str) -> str:
        if not (
            re.match(r"^arn:aws[a-z-]*:iam::\d{12}:instance-profile/[\w+=,.@/-]+$", v)
            or re.match(r"^[\w+=,.@-]{1,128}$", v)
        ):
            raise ValueError("an instance profile ARN (arn:aws:iam::123456789012:instance-profile/NAME) or its NAME")
        return v

    @model_validator(mode="after")
    def _cross(self) -> ClusterProfile:
        if ipaddress.ip_network(self.ssh_cidr).prefixlen == 0 and not self.allow_ssh_from_anywhere:
            raise ValueError(
                f"ssh_cidr: {self.ssh_cidr} opens SSH to the whole internet; give your own network (e.g. "
                "203.0.113.7/32), "
                "or set allow_ssh_from_anywhere: true if you really mean it"
            )
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers: {self.min_workers} is more than max_workers ({self.max_workers})")
        types = [w.instance_type for w in self.workers]
        if len(set(types)) != len(types):
            raise ValueError(f"workers: an instance type is listed twice ({', '.join(types)}); list each once")
        if self.max_price is not None and not self.spot:
            raise ValueError("max_price: a spot price cap needs spot: true")
        if self.fallback_on_demand and not self.spot:
            raise ValueError(
                "fallback_on_demand: falling back to on demand needs spot: true (workers are on demand already)"
            )
        return self

    @property
    def warnings(self) -> list[str]:
        """What is allowed but probably not meant; the CLI shows each on stderr (and in --json)."""
        net = ipaddress.ip_network(self.ssh_cidr)
        widest = WIDEST_SSH_PREFIX[net.version]
        if net.prefixlen >= widest:
            return []
        return [
            f"ssh_cidr: {self.ssh_cidr} is wider than /{widest} ({net.num_addresses:,} addresses can try to log in "
            "over SSH); give the network you connect from, e.g. 203.0.113.7/32 (`curl https://checkip.amazonaws.com`)"
        ]

    @property
    def iam_instance_profile_ref(self) -> dict[str, str]:
        """EC2's IamInstanceProfile parameter: {"Arn": ...} or {"Name": ...}."""
        return (
            {"Arn": self.iam_instance_profile}
            if self.iam_instance_profile.startswith("arn:")
            else {"Name": self.iam_instance_profile}
        )
