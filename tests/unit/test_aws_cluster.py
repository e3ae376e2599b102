"""AWS spot pools: the profile, the Ray launcher YAML it generates (checked with Ray's own
schema and validator; what the nodes install, token auth), the security group, and spot prices
against moto (in-process, and in server mode on 127.0.0.1 behind the CLI)."""

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.aws.cluster import ClusterProfile
from infra.aws.launcher import (
    DIST_REMOTE,
    DRIVER_RESOURCE,
    TOKEN_REMOTE,
    head_type,
    launcher_config,
    unsafe_reasons,
    validate_with_ray,
)
from search_spaces.loader import SpecError, load_profile
from tests.conftest import FAKE_CREDS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "infra" / "clusters" / "aws-spot-gpu.yaml"
SG = "sg-0123456789abcdef0"
WHEEL = "ganops-0.1.0-py3-none-any.whl"
SHIP = {
    "dist_dir": "/home/me/ganops_runs/clusters/c/dist",
    "wheel": WHEEL,
    "token_file": "/home/me/ganops_runs/clusters/c/auth_token",
}


def _variant(**changes) -> ClusterProfile:
    data = yaml.safe_load(EXAMPLE.read_text())
    return ClusterProfile.model_validate({**data, **changes})


def test_example_profile_generates_a_config_rays_schema_accepts():
    """The shipped profile loads, and its launcher YAML passes Ray's schema and validate_config."""
    config = launcher_config(load_profile(EXAMPLE), SG, **SHIP)
    validate_with_ray(config)
    assert config["provider"]["type"] == "aws" and config["provider"]["region"] == "us-east-1"
    assert unsafe_reasons(config) == []


def test_fallback_and_max_price_variant_passes_rays_schema():
    """With fallback and a price cap: spot types carry MaxPrice, an on-demand twin per type ranks below."""
    config = launcher_config(_variant(fallback_on_demand=True, max_price=0.42), SG)
    validate_with_ray(config)
    types = config["available_node_types"]
    for itype in ("g4dn-xlarge", "g5-xlarge", "p3-2xlarge"):
        spot, ondemand = types[f"spot-{itype}"], types[f"ondemand-{itype}"]
        assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
        assert spot["node_config"]["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"] == "0.4200"
        assert "InstanceMarketOptions" not in ondemand["node_config"]
        assert spot["priority"] > ondemand["priority"] and spot["resources"] == ondemand["resources"] == {"GPU": 1}
    assert "*id" not in yaml.safe_dump(config)  # plain YAML, no anchors


def test_workers_are_spot_with_their_gpus_and_head_is_on_demand():
    """Every worker type is spot with its GPU count; the head has no market options and no CPUs to train on."""
    profile = _variant(
        workers=[{"instance_type": "g4dn.xlarge", "gpus": 1}, {"instance_type": "p3.8xlarge", "gpus": 4}]
    )
    config = launcher_config(profile, SG)
    types = config["available_node_types"]
    assert types["spot-p3-8xlarge"]["resources"] == {"GPU": 4}
    assert types["spot-g4dn-xlarge"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    head = types[head_type(profile)]
    assert "InstanceMarketOptions" not in head["node_config"] and head["resources"]["CPU"] == 0
    assert all(t["node_config"]["IamInstanceProfile"] == {"Name": "ganops-node"} for t in types.values())


def test_trial_drivers_are_pinned_to_the_head_by_a_custom_resource():
    """Only the on-demand head offers the driver resource, so a spot reclaim never takes a driver."""
    config = launcher_config(_variant(fallback_on_demand=True), SG)
    holders = [n for n, t in config["available_node_types"].items() if DRIVER_RESOURCE in t["resources"]]
    assert holders == [config["head_node_type"]]
    assert config["available_node_types"][holders[0]]["resources"][DRIVER_RESOURCE] >= 1


def test_only_ssh_is_open_and_only_to_the_given_cidr():
    """The one rule from outside is TCP 22 from ssh_cidr; Ray's dashboard binds 127.0.0.1; all nodes join our group."""
    config = launcher_config(_variant(ssh_cidr="198.51.100.0/24"), SG)
    perms = config["provider"]["security_group"]["IpPermissions"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in perms] == [("tcp", 22, 22)]
    assert [r["CidrIp"] for r in perms[0]["IpRanges"]] == ["198.51.100.0/24"]
    assert "0.0.0.0/0" not in yaml.safe_dump(config)
    assert all(t["node_config"]["SecurityGroupIds"] == [SG] for t in config["available_node_types"].values())
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_config_without_a_security_group_is_reported_unsafe():
    """Without SecurityGroupIds Ray would create a group with SSH from 0.0.0.0/0: flagged, never silent."""
    assert any("0.0.0.0/0" in r for r in unsafe_reasons(launcher_config(load_profile(EXAMPLE))))


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_ssh_from_anywhere_is_refused_unless_explicitly_allowed(cidr):
    """ssh_cidr 0.0.0.0/0 needs allow_ssh_from_anywhere: true, and the message says so."""
    with pytest.raises(ValueError, match="allow_ssh_from_anywhere"):
        _variant(ssh_cidr=cidr)
    assert _variant(ssh_cidr=cidr, allow_ssh_from_anywhere=True).ssh_cidr == cidr


def test_bad_profile_names_file_line_and_field(tmp_path):
    """A typo and a bad CIDR: SpecError with file:line and field path."""
    p = tmp_path / "bad.yaml"
    text = (
        EXAMPLE.read_text()
        .replace("ssh_cidr: 203.0.113.7/32", "ssh_cidr: my-laptop")
        .replace("spot: true", "spott: true")
    )
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        load_profile(p)
    msg = e.value.render()
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith("ssh_cidr"))
    assert f"{p}:{line} ssh_cidr:" in msg and "spott: unknown key" in msg


