"""A local Ray keeps its logs private and gets AWS keys only when the sweep needs them
(orchestrator/ray_local.py, issue 15 item 2)."""

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from ray.tune.execution import class_cache

from orchestrator.ray_local import AWS_KEYS, aws_keys_to_trials, private_temp_dir


def _mode(path) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


@pytest.fixture
def short_tmp():
    """A temp dir short enough for Ray's socket paths (pytest's tmp_path is not)."""
    path = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def test_rays_temp_dir_is_inside_a_directory_only_this_user_enters(short_tmp, monkeypatch):
    """Created 0700; an existing one of ours is narrowed to 0700; Ray's own dir goes inside it."""
    monkeypatch.setenv("RAY_TMPDIR", str(short_tmp))
    ray_dir = Path(private_temp_dir())
    private = short_tmp / f"ganops-ray-{os.getuid()}"
    assert ray_dir == private / "ray" and _mode(private) == 0o700
    private.chmod(0o777)
    assert Path(private_temp_dir()) == ray_dir and _mode(private) == 0o700


def test_a_planted_link_or_a_path_too_long_for_rays_sockets_gets_a_fresh_private_dir(short_tmp, monkeypatch):
    """Never a symlink someone else placed, never a path whose sockets Ray could not bind."""
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    (short_tmp / f"ganops-ray-{os.getuid()}").symlink_to(elsewhere)
    monkeypatch.setenv("RAY_TMPDIR", str(short_tmp))
    for _ in range(2):
        ray_dir = Path(private_temp_dir())
        assert (
            elsewhere not in ray_dir.parents
            and ray_dir.parent.name.startswith("ganops-ray-")
            and _mode(ray_dir.parent) == 0o700
        )
        assert len(str(ray_dir / "session_2026-12-01_18-35-29_123456_12345/sockets/plasma_store")) <= 107
        os.rmdir(ray_dir.parent)
        monkeypatch.setenv("RAY_TMPDIR", str(short_tmp / ("x" * 60)))


def test_tune_copies_no_aws_key_into_trials_unless_the_sweep_uses_s3_on_a_ray_started_elsewhere(monkeypatch):
    """No S3: the keys leave Tune's propagation list while the sweep runs, and come back after."""
    before = class_cache.ENV_VARS_TO_PROPAGATE
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    with aws_keys_to_trials(needed=False) as forwarded:
        assert not forwarded and not set(AWS_KEYS) & class_cache.ENV_VARS_TO_PROPAGATE
    assert class_cache.ENV_VARS_TO_PROPAGATE is before
    # S3 storage and no Ray started by this process (a cluster's workers do not share this
    # environment): Tune copies them, as it always did.
    with aws_keys_to_trials(needed=True) as forwarded:
        assert forwarded and set(AWS_KEYS) <= class_cache.ENV_VARS_TO_PROPAGATE
