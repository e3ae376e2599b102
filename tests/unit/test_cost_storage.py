"""Cost accounting (node price labels -> a worker's share -> cost_usd; the budget), the trial
drivers' pin to the head, the S3 bucket bootstrap (moto) and the storage check up front."""

import pytest
import yaml
from ray._private.label_utils import validate_node_labels

from infra.aws.cluster import ClusterProfile
from infra.aws.launcher import (
    DRIVER_RESOURCE,
    launcher_config,
    price_labels,
    validate_with_ray,
)
from orchestrator.stopping import BalanceStopper
from orchestrator.trial import DRIVER_RESOURCES, driver_resources
from search_spaces.spec import Stopping
from tests.conftest import FAKE_CREDS
from tests.unit.test_aws_cluster import EXAMPLE, SG
from trainers.cost import LABEL_MARKET, LABEL_ON_DEMAND, LABEL_PRICE, Rate, worker_rate


def _profile(**changes) -> ClusterProfile:
    return ClusterProfile.model_validate({**yaml.safe_load(EXAMPLE.read_text()), **changes})


SPOT = {LABEL_PRICE: "0.9050", LABEL_ON_DEMAND: "7.2000", LABEL_MARKET: "spot"}


def test_a_worker_pays_its_share_of_the_node_by_gpus_or_else_cpus():
    """p2.8xlarge at $0.905/h spot (8 GPUs): a 2-GPU worker pays a quarter; on a CPU node the CPUs decide."""
    r = worker_rate(SPOT, {"CPU": 32, "GPU": 8}, {"CPU": 1, "GPU": 2})
    assert (
        r.priced and r.usd_per_hour == pytest.approx(0.905 / 4) and r.on_demand_usd_per_hour == pytest.approx(7.2 / 4)
    )
    r = worker_rate(SPOT, {"CPU": 4}, {"CPU": 1})
    assert r.usd_per_hour == pytest.approx(0.905 / 4)
    total = r + r
    assert total.usd_per_hour == pytest.approx(0.905 / 2) and total.priced


def test_a_node_without_price_labels_costs_nothing_and_says_so():
    assert worker_rate({}, {"CPU": 2}, {"CPU": 1}) == Rate(0.0, 0.0, False)
    # Ray versions that give label values as lists
    assert worker_rate({k: [v] for k, v in SPOT.items()}, {"CPU": 2}, {"CPU": 2}).usd_per_hour == pytest.approx(0.905)


def test_worker_nodes_carry_price_labels_ray_accepts():
    """Spot: the current offer when known, else max_price, else on demand; the on-demand twin its own price."""
    p = _profile(fallback_on_demand=True)
    config = launcher_config(p, SG, spot_usd={"g5.xlarge": 0.42})
    validate_with_ray(config)
    labelled = {n: t["labels"] for n, t in config["available_node_types"].items() if t.get("labels")}
    assert labelled and config["head_node_type"] not in labelled
    for labels in labelled.values():
        validate_node_labels(labels)  # Ray refuses malformed keys or values at `ray start`
    spot = {n: lab for n, lab in labelled.items() if lab[LABEL_MARKET] == "spot"}
    on_demand = {n: lab for n, lab in labelled.items() if lab[LABEL_MARKET] == "on-demand"}
    assert spot and on_demand
    g5 = [lab for n, lab in spot.items() if "g5" in n]
    assert len(g5) == 1 and float(g5[0][LABEL_PRICE]) == pytest.approx(0.42)  # the current offer
    w = p.workers[0].instance_type
    assert (
        float(price_labels(p, w, True)[LABEL_PRICE]) == float(od_price := price_labels(p, w, False)[LABEL_PRICE])
        and float(od_price) > 0
    )
    assert price_labels(_profile(max_price=0.5), w, True)[LABEL_PRICE] == "0.5000"
    od = price_labels(p, w, False)
    assert od[LABEL_PRICE] == od[LABEL_ON_DEMAND]
    assert price_labels(p, "x9.unknown", False) == {}  # no price known: no label, the trial costs $0


def test_drivers_ask_for_the_head_resource_only_where_the_cluster_has_it():
    assert driver_resources({"CPU": 2.0}) == DRIVER_RESOURCES
    pinned = driver_resources({"CPU": 8.0, DRIVER_RESOURCE: 1000.0})
    assert pinned[DRIVER_RESOURCE] == 1 and pinned["cpu"] == 0


def _report(step, cost):
    return {"step": step, "cost_usd": cost, "loss_d": 1.3, "loss_g": 0.7, "d_x": 0.5, "d_g_z": 0.5}


def test_budget_stops_every_trial_and_the_sweep_once_spent():
    off = Stopping.model_validate(
        {"d_overpowers": None, "d_fooled": None, "mixture_quality": None, "mode_collapse": None, "plateau": None}
    )
    s = BalanceStopper(off, "loss_g", "min", max_usd=1.0)
    assert not s("a", _report(100, 0.3)) and not s("b", _report(100, 0.4))
    assert not s.stop_all()
    assert s("a", _report(200, 0.65))  # 0.65 + 0.4 >= 1.0: no board, so Tune stops it
    assert s.stop_all()
    assert s.verdicts["a"].rule == s.verdicts["b"].rule == "budget"
    assert s.verdicts["a"].evidence["spent_usd"] == pytest.approx(1.05)
    # no budget: never
    s = BalanceStopper(off, "loss_g", "min")
    assert not s("a", _report(100, 1e6)) and not s.stop_all()


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_bucket_bootstrap_is_private_and_encrypted_and_idempotent(aws_env, region):
    import boto3
    from moto import mock_aws

    from infra.aws.storage import ensure_bucket, split_s3_uri

    with mock_aws():
        s3 = boto3.client("s3", region_name=region)
        first = ensure_bucket("ganops-ckpt", region, s3=s3)
        assert first.created and first.public_access_blocked and first.encrypted
        again = ensure_bucket("ganops-ckpt", region, s3=s3)
        assert not again.created and again.public_access_blocked and again.encrypted
        assert (
            s3.get_bucket_ownership_controls(Bucket="ganops-ckpt")["OwnershipControls"]["Rules"][0]["ObjectOwnership"]
            == "BucketOwnerEnforced"
        )
    assert split_s3_uri("s3://b/x/y/") == ("b", "x/y")
    with pytest.raises(ValueError):
        split_s3_uri("/tmp/x")


def test_storage_check_names_the_problem_before_anything_launches(aws_env, monkeypatch, tmp_path):
    """A missing bucket and a dead endpoint are refused up front, with what to do."""
    from infra.local_services import free_port, moto_s3
    from orchestrator.storage import StorageError, check

    check(str(tmp_path / "ray"))
    assert (tmp_path / "ray").is_dir()
    with moto_s3(tmp_path / "moto.log", FAKE_CREDS) as moto:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        import boto3

        boto3.client("s3").create_bucket(Bucket="ganops-there")
        check("s3://ganops-there/sweeps")
        with pytest.raises(StorageError, match="bucket 'ganops-missing' does not exist.*ganops cluster bucket"):
            check("s3://ganops-missing/sweeps")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match="cannot be reached") as e:
        check("s3://ganops-there/sweeps")
    assert "testing" not in str(e.value)  # no credential in the message