def test_cli_config_on_bad_profile_exits_2(tmp_path):
    """`python -m orchestrator.cli cluster config bad.yaml`: exit 2, the place, no traceback."""
    p = tmp_path / "bad.yaml"
    p.write_text(EXAMPLE.read_text().replace("ssh_cidr: 203.0.113.7/32", "ssh_cidr: 0.0.0.0/0"))
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "cluster", "config", str(p)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert (
        str(p) in r.stderr
        and "ssh_cidr" in r.stderr
        and "allow_ssh_from_anywhere" in r.stderr
        and "Traceback" not in r.stderr
    )
    assert r.stdout == ""


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """`ganops cluster config --out` run twice under a fresh GANOPS_HOME (the token made, then reused)."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    tmp = tmp_path_factory.mktemp("cluster-config")
    home, out = tmp / "home", tmp / "cluster.yaml"
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANOPS_HOME", str(home))
        for _ in range(2):
            r = CliRunner().invoke(
                app, ["cluster", "config", str(EXAMPLE), "--out", str(out), "--security-group-id", SG]
            )
            assert r.exit_code == 0, r.output
            wheel = next((home / "clusters" / "ganops-spot-gpu" / "dist").glob("*.whl"))
            runs.append(
                (
                    r.output,
                    out.read_text(),
                    (home / "clusters" / "ganops-spot-gpu" / "auth_token").read_text(),
                    hashlib.sha256(wheel.read_bytes()).hexdigest(),
                )
            )
            if not runs[1:]:
                # the second run puts it back to 0600
                (home / "clusters" / "ganops-spot-gpu" / "auth_token").chmod(0o644)
    return home / "clusters" / "ganops-spot-gpu", runs


def test_cli_config_writes_yaml_that_ray_accepts(generated):
    """`ganops cluster config --out` writes YAML that Ray's validator accepts after a safe_load, no warning."""
    _, runs = generated
    validate_with_ray(yaml.safe_load(runs[-1][1]))
    assert "warning" not in runs[-1][0]


