"""The setup commands of the cluster YAML `ganops cluster config` writes, run verbatim here in a
fresh virtual environment standing in for a node, give a Python in which ganops imports at the
client's version.

The stand-in node has torch and nothing else: like the profile's default image (Ray's AWS
default, a Deep Learning AMI), which brings torch built for its CUDA but no Ray, so the setup
commands must bring Ray too (an image that has Ray 2.60.0 is the easier case: pip finds it).
torch comes first, as the image would provide it (`torch==2.13.0`: the CPU wheel on this
machine's disk); the setup commands must leave it alone. That base env is built once and cached
in ~/.cache/ganops-tests (or $GANOPS_TEST_CACHE), then copied fresh for each run; ganops'
dependencies are never put into it by hand. HOME is a temp dir holding what `file_mounts` would
copy (~/ganops-dist, ~/.ray/auth_token), and this machine's pip configuration (its package
mirrors). pip installs from a local wheelhouse of the pinned requirements (tests/wheelhouse.py,
resolved once against this machine's mirrors and PyPI and cached), as a node behind its own
package mirror would: the same packages as from the index, without the ~3.5 min that resolving
and downloading them from the index took on each run.
"""

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from infra.aws.launcher import DIST_REMOTE, RAY_VERSION, TOKEN_REMOTE
from tests.unit.test_aws_cluster import EXAMPLE, SG
from tests.wheelhouse import offline_pip_env, wheelhouse

pytestmark = pytest.mark.integration

TORCH = md.version("torch").split("+")[0]  # 2.13.0+cpu here: `torch==2.13.0` takes the local CPU wheel
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
CACHE = Path(os.environ.get("GANOPS_TEST_CACHE", Path.home() / ".cache" / "ganops-tests"))
BASE = CACHE / f"node-torch-{TORCH}-py{PY}"
# What a node's shell must not inherit from the test's: another Python's paths, this checkout.
SCRUB = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
    "GANOPS_HOME",
    "PIP_REQUIRE_VIRTUALENV",
    "PIP_USER",
    "PIP_TARGET",
    "PIP_PREFIX",
)
PROBE = """
import importlib.metadata as md, json, sys
import orchestrator.cli, trainers.loop
import ray, torch
print(json.dumps({"ganops": md.version("ganops"), "ray": ray.__version__, "torch": torch.__version__,
                  "orchestrator": orchestrator.cli.__file__, "trainers": trainers.loop.__file__, "prefix": sys.prefix}))
"""


def _env(home: Path, venv: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env["HOME"] = str(home)
    env["PIP_CACHE_DIR"] = str(CACHE / "pip")  # shared between runs, where pip caches at all
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def _base_venv() -> Path:
    """The cached torch-only venv: built under a temp name, then renamed into place (a concurrent
    run that loses the race uses the winner's)."""
    if (BASE / "ganops-base-ok").is_file():
        return BASE
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f".building-{BASE.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, timeout=300)
    # The real HOME: this machine's pip configuration finds the local torch wheel.
    r = subprocess.run(
        [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", f"torch=={TORCH}"],
        env=_env(Path.home()),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp / "ganops-base-ok").write_text(f"torch=={TORCH}\n")
    try:
        tmp.rename(BASE)
    except OSError:  # built by another run meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return BASE


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(src, dst)


def _fresh_venv(dest: Path) -> Path:
    """A copy of the base venv at `dest`: `bin/python` stays a link to this interpreter, and
    pyvenv.cfg next to it makes `dest` the prefix. Scripts the base installed keep the base's
    path in their shebang; the setup commands run `python -m pip`, never a script. Files are
    hard links to the base's (3 s here where copying its 0.9 GB took 19-29 s): pip unlinks a file
    before it writes or removes one, and Python replaces a stale .pyc, so the base is never
    written through them."""
    shutil.copytree(_base_venv(), dest, symlinks=True, copy_function=_link_or_copy)
    return dest


def _as_file_mounts(config: dict, home: Path) -> None:
    """Put each `file_mounts` source where Ray's rsync would, under `home` (mode bits kept, as rsync -a does)."""
    for remote, local in config["file_mounts"].items():
        assert remote.startswith("~/"), remote
        dest = home / remote[2:]
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).is_dir():
            shutil.copytree(local, dest)
        else:
            shutil.copy2(local, dest)


@pytest.mark.timeout(900)
def test_setup_commands_give_a_python_with_the_clients_ganops(tmp_path, monkeypatch):
    """`ganops cluster config`'s setup commands, verbatim, in a fresh torch-only venv with HOME
    holding what file_mounts copies: ganops imports there at the client's version, Ray is the
    pinned one, torch is untouched, and `pip check` passes."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    monkeypatch.setenv("GANOPS_HOME", str(tmp_path / "client"))
    out = tmp_path / "cluster.yaml"
    r = CliRunner().invoke(app, ["cluster", "config", str(EXAMPLE), "--out", str(out), "--security-group-id", SG])
    assert r.exit_code == 0, r.output
    config = yaml.safe_load(out.read_text())
    assert set(config["file_mounts"]) == {DIST_REMOTE, TOKEN_REMOTE}

    house = wheelhouse()  # built once, then cached
    t0 = time.monotonic()
    venv = _fresh_venv(tmp_path / "node-venv")
    home = tmp_path / "node-home"
    home.mkdir()
    _as_file_mounts(config, home)
    for name in (".config/pip/pip.conf", ".pip/pip.conf"):  # this machine's mirrors, as the client's pip uses them
        if (Path.home() / name).is_file():
            (home / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path.home() / name, home / name)
    env = {**_env(home, venv), **offline_pip_env(house)}
    t_base = time.monotonic() - t0

    timings = []
    for cmd in config["setup_commands"]:
        t = time.monotonic()
        r = subprocess.run(["bash", "-c", cmd], cwd=home, env=env, capture_output=True, text=True, timeout=780)
        timings.append((round(time.monotonic() - t, 1), cmd[:70]))
        assert r.returncode == 0, (
            f"setup command failed ({r.returncode}): {cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        )
    print(f"\nbase venv ready in {t_base:.1f} s; setup commands: {timings}")

    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-c", PROBE], cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    site = venv / "lib" / f"python{PY}" / "site-packages"
    assert got["ganops"] == md.version("ganops")
    assert (
        Path(got["prefix"]) == venv
        and Path(got["orchestrator"]).is_relative_to(site)
        and Path(got["trainers"]).is_relative_to(site)
    )
    assert got["ray"] == RAY_VERSION
    assert got["torch"] == md.version("torch"), "the setup commands replaced the image's torch"
    r = subprocess.run([py, "-m", "pip", "check"], cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [str(venv / "bin" / "ganops"), "--help"], cwd=home, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and "sweep" in r.stdout, r.stderr[-3000:]
