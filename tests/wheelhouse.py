"""A local wheelhouse of ganops' pinned requirements, so the tests that stand up a bare cluster
or node install them without asking a package index each time.

The bare-cluster and cluster-setup tests check that ganops brings its requirements to a Python
that lacks them (a job's pip runtime env, a node's setup commands); where pip finds the wheels is
the cluster's own pip configuration, not what they test. Resolving and downloading ~100 packages
from the index took most of their minutes; the wheelhouse is built once with this machine's pip
configuration (its mirrors, then PyPI: the versions the index would give), cached in
~/.cache/ganops-tests (or $GANOPS_TEST_CACHE) under a name that changes with the pins, and read
with `PIP_NO_INDEX=1 PIP_FIND_LINKS=<wheelhouse>` by the Python under test.
"""

import hashlib
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

from infra.packaging import pins

CACHE = Path(os.environ.get("GANOPS_TEST_CACHE", Path.home() / ".cache" / "ganops-tests"))
TORCH = md.version("torch").split("+")[0]  # 2.13.0+cpu: `torch==2.13.0` takes the local CPU wheel
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
# Every pin either test installs: a job's (no extras here) are a subset of a node's.
REQUIREMENTS = pins(extras=("aws", "s3"))
OK = "ganops-wheelhouse-ok"


def wheelhouse() -> Path:
    """The cached wheelhouse of REQUIREMENTS and their dependencies (torch's own wheel left out:
    the Pythons under test keep theirs), built under a temp name and renamed into place, so a
    half-built one is never used."""
    key = hashlib.sha256("\n".join([PY, f"torch=={TORCH}", *REQUIREMENTS]).encode()).hexdigest()[:12]
    dest = CACHE / f"wheelhouse-py{PY}-{key}"
    if (dest / OK).is_file():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f".building-{dest.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # torch pinned so the resolver takes the local build (not another release, nor CUDA's wheels).
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(tmp)]
        + [f"torch=={TORCH}", *REQUIREMENTS],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, f"building the test wheelhouse failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    for whl in tmp.glob("torch-*.whl"):
        whl.unlink()
    (tmp / OK).write_text("\n".join(REQUIREMENTS) + "\n")
    try:
        tmp.rename(dest)
    except OSError:  # built by another run meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def offline_pip_env(house: Path) -> dict[str, str]:
    """The environment that points pip at `house` alone (no index), and skips compiling every
    installed module to bytecode (Python compiles what it imports, when it imports it): the
    same packages installed, without compiling the thousands of modules of Ray, pyarrow, scipy
    and the rest that the test never imports."""
    # PIP_COMPILE=0, not PIP_NO_COMPILE=1: pip sets an option's dest from its variable, and --no-compile's dest
    # is `compile` (PIP_NO_COMPILE=1 would turn compiling on)
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(house), "PIP_COMPILE": "0"}


# build (or check) the cached wheelhouse by hand: python -m tests.wheelhouse
if __name__ == "__main__":
    print(wheelhouse())
