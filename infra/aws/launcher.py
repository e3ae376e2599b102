"""Generate Ray's cluster-launcher YAML (what `ray up` reads) from a `ClusterProfile`.

Choices, and why:
- The head is on demand and carries a custom resource, `ganops_driver`. Trial drivers ask for
  a little of it, so they only ever run on the head: a spot reclaim can take a GPU worker
  (and the Ray Train workers on it, which resume from a checkpoint) but never a driver.
  The head also advertises CPU 0, so no training work lands on it.
- GPU workers are spot (`InstanceMarketOptions`, `MaxPrice` when the profile caps it).
- Fallback to on demand: one more worker type per instance type, on demand, at a lower
  `priority`. Ray's autoscaler v2 (enabled on the head) ranks candidate types by fit, then by
  how recently a type failed to launch, then by priority: spot first while spot is there, on
  demand when spot launches fail. The shared `max_workers` caps both.
- Network: nodes get the security group `ganops cluster up` creates (SSH from `ssh_cidr`
  only, everything else only from the group itself; `infra/aws/network.py`), through
  `node_config.SecurityGroupIds`. Without a group id, Ray would create one itself and always
  add SSH from 0.0.0.0/0 to it (`ray/autoscaler/_private/aws/config.py`,
  `_create_default_ssh_inbound_rules`) beside our `provider.security_group` rules, so
  `launcher_config` reports that as unsafe and the CLI refuses to `up` such a file.
- The dashboard binds 127.0.0.1 on the head: reach it with `ray dashboard FILE` (an SSH tunnel).
- What the nodes run: the client's ganops. `file_mounts` copies a local directory (`dist_dir`:
  a wheel of the client's source and `requirements.txt`, ganops' requirements pinned to the
  client's versions, torch left out: infra/packaging.py) to `~/ganops-dist` on every node; the
  setup commands check the node's Python, install the requirements, then the wheel with
  `--no-deps`. torch stays as the image has it (its build matches the node's CUDA); an image
  without torch gets an unpinned one from the index.
- Token authentication: `ray start` on the head and the workers runs with `RAY_AUTH_MODE=token`
  (without it `ray start --head` only turns auth on when a token already exists, and a worker's
  `ray start` never does), and `file_mounts` copies the cluster's token file (`token_file`) to
  `~/.ray/auth_token`, where Ray reads it. The YAML names the token's file, never its value.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import sys
from pathlib import Path
from typing import Any

from infra.aws.cluster import ClusterProfile

DRIVER_RESOURCE = "ganops_driver"
DRIVER_SLOTS = 1000  # trial drivers that fit on the head at once, at 1 unit each
RAY_VERSION = "2.60.0"
SPOT_PRIORITY, ON_DEMAND_PRIORITY = 10, 0
DIST_REMOTE = "~/ganops-dist"  # where file_mounts puts the client's wheel and requirements on every node
REQUIREMENTS = "requirements.txt"
TOKEN_REMOTE = "~/.ray/auth_token"  # Ray's default token path (ray._private.authentication)
AUTH_ENV = "RAY_AUTH_MODE=token"
_WHEEL = re.compile(r"^[A-Za-z0-9_.+-]+\.whl$")  # a wheel's file name: nothing a shell would expand


def head_type(profile: ClusterProfile) -> str:
    return "head-" + profile.head_instance_type.replace(".", "-")


def worker_type(instance_type: str, spot: bool) -> str:
    return ("spot-" if spot else "ondemand-") + instance_type.replace(".", "-")


def ssh_permissions(cidr: str) -> list[dict[str, Any]]:
    """The only inbound rule from outside the cluster: TCP 22 from `cidr`."""
    net = ipaddress.ip_network(cidr)
    ranges = (
        {"Ipv6Ranges": [{"CidrIpv6": str(net), "Description": "ganops: SSH"}]}
        if net.version == 6
        else {"IpRanges": [{"CidrIp": str(net), "Description": "ganops: SSH"}]}
    )
    return [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}]


def security_group_name(profile: ClusterProfile) -> str:
    return f"ganops-{profile.name}"


def _node_config(
    profile: ClusterProfile, instance_type: str, security_group_id: str | None, market: dict | None = None
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "InstanceType": instance_type,
        "IamInstanceProfile": profile.iam_instance_profile_ref,
        # IMDSv2 only: a process on the node cannot be tricked into leaking the role's keys through a plain GET.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
    }
    if security_group_id:
        cfg["SecurityGroupIds"] = [security_group_id]
    if profile.image_id:
        cfg["ImageId"] = profile.image_id
    if market:
        cfg["InstanceMarketOptions"] = market
    return cfg


def _spot_market(profile: ClusterProfile) -> dict[str, Any]:
    options: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
    if profile.max_price is not None:
        options["MaxPrice"] = f"{profile.max_price:.4f}"  # EC2 takes a string
    return {"MarketType": "spot", "SpotOptions": options}


def price_labels(
    profile: ClusterProfile, instance_type: str, spot: bool, spot_usd: dict[str, float] | None = None
) -> dict[str, str]:
    """The node labels trainers/cost.py reads: USD per hour, on-demand USD per hour, market.

    A spot node's price is the current cheapest offer when `spot_usd` has it (`ganops cluster up`
    looks it up), else the profile's max_price, else the on-demand price: an upper bound, never a
    guess below what AWS may charge. No on-demand price known: no labels (the trial costs $0 and
    says so)."""
    from infra.aws.prices import on_demand_price
    from infra.labels import LABEL_MARKET, LABEL_ON_DEMAND, LABEL_PRICE

    on_demand, _ = on_demand_price(instance_type, profile.region, profile.on_demand_usd_per_hour)
    price = on_demand
    if spot:
        price = (spot_usd or {}).get(instance_type) or profile.max_price or on_demand
    if price is None:
        return {}
    return {
        LABEL_PRICE: f"{price:.4f}",
        LABEL_ON_DEMAND: f"{on_demand or price:.4f}",
        LABEL_MARKET: "spot" if spot else "on-demand",
    }


def setup_commands(wheel: str | None, python: tuple[int, int] | None = None) -> list[str]:
    """What every node runs before `ray start`: refuse a Python other than `python` (default:
    this client's; the pins and the wheel are for it), then, with `wheel` (a file name in
    DIST_REMOTE), install the pinned requirements and the wheel, `--no-deps` (the requirements
    are its dependencies) and `--force-reinstall` (a node set up before keeps no older build of
    the same version). Without a wheel the nodes get Ray only, and `ganops submit` brings the rest."""
    major, minor = python or sys.version_info[:2]
    check = (
        f"python -c 'import sys; v = sys.version_info[:2]; sys.exit(None if v == ({major}, {minor}) else "
        f'"ganops needs Python {major}.{minor} on the nodes, this image has %d.%d: set image_id in the cluster '
        "profile\" % v)'"
    )
    if wheel is None:
        return [check, f"python -m pip install -q 'ray[default,tune,train]=={RAY_VERSION}' 'boto3>=1.35'"]
    if not _WHEEL.match(wheel):
        raise ValueError(f"wheel: {wheel!r} is not a wheel's file name (NAME-VERSION-...-any.whl)")
    return [
        check,
        f"python -m pip install -q -r {DIST_REMOTE}/{REQUIREMENTS}",
        f"python -m pip install -q --no-deps --force-reinstall {DIST_REMOTE}/{wheel}",
    ]


def launcher_config(
    profile: ClusterProfile,
    security_group_id: str | None = None,
    spot_usd: dict[str, float] | None = None,
    *,
    dist_dir: str | Path | None = None,
    wheel: str | None = None,
    token_file: str | Path | None = None,
) -> dict[str, Any]:
    """The `ray up` configuration for `profile`; `security_group_id`: the group every node joins
    (default: the profile's). Pass it for anything you launch (see the module docstring).
    `spot_usd`: current spot USD/h per instance type, for the nodes' price labels.
    `dist_dir` (an absolute local path) holds `wheel` (its file name) and `requirements.txt`:
    copied to DIST_REMOTE on every node and installed there. `token_file` (absolute, 0600): the
    cluster's Ray token, copied to TOKEN_REMOTE. `ganops cluster config|up` passes all three;
    without them the file is for reading, not launching (`unsafe_reasons` says so)."""
    if (dist_dir is None) != (wheel is None):
        raise ValueError(
            "dist_dir and wheel go together: the directory file_mounts copies, and the wheel's file name in it"
        )
    file_mounts: dict[str, str] = {}
    if dist_dir is not None:
        file_mounts[DIST_REMOTE] = str(dist_dir)
    if token_file is not None:
        file_mounts[TOKEN_REMOTE] = str(token_file)
    sg = security_group_id or profile.security_group_id
    head = head_type(profile)
    node_types: dict[str, Any] = {
        head: {
            "node_config": _node_config(profile, profile.head_instance_type, sg),
            "resources": {"CPU": 0, DRIVER_RESOURCE: DRIVER_SLOTS},
            "min_workers": 0,
            "max_workers": 0,
        },
    }
    for i, w in enumerate(profile.workers):
        market = _spot_market(profile) if profile.spot else None  # a fresh dict per node: no YAML anchors in the file
        # min_workers is a cluster-wide floor; keep it on the first (preferred) type only.
        nt = {
            "node_config": _node_config(profile, w.instance_type, sg, market),
            "resources": {"GPU": w.gpus},
            "labels": price_labels(profile, w.instance_type, profile.spot, spot_usd),
            "min_workers": profile.min_workers if i == 0 else 0,
            "max_workers": profile.max_workers,
        }
        if profile.fallback_on_demand:
            nt["priority"] = SPOT_PRIORITY
        node_types[worker_type(w.instance_type, profile.spot)] = nt
        if profile.fallback_on_demand:
            node_types[worker_type(w.instance_type, False)] = {
                "node_config": _node_config(profile, w.instance_type, sg),
                "resources": {"GPU": w.gpus},
                "labels": price_labels(profile, w.instance_type, False),
                "min_workers": 0,
                "max_workers": profile.max_workers,
                "priority": ON_DEMAND_PRIORITY,
            }
    return {
        "cluster_name": profile.name,
        "max_workers": profile.max_workers,
        "idle_timeout_minutes": profile.idle_timeout_minutes,
        "upscaling_speed": 1.0,
        "provider": {
            "type": "aws",
            "region": profile.region,
            "cache_stopped_nodes": False,  # a stopped spot node is not a spot node you get back; terminate
            "security_group": {
                "GroupName": security_group_name(profile),
                "IpPermissions": ssh_permissions(profile.ssh_cidr),
            },
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": node_types,
        "head_node_type": head,
        "file_mounts": file_mounts,
        "cluster_synced_files": [],
        "initialization_commands": [],
        "setup_commands": setup_commands(wheel),
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [
            "ray stop",
            # autoscaler v2: it honours node-type `priority` and backs off a type whose launches fail (spot first, then
            # on demand).
            # RAY_AUTH_MODE=token: every RPC and dashboard request needs the token (~/.ray/auth_token); no token, no
            # start.
            f"ulimit -n 65536; {AUTH_ENV} RAY_enable_autoscaler_v2=1 ray start --head --port=6379 "
            "--object-manager-port=8076 "
            "--autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=127.0.0.1",
        ],
        "worker_start_ray_commands": [
            "ray stop",
            f"ulimit -n 65536; {AUTH_ENV} ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076",
        ],
    }


def dump(config: dict[str, Any], source: str) -> str:
    """The config as YAML text, headed by where it came from and how to launch it."""
    import yaml

    head = (
        f"# Ray cluster launcher config generated by ganops from {source}; edit the profile, not this file.\n"
        "# Launch with `ganops cluster up PROFILE` (it creates the security group first).\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def unsafe_reasons(config: dict[str, Any]) -> list[str]:
    """Why launching `config` would expose the cluster, or [] if it would not."""
    out = []
    missing = [n for n, t in config["available_node_types"].items() if not t["node_config"].get("SecurityGroupIds")]
    if missing:
        out.append(
            f"node types {', '.join(missing)} have no SecurityGroupIds: Ray would create a group with SSH open to "
            "0.0.0.0/0"
        )
    for perm in config.get("provider", {}).get("security_group", {}).get("IpPermissions", []):
        if perm.get("FromPort") != 22 or perm.get("ToPort") != 22:
            out.append(
                f"an inbound rule opens ports {perm.get('FromPort')}-{perm.get('ToPort')}; only SSH (22) may be open"
            )
    if TOKEN_REMOTE not in config.get("file_mounts", {}):
        out.append(f"no token file is mounted at {TOKEN_REMOTE}: Ray would refuse to start with {AUTH_ENV}")
    return out


def validate_with_ray(config: dict[str, Any]) -> None:
    """Check `config` as `ray up` does before it calls AWS: Ray's JSON schema on the file as
    written, then Ray's own `prepare_config` (defaults merged) and `validate_config`
    (schema again, head type present, min_workers within max_workers).
    Raises jsonschema.ValidationError or ValueError."""
    import json
    import os

    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        jsonschema.validate(config, json.load(f))
    validate_config(prepare_config(copy.deepcopy(config)))
