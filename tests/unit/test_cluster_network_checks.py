"""Cluster network checks (issue 15, item 7): a too-wide ssh_cidr is shown, a security group the
profile names is audited, the bucket refuses plain HTTP, and the spot watcher ignores proxies.
AWS through moto in-process; the metadata service is tests/fake_imds.py on 127.0.0.1."""

import json
from pathlib import Path

import pytest
import yaml

from infra.aws.cluster import ClusterProfile
from infra.local_services import free_port
from tests.fake_imds import FakeImds

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "infra" / "clusters" / "aws-spot-gpu.yaml"


def _profile_yaml(tmp_path: Path, **changes) -> Path:
    data = {**yaml.safe_load(EXAMPLE.read_text()), **changes}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _group(ec2, *rules: dict) -> str:
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    gid = ec2.create_security_group(GroupName="mine", Description="user's own", VpcId=vpc)["GroupId"]
    if rules:
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=list(rules))
    return gid


def _world(port: int, v6: bool = False) -> dict:
    ranges = {"Ipv6Ranges": [{"CidrIpv6": "::/0"}]} if v6 else {"IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **ranges}


# -- ssh_cidr wider than /16 ----------------------------------------------------------------------
@pytest.mark.parametrize(("cidr", "warned"), [("0.0.0.0/1", True), ("10.0.0.0/15", True), ("10.1.0.0/16", False)])
def test_ssh_cidr_wider_than_a_16_is_warned_about(cidr, warned):
    """An ssh_cidr wider than /16 loads, with a warning that names the field and the fix."""
    data = {**yaml.safe_load(EXAMPLE.read_text()), "ssh_cidr": cidr}
    warnings = ClusterProfile.model_validate(data).warnings
    assert bool(warnings) == warned
    if warned:
        assert warnings[0].startswith(f"ssh_cidr: {cidr} is wider than /16") and "/32" in warnings[0]


def test_ssh_from_anywhere_still_needs_the_explicit_switch_and_is_still_warned_about():
    """0.0.0.0/0 stays refused without allow_ssh_from_anywhere; with it, the warning still shows."""
    data = {**yaml.safe_load(EXAMPLE.read_text()), "ssh_cidr": "0.0.0.0/0"}
    with pytest.raises(ValueError, match="allow_ssh_from_anywhere"):
        ClusterProfile.model_validate(data)
    assert ClusterProfile.model_validate({**data, "allow_ssh_from_anywhere": True}).warnings


def test_cli_check_shows_the_ssh_cidr_warning_on_stderr_and_in_json(tmp_path, aws_env):
    """`ganops cluster check --json`: the warning on stderr for a person, in `warnings` for a script."""
    from moto import mock_aws
    from typer.testing import CliRunner

    from orchestrator.cli import app

    path = _profile_yaml(tmp_path, ssh_cidr="0.0.0.0/1")
    with mock_aws():
        r = CliRunner().invoke(app, ["cluster", "check", str(path), "--json"])
    assert "Traceback" not in r.output
    assert "ssh_cidr: 0.0.0.0/1 is wider than /16" in r.stderr
    assert json.loads(r.stdout)["warnings"][0].startswith("ssh_cidr: 0.0.0.0/1")


# -- a security group the profile names ----------------------------------------------------------
def test_audit_refuses_a_supplied_group_with_rays_ports_open_to_the_world(aws_env):
    """Any port but SSH open to 0.0.0.0/0 or ::/0 is refused, naming the rule and the fix; SSH from
    the world only with allow_ssh_from_anywhere; a group open only to the cluster passes."""
    import boto3
    from moto import mock_aws

    from infra.aws.network import SecurityGroupError, audit_security_group

    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        gid = _group(ec2, _world(8265), _world(6379, v6=True))
        with pytest.raises(SecurityGroupError) as e:
            audit_security_group(ec2, gid)
        msg = str(e.value)
        assert f"security_group_id: {gid}" in msg
        assert "tcp 8265 from 0.0.0.0/0" in msg and "tcp 6379 from ::/0" in msg
        assert "revoke-security-group-ingress" in msg and "drop security_group_id" in msg
        ec2.delete_security_group(GroupId=gid)

        ssh = _group(ec2, _world(22))
        with pytest.raises(SecurityGroupError, match="tcp 22 from 0.0.0.0/0"):
            audit_security_group(ec2, ssh)
        audit_security_group(ec2, ssh, allow_ssh_from_anywhere=True)
        ec2.delete_security_group(GroupId=ssh)

        own = {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": _group(ec2)}]}
        ec2.authorize_security_group_ingress(GroupId=own["UserIdGroupPairs"][0]["GroupId"], IpPermissions=[own])
        audit_security_group(ec2, own["UserIdGroupPairs"][0]["GroupId"])


def test_cli_up_refuses_an_open_supplied_group_with_exit_2_before_asking(tmp_path, aws_env, monkeypatch):
    """`ganops cluster up` with a world-open security_group_id: exit 2, the rule named, nothing asked or made."""
    import boto3
    from moto import mock_aws
    from typer.testing import CliRunner

    from orchestrator.cli import app

    monkeypatch.setenv("GANOPS_HOME", str(tmp_path / "home"))
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        gid = _group(ec2, {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
        path = _profile_yaml(tmp_path, security_group_id=gid)
        r = CliRunner().invoke(app, ["cluster", "up", str(path)], input="")
        buckets = boto3.client("s3", region_name="us-east-1").list_buckets()["Buckets"]
        checked = CliRunner().invoke(app, ["cluster", "check", str(path), "--json"])
    if "ray command: " in r.stderr:
        pytest.skip("the ray command this machine has does not match the nodes' (preflight stops first)")
    assert r.exit_code == 2, r.output
    assert f"security_group_id: {gid} allows all traffic from 0.0.0.0/0" in r.stderr
    assert "Continue?" not in r.output and "Traceback" not in r.output
    assert buckets == []  # the bucket comes after the audit
    group = next(c for c in json.loads(checked.stdout)["checks"] if c["name"] == "security group")
    assert group["ok"] is False and "all traffic from 0.0.0.0/0" in group["detail"]


# -- the bucket refuses plain HTTP ---------------------------------------------------------------
def test_bucket_policy_denies_requests_without_tls_and_keeps_the_owners_statements(aws_env):
    """ensure_bucket: a Deny on aws:SecureTransport=false, beside the public access block; re-run on a
    bucket with its own policy keeps that policy's statements and does not add ours twice."""
    import boto3
    from moto import mock_aws

    from infra.aws.storage import TLS_ONLY_SID, ensure_bucket

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        state = ensure_bucket("ganops-net", "us-east-1", s3=s3)
        assert state.created and state.tls_only and state.public_access_blocked
        (deny,) = json.loads(s3.get_bucket_policy(Bucket="ganops-net")["Policy"])["Statement"]
        assert deny["Effect"] == "Deny" and deny["Action"] == "s3:*"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert sorted(deny["Resource"]) == ["arn:aws:s3:::ganops-net", "arn:aws:s3:::ganops-net/*"]

        theirs = {
            "Sid": "TeamRead",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::ganops-net/*",
        }
        s3.put_bucket_policy(
            Bucket="ganops-net", Policy=json.dumps({"Version": "2012-10-17", "Statement": [theirs, deny]})
        )
        again = ensure_bucket("ganops-net", "us-east-1", s3=s3)
        statements = json.loads(s3.get_bucket_policy(Bucket="ganops-net")["Policy"])["Statement"]
        assert not again.created and again.tls_only
        assert [st["Sid"] for st in statements] == ["TeamRead", TLS_ONLY_SID]


# -- the spot watcher ignores HTTP(S)_PROXY ------------------------------------------------------
@pytest.fixture
def dead_proxy(monkeypatch):
    """HTTP(S)_PROXY at a port nothing listens on, and no NO_PROXY to exempt 127.0.0.1."""
    proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return proxy


def test_imds_calls_do_not_go_through_a_proxy_from_the_environment(dead_proxy):
    """With HTTP_PROXY pointing at a dead port, the token and the notice still come from the IMDS itself."""
    import urllib.error
    import urllib.request

    with FakeImds() as imds:
        # The proxy really is dead: a default opener fails here. A fresh one, since urlopen's global
        # opener read the proxy settings when the process first used it (an earlier test did).
        with pytest.raises(urllib.error.URLError) as e:
            opener = urllib.request.build_opener()
            opener.open(urllib.request.Request(f"{imds.url}/latest/api/token", method="PUT"), timeout=2)
        assert not isinstance(e.value, urllib.error.HTTPError)  # refused by the dead proxy, not answered by IMDS
        from infra.aws.spot import InterruptionWatcher, instance_action

        assert instance_action(imds.url, timeout=10) is None  # 1 s by default: too short on a loaded machine
        imds.arm()
        assert instance_action(imds.url, timeout=10) == {"action": "terminate", "time": "2026-11-23T20:00:00Z"}
        w = InterruptionWatcher(imds.url, interval=0.05).start()
        try:
            assert w.noticed.wait(30) and w.notice["action"] == "terminate"  # a loaded machine is slow
        finally:
            w.stop()
