"""The cluster's security group, created by ganops rather than by Ray.

Ray's launcher, when it creates a group itself, always adds SSH from 0.0.0.0/0. ganops
creates the group first, with exactly two inbound rules: everything from members of the
group itself (Ray's ports between nodes), and TCP 22 from the profile's `ssh_cidr`. Nodes
then join it through `SecurityGroupIds`, so Ray leaves the network alone (it picks subnets
in the group's VPC). A group the profile names (`security_group_id`) is audited instead:
nothing but SSH may be open to 0.0.0.0/0 or ::/0, since Ray's ports (6379 GCS, 8265 dashboard
and job API, 10001 client, workers' ports) would hand the cluster to anyone who finds it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from infra.aws.launcher import ssh_permissions

log = logging.getLogger(__name__)


class Ec2SecurityGroups(Protocol):
    """The EC2 calls this module makes (a boto3 EC2 client provides them)."""

    def describe_vpcs(self, **kw: Any) -> dict: ...
    def describe_security_groups(self, **kw: Any) -> dict: ...
    def create_security_group(self, **kw: Any) -> dict: ...
    def authorize_security_group_ingress(self, **kw: Any) -> dict: ...


class SecurityGroupError(RuntimeError):
    """The group cannot be used safely (or there is no VPC to put it in)."""


def _default_vpc(ec2: Ec2SecurityGroups) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise SecurityGroupError(
            "this region has no default VPC; create a security group yourself (SSH from your CIDR only) and set "
            "security_group_id in the profile"
        )
    return vpcs[0]["VpcId"]


def expected_rules(group_id: str, ssh_cidr: str) -> list[dict[str, Any]]:
    """Inbound rules of a ganops cluster group: intra-cluster traffic, and SSH from `ssh_cidr`."""
    return [
        {
            "IpProtocol": "-1",
            "UserIdGroupPairs": [{"GroupId": group_id, "Description": "ganops: Ray between cluster nodes"}],
        },
        *ssh_permissions(ssh_cidr),
    ]


def _rule_name(p: dict) -> str:
    """'tcp 8265', 'tcp 6379-6380', 'all traffic'."""
    proto, lo, hi = p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort")
    if proto == "-1":
        return "all traffic"
    if lo is None or (lo, hi) in ((-1, -1), (0, 65535)):
        return f"{proto} all ports"
    return f"{proto} {lo}" if lo == hi else f"{proto} {lo}-{hi}"


def _open_to_world(perms: list[dict], allow_ssh: bool) -> list[str]:
    bad = []
    for p in perms:
        if allow_ssh and p.get("IpProtocol") == "tcp" and p.get("FromPort") == 22 and p.get("ToPort") == 22:
            continue
        for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", []):
            cidr = r.get("CidrIp") or r.get("CidrIpv6")
            if cidr in ("0.0.0.0/0", "::/0"):
                bad.append(f"{_rule_name(p)} from {cidr}")
    return bad


def audit_security_group(ec2: Ec2SecurityGroups, group_id: str, allow_ssh_from_anywhere: bool = False) -> None:
    """Refuse a group the user supplies when a rule opens it to the world (SSH aside, when the
    profile allows it): SecurityGroupError names each rule, and how to remove it."""
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    bad = _open_to_world(group.get("IpPermissions", []), allow_ssh_from_anywhere)
    if bad:
        raise SecurityGroupError(
            f"security_group_id: {group_id} allows {', '.join(bad)}; ganops needs only SSH (TCP 22) from ssh_cidr "
            "from outside, and Ray's ports must stay closed to the internet. Remove those rules (EC2 console, or "
            f"`aws ec2 revoke-security-group-ingress --group-id {group_id} ...`), or drop security_group_id from "
            "the profile and let `ganops cluster up` create a group"
        )


def ensure_security_group(
    ec2: Ec2SecurityGroups, name: str, ssh_cidr: str, allow_ssh_from_anywhere: bool = False, vpc_id: str | None = None
) -> str:
    """The id of group `name` in `vpc_id` (default VPC), created with only SSH from `ssh_cidr`
    open to the outside. An existing group is reused unless a rule opens it to the world."""
    vpc = vpc_id or _default_vpc(ec2)
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc]}]
    )["SecurityGroups"]
    if found:
        group = found[0]
        bad = _open_to_world(group.get("IpPermissions", []), allow_ssh_from_anywhere)
        if bad:
            raise SecurityGroupError(
                f"security group {name} ({group['GroupId']}) allows {', '.join(bad)}; remove those rules or delete "
                "the group and run again"
            )
        return group["GroupId"]
    gid = ec2.create_security_group(
        GroupName=name,
        VpcId=vpc,
        Description="ganops Ray cluster: SSH from one CIDR, Ray only between members",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "ganops.cluster", "Value": name}]}],
    )["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=expected_rules(gid, ssh_cidr))
    log.info("created security group %s (%s) in %s: SSH from %s only", name, gid, vpc, ssh_cidr)
    return gid
