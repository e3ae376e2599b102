"""docs/kuberay-raycluster.yaml: a KubeRay RayCluster on the client's Ray (and Python), a GPU
worker group, token auth from a Secret on every Ray container, trial drivers pinned to the head.
No Kubernetes here: this checks the manifest's shape, not that KubeRay runs it."""

import json
import sys
from pathlib import Path

import pytest
import ray
import yaml

from infra.aws.launcher import DRIVER_RESOURCE, RAY_VERSION

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "docs" / "kuberay-raycluster.yaml"
DOC = ROOT / "docs" / "kuberay.md"
PY_TAG = f"py{sys.version_info[0]}{sys.version_info[1]}"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def _groups(cluster: dict) -> list[dict]:
    return [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]


def _containers(group: dict) -> list[dict]:
    pod = group["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_is_a_raycluster_on_the_clients_ray_version(cluster):
    """apiVersion ray.io/v1, kind RayCluster; rayVersion and every image name the installed Ray, which is
    the launcher's."""
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert ray.__version__ == RAY_VERSION
    assert cluster["spec"]["rayVersion"] == RAY_VERSION
    images = [c["image"] for g in _groups(cluster) for c in _containers(g)]
    assert len(images) >= 2
    for image in images:
        repo, _, tag = image.rpartition(":")
        assert repo and tag.split("-")[0] == RAY_VERSION, image
        assert PY_TAG in tag.split("-"), f"{image}: not the client's Python ({PY_TAG})"


def test_worker_group_has_gpus(cluster):
    """A worker group asks Kubernetes for nvidia.com/gpu >= 1, and tells Ray the same number."""
    gpu_groups = []
    for group in cluster["spec"]["workerGroupSpecs"]:
        ray_c = group["template"]["spec"]["containers"][0]
        limit = int(ray_c["resources"]["limits"].get("nvidia.com/gpu", 0))
        if limit >= 1:
            gpu_groups.append(group)
            if "num-gpus" in group.get("rayStartParams", {}):
                assert int(group["rayStartParams"]["num-gpus"]) == limit
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert gpu_groups


def test_token_auth_on_every_ray_container_from_a_secret(cluster):
    """RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from a Secret (never a literal) on the head and every worker."""
    secrets = set()
    for group in _groups(cluster):
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "value" not in env["RAY_AUTH_TOKEN"]
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "auth_token"
        secrets.add(ref["name"])
    assert len(secrets) == 1
    assert f"secret generic {secrets.pop()} " in DOC.read_text()  # the doc creates the Secret the manifest names


def test_trial_drivers_stay_on_the_head(cluster):
    """Only the head offers ganops_driver (trial drivers ask for it), and it offers no CPUs to training."""
    head = cluster["spec"]["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0"
    assert DRIVER_RESOURCE in json.loads(json.loads(head["resources"]))  # KubeRay's '"{...}"' quoting
    assert not [
        g
        for g in cluster["spec"]["workerGroupSpecs"]
        if DRIVER_RESOURCE in g.get("rayStartParams", {}).get("resources", "")
    ]
