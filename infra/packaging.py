"""What this client runs, written down so a cluster can run the same: ganops' requirements pinned
to the versions installed here, which of them a Python already satisfies, and a wheel of ganops.

A Ray cluster's nodes have Ray and torch (a stock Ray image, a fresh `ganops cluster up`, a
colleague's cluster) but not ganops' other dependencies. `ganops submit` puts the missing ones
into the job's runtime env, and `ganops cluster config` into the nodes' setup commands, pinned to
this client's versions, so the cluster runs what was tested here. torch is left as the node
provides it: its build matches the node's CUDA. Ray is pinned too, but a job cannot change the
Ray that runs it: pinning `ray[...]==X` only brings the extras' packages (Tune's, Train's) when
the node's Ray is already X; a node with another Ray is refused by name.

This module needs only the standard library and `packaging` (which Ray requires), because
`python -m infra.packaging unsatisfied PIN...` runs on a bare cluster node as the probe.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DIST = "ganops"
LEFT_TO_NODE = frozenset({"torch"})  # the node's own build (CUDA, ROCm or CPU) stays
PROBE_MARK = "GANOPS_PROBE "  # the probe's JSON line in a job log


def _active(req: Requirement, extras: Iterable[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in ("", *extras))


def pins(extras: Iterable[str] = (), dist: str = DIST) -> list[str]:
    """`dist`'s requirements (with `extras`), each pinned to the version installed here, torch
    left out: e.g. ["ray[default,train,tune]==2.60.0", "mlflow==3.17.2", ...]."""
    extras = tuple(extras)
    out: dict[str, str] = {}
    for req in map(Requirement, md.requires(dist) or []):
        name = canonicalize_name(req.name)
        if name in LEFT_TO_NODE or not _active(req, extras):
            continue
        bracket = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        out[name] = f"{name}{bracket}=={md.version(req.name)}"
    return sorted(out.values())


def _satisfied(req: Requirement, seen: set[str]) -> bool:
    """Is `req` installed in this Python, at a version it accepts, with its extras' requirements too?"""
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        return False
    if not req.specifier.contains(version, prereleases=True):
        return False
    key = f"{canonicalize_name(req.name)}{sorted(req.extras)}"
    if key in seen:
        return True
    seen.add(key)
    for sub in map(Requirement, md.requires(req.name) or []):
        # Only what the asked-for extras add: the base requirements came with the install.
        if (
            req.extras
            and sub.marker is not None
            and not sub.marker.evaluate({"extra": ""})
            and _active(sub, req.extras)
        ):
            if not _satisfied(sub, seen):
                return False
    return True


def unsatisfied(requirements: Iterable[str]) -> list[str]:
    """The requirements this Python does not satisfy (missing, another version, an extra's package missing)."""
    seen: set[str] = set()
    return [r for r in requirements if not _satisfied(Requirement(r), seen)]


def wrong_ray(requirements: Iterable[str], installed: str | None) -> str | None:
    """A message when the node's Ray is not the pinned one (a job cannot replace it), else None."""
    for r in map(Requirement, requirements):
        if canonicalize_name(r.name) == "ray" and (installed is None or not r.specifier.contains(installed)):
            return (
                f"the cluster runs Ray {installed or '(none)'} but this client has {r.specifier}; a job cannot change "
                "the Ray that runs it: use a client with the cluster's Ray version, or a cluster with the client's"
            )
    return None


def probe_command(requirements: Iterable[str]) -> str:
    """A shell command that prints PROBE_MARK + JSON {"unsatisfied": [...], "ray": version,
    "python": "3.11"} about the Python it runs in (run from a directory holding infra/)."""
    import shlex

    return " ".join(["python", "-m", "infra.packaging", "unsatisfied", *map(shlex.quote, requirements)])


def parse_probe(log_text: str) -> dict | None:
    at = log_text.rfind(PROBE_MARK)
    if at < 0:
        return None
    return json.loads(log_text[at + len(PROBE_MARK) :].splitlines()[0])


SOURCES = ("orchestrator", "trainers", "search_spaces", "infra", "pyproject.toml", "README.md")


def build_wheel(out_dir: Path) -> Path:
    """A wheel of this client's ganops (its source tree, as it is now), written to `out_dir`.

    Built from a clean copy of the packages (no `build/` leftovers, no other checkout's files,
    no race between two builds), with this Python's setuptools (no download of a build env)."""
    import shutil
    import tempfile

    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(
            f"no pyproject.toml above {Path(__file__).parent}: build the wheel from a ganops checkout (pip install "
            "-e .)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ganops-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCES:
            if (root / name).is_dir():
                shutil.copytree(
                    root / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
                )
            elif (root / name).is_file():
                shutil.copy2(root / name, src / name)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(Path(tmp) / "dist"),
                str(src),
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "315532800")},
        )  # same source, same wheel
        wheels = list((Path(tmp) / "dist").glob(f"{DIST}-*.whl"))
        if len(wheels) != 1:
            raise FileNotFoundError(f"pip wheel wrote {len(wheels)} {DIST} wheels, expected 1")
        target = out_dir / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


def _main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "unsatisfied":
        try:
            ray_version = md.version("ray")
        except md.PackageNotFoundError:
            ray_version = None
        info = {
            "unsatisfied": unsatisfied(argv[1:]),
            "ray": ray_version,
            "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        }
        print(PROBE_MARK + json.dumps(info), flush=True)
        return 0
    if len(argv) >= 1 and argv[0] == "pins":
        print("\n".join(pins(argv[1:])))
        return 0
    print("usage: python -m infra.packaging unsatisfied PIN... | pins [EXTRA...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
