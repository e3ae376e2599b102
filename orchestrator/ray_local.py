"""Ray on this machine without leaking secrets: a private temp dir, and AWS keys only where needed.

Issue 15, item 2: Ray Tune copies the driver's AWS_* variables into every trial's runtime
environment (`ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE`, Ray 2.60), and Ray logs
runtime environments at INFO in its session directory, by default under /tmp/ray with
world-readable directories (a fake-keys sweep left 23 log lines with them). So:

- a local Ray gets its temp dir inside `$TMPDIR/ganops-ray-<uid>` (0700, ours, not a link):
  Ray makes its own temp dir world-writable (`try_make_directory_shared`, 0777), so the
  privacy is the parent's. Short, because Ray puts Unix sockets under it (sun_path: 107 bytes);
- trials get the driver's AWS keys from Tune only when they need them and cannot get them
  otherwise: the sweep reads or writes S3 (s3:// storage, or an MLflow experiment whose
  artifacts are s3://) on a Ray this process did not start. A Ray started here forks its
  workers from this process's environment, so they already find the keys (and profiles,
  instance roles: the standard credential chain) without any copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# Ray's longest socket path under the private dir: /ray/session_2026-12-01_18-35-29_123456_12345/sockets/plasma_store
# (67 characters) must fit sun_path's 107 bytes.
MAX_PRIVATE_DIR = 107 - 67
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def private_temp_dir() -> str:
    """Ray's temp dir (`ray.init(_temp_dir=...)`), `ray` inside a directory only this user can
    enter: `ganops-ray-<uid>` under RAY_TMPDIR or the system temp dir, created 0700; one that
    exists must be a directory (not a link) this user owns, and is narrowed to 0700. Anything
    else (another user planted it, a path too long for Ray's sockets): a fresh `mkdtemp`."""
    return str(Path(_private_dir()) / "ray")


def _private_dir() -> str:
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    path = Path(base) / f"ganops-ray-{os.getuid()}"
    if len(str(path)) <= MAX_PRIVATE_DIR:
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                if stat.S_IMODE(st.st_mode) != 0o700:
                    path.chmod(0o700)
                return str(path)
            log.warning("%s is not a directory of this user's; Ray gets a fresh private temp dir instead", path)
        except OSError as e:
            log.warning("cannot use %s for Ray (%s); Ray gets a fresh private temp dir instead", path, e.strerror)
    return tempfile.mkdtemp(prefix="ganops-ray-", dir="/tmp")  # mkdtemp: 0700


def started_here() -> bool:
    """Whether this process's `ray.init` started the Ray it is connected to (its raylet, and so
    every worker, inherits this process's environment)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # Ray 2.60; None when connected through Ray Client
    return bool(getattr(node, "ray_init_cluster", False))


def session_dir() -> Path | None:
    """The session directory of the Ray this process started or joined, when it is on this machine."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return Path(node.get_session_dir_path()) if node is not None else None


@contextlib.contextmanager
def aws_keys_to_trials(needed: bool) -> Iterator[bool]:
    """While inside, Tune copies the driver's AWS keys into new trials' runtime environments
    only when `needed` (the sweep uses S3) and this process did not start Ray (whose workers
    would otherwise have them anyway). Yields whether they are copied."""
    from ray.tune.execution import class_cache

    forward = needed and not started_here() and any(k in os.environ for k in AWS_KEYS)
    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if forward or not isinstance(propagated, set):  # Ray 2.60: a set of names
        if forward:
            log.info(
                "the trials get this environment's AWS keys (the sweep "
                "uses S3 on a Ray cluster this process did not start)"
            )
        yield forward
        return
    class_cache.ENV_VARS_TO_PROPAGATE = propagated - set(AWS_KEYS)
    try:
        yield False
    finally:
        class_cache.ENV_VARS_TO_PROPAGATE = propagated