def test_cli_config_ships_wheel_and_pins_and_a_private_token(generated):
    """The dist dir holds the client's wheel and its pins (no torch); the token is 0600, reused, and in no
    YAML or output."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    from infra.packaging import pins

    cdir, runs = generated
    config = yaml.safe_load(runs[-1][1])
    dist, token = cdir / "dist", cdir / "auth_token"
    assert config["file_mounts"] == {DIST_REMOTE: str(dist), TOKEN_REMOTE: str(token)}
    wheels = [p.name for p in dist.glob("*.whl")]
    assert wheels == [f"ganops-{md.version('ganops')}-py3-none-any.whl"]
    assert config["setup_commands"][-1].endswith(f"--no-deps --force-reinstall {DIST_REMOTE}/{wheels[0]}")
    reqs = (dist / "requirements.txt").read_text().split()
    assert reqs == pins(extras=("aws", "s3")) and "torch" not in [Requirement(r).name for r in reqs]
    assert any(r.startswith("ray[") and r.endswith("==2.60.0") for r in reqs) and any(
        r.startswith("boto3==") for r in reqs
    )
    assert oct(token.stat().st_mode & 0o777) == "0o600" and oct(cdir.stat().st_mode & 0o777) == "0o700"
    value = runs[0][2]
    assert len(value) == 64 and int(value, 16) and runs[1][2] == value  # made once, reused
    assert runs[0][3] == runs[1][3]  # the same source, the same wheel: `ray up` sees no change
    for output, text, *_ in runs:
        assert value not in text and value not in output
        words = output.split()  # rich wraps lines between words
        assert f"RAY_AUTH_TOKEN_PATH={token}" in words and words[words.index(f"RAY_AUTH_TOKEN_PATH={token}") + 1 :][
            :3
        ] == ["ganops", "job", "submit"]


def test_cli_status_runs_ray_status_with_token_auth(tmp_path, monkeypatch):
    """`ganops cluster status`: `ray status` on the head only sends the token with RAY_AUTH_MODE=token."""
    from typer.testing import CliRunner

    import orchestrator.cluster_cli as cc
    from orchestrator.cli import app

    monkeypatch.setenv("GANOPS_HOME", str(tmp_path))
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "ganops-spot-gpu.yaml").write_text("cluster_name: ganops-spot-gpu\n")
    calls = []
    monkeypatch.setattr(cc, "_ray", lambda *a: calls.append(a) or 0)
    r = CliRunner().invoke(app, ["cluster", "status", str(EXAMPLE)])
    assert r.exit_code == 0, r.output
    assert calls == [("exec", str(tmp_path / "clusters" / "ganops-spot-gpu.yaml"), "RAY_AUTH_MODE=token ray status")]


def test_security_group_opens_only_ssh_to_the_cidr(aws_env):
    """ensure_security_group (moto): SSH from the CIDR, everything else only from the group; reused on a second call."""
    import boto3
    from moto import mock_aws

    from infra.aws.network import SecurityGroupError, ensure_security_group

    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        gid = ensure_security_group(ec2, "ganops-t", "203.0.113.7/32")
        assert ensure_security_group(ec2, "ganops-t", "203.0.113.7/32") == gid
        perms = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"]
        cidrs = [(p["IpProtocol"], p.get("FromPort"), r["CidrIp"]) for p in perms for r in p.get("IpRanges", [])]
        assert cidrs == [("tcp", 22, "203.0.113.7/32")]
        assert [g["GroupId"] for p in perms for g in p.get("UserIdGroupPairs", [])] == [gid]
        ec2.authorize_security_group_ingress(
            GroupId=gid,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            ],
        )
        with pytest.raises(SecurityGroupError, match="0.0.0.0/0"):
            ensure_security_group(ec2, "ganops-t", "203.0.113.7/32")


def test_cheapest_offer_per_type_and_zone_is_chosen():
    """Of several records for one type and zone, the lowest price wins."""
    from infra.aws.prices import cheapest_per_zone

    recs = [
        {"InstanceType": "g4dn.xlarge", "AvailabilityZone": z, "SpotPrice": p}
        for z, p in [("us-east-1a", "0.30"), ("us-east-1a", "0.21"), ("us-east-1b", "0.25"), ("us-east-1a", "0.40")]
    ]
    assert cheapest_per_zone(recs) == {("g4dn.xlarge", "us-east-1a"): 0.21, ("g4dn.xlarge", "us-east-1b"): 0.25}


def test_spot_prices_against_moto(aws_env):
    """spot_prices (moto in-process): one offer per type and zone, beside the on-demand price and its source."""
    from moto import mock_aws

    from infra.aws.prices import spot_prices

    with mock_aws():
        offers = spot_prices(
            "us-east-1",
            ["g4dn.xlarge", "p3.2xlarge"],
            on_demand_overrides={"p3.2xlarge": 3.5},
            now=dt.datetime.now(dt.UTC),
        )
    assert offers and {o.instance_type for o in offers} <= {"g4dn.xlarge", "p3.2xlarge"}
    keys = [(o.instance_type, o.zone) for o in offers]
    assert len(keys) == len(set(keys))  # one per type and zone
    for o in offers:
        assert o.zone.startswith("us-east-1") and o.spot_usd_per_hour > 0
        assert (o.on_demand_usd_per_hour, o.on_demand_source) == (
            (3.5, "profile") if o.instance_type == "p3.2xlarge" else (0.526, "table (us-east-1 list price)")
        )
        assert o.saving_pct == pytest.approx(100 * (1 - o.spot_usd_per_hour / o.on_demand_usd_per_hour))


def test_cli_prices_against_moto_server(tmp_path):
    """`ganops cluster prices --json` against moto's server on 127.0.0.1 (AWS_ENDPOINT_URL): offers on
    stdout, a table (on stdout too) without --json."""
    from infra.local_services import moto_s3

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with moto_s3(tmp_path / "moto.log", FAKE_CREDS) as moto:  # moto's server answers EC2 too
        env.update({**FAKE_CREDS, "AWS_ENDPOINT_URL": moto.url, "PYTHONPATH": str(ROOT)})
        cmd = [sys.executable, "-m", "orchestrator.cli", "cluster", "prices", str(EXAMPLE)]
        r = subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        types = {o["instance_type"] for o in out["offers"]}
        assert out["region"] == "us-east-1" and types and types <= {"g4dn.xlarge", "g5.xlarge", "p3.2xlarge"}
        assert all(
            {"zone", "spot_usd_per_hour", "on_demand_usd_per_hour", "saving_pct"} <= set(o) for o in out["offers"]
        )
        human = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
        # the table pipes; notes on stderr
        assert human.returncode == 0 and "saving" in human.stdout and "on-demand prices:" in human.stderr
        assert "testing" not in r.stderr + human.stderr  # no credential in the output
