"""`ganops cluster check|config|prices|bucket|up|down|status`: an AWS Ray cluster of spot GPU
workers from a profile (infra/clusters/*.yaml). Tables, YAML and `--json` on stdout; chatter on stderr.

`up`, `down` and `status` hand over to Ray's own cluster launcher (`ray up|down|exec`) on a
file generated from the profile; ganops adds the checks and the security group before it.
`up` and `down` check what they need (boto3, credentials AWS accepts, the `ray` command)
before they ask anything; `check` reports all of it, like `sky check`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

cluster_app = typer.Typer(
    help="AWS Ray clusters of spot GPU workers (profile: infra/clusters/*.yaml).", no_args_is_help=True
)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
table_out = Console(width=None if sys.stdout.isatty() else 160)  # tables on stdout, so they pipe

ProfileArg = Annotated[
    Path, typer.Argument(metavar="PROFILE", help="Cluster profile YAML, e.g. infra/clusters/aws-spot-gpu.yaml.")
]
YesOpt = Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")]


def _fail(msg: str, code: int = 1) -> NoReturn:
    # keeps `pip install 'ganops[aws]'` whole: rich reads [aws] as markup
    err.print(f"[bold red]error[/] {escape(msg)}", highlight=False)
    raise typer.Exit(code)


def _profile(path: Path):
    from search_spaces.loader import SpecError, load_profile

    try:
        profile = load_profile(path)
    except SpecError as e:
        err.print(
            f"[bold red]profile error[/] ({len(e.issues)} issue{'s' if len(e.issues) != 1 else ''}):", highlight=False
        )
        err.print(e.render(), highlight=False, markup=False)
        err.print(
            "Nothing was created. Fix the profile (fields: infra/aws/cluster.py) "
            "and run `ganops cluster config PROFILE` to check it.",
            style="dim",
        )
        raise typer.Exit(2) from None
    for warning in profile.warnings:  # every command loads the profile here, so every command says it
        err.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)
    return profile


def _checked_config(
    profile, security_group_id: str | None, spot_usd: dict[str, float] | None = None, build: bool = True
) -> dict:
    from infra.aws.launcher import launcher_config, validate_with_ray

    dist_dir, wheel = _dist(profile, build)
    config = launcher_config(
        profile, security_group_id, spot_usd, dist_dir=dist_dir, wheel=wheel, token_file=_token_file(profile)
    )
    try:
        validate_with_ray(config)
    except Exception as e:  # a generator bug, not user input: say so plainly
        _fail(
            f"the generated cluster config fails Ray's own validation ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}); please report it"
        )
    return config


def _cluster_file(profile) -> Path:
    from orchestrator.tracking import home

    return home() / "clusters" / f"{profile.name}.yaml"


def _cluster_dir(profile) -> Path:
    """What the cluster file's file_mounts copy to the nodes: `dist/` and `auth_token` (owner only)."""
    d = _cluster_file(profile).with_suffix("")
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    return d


def _token_file(profile) -> Path:
    """The cluster's Ray token: made once (secrets.token_hex(32)), 0600, reused by every later
    config/up/down, so a running cluster keeps the token its nodes have. Never printed."""
    import secrets

    path = _cluster_dir(profile) / "auth_token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        if not path.read_text().strip():
            _fail(
                f"the cluster's token file {path} is empty; delete it to "
                "have a new token made (then `ganops cluster up` again)",
                1,
            )
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def _dist(profile, build: bool = True) -> tuple[Path | None, str | None]:
    """The directory the nodes install ganops from: a wheel of this client's source and its
    requirements pinned to this client's versions (torch left out). `build=False` (for `down`)
    reuses what an earlier config/up built, if any."""
    from infra.packaging import build_wheel, pins

    d = _cluster_dir(profile) / "dist"
    if not build:
        wheels = sorted(d.glob("*.whl"))
        return (d, wheels[-1].name) if len(wheels) == 1 and (d / "requirements.txt").is_file() else (None, None)
    if d.exists():
        shutil.rmtree(d)  # nothing stale goes to the nodes
    # Fixed zip timestamps: the same source gives the same wheel, so `ray up` on a running cluster
    # (its runtime hash covers the file_mounts' contents) does not restart Ray for a rebuild alone.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = epoch or "315532800"  # 1980-01-01, the earliest a zip holds
    try:
        wheel = build_wheel(d)
        (d / "requirements.txt").write_text("\n".join(pins(extras=("aws", "s3"))) + "\n")
    except Exception as e:  # noqa: BLE001 - no checkout, ganops not installed, pip failed
        detail = getattr(e, "stderr", None) or str(e)
        last = detail.strip().splitlines()[-1] if detail.strip() else ""
        _fail(
            f"could not build ganops for the nodes ({type(e).__name__}: {last}); "
            "run ganops from its checkout, installed with `pip install -e .`",
            2,
        )
    finally:
        if epoch is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
    return d, wheel.name


def _next_steps(cluster_file: Path | str, token: Path) -> str:
    return (
        f"Ray on the cluster requires its token ({token}, on every node as ~/.ray/auth_token; keep it private). "
        f"Next: ray dashboard {cluster_file} (keep it running: http://127.0.0.1:8265 through SSH), then "
        f"RAY_AUTH_TOKEN_PATH={token} ganops job submit SPEC --address http://127.0.0.1:8265"
    )


def _aws_ready(profile) -> str:
    """Create (or find) the cluster's security group; its id."""
    from infra.aws.launcher import security_group_name
    from infra.aws.network import SecurityGroupError, ensure_security_group
    from infra.aws.session import AwsUnavailable, client

    if profile.security_group_id:
        return _audited_group(profile)
    try:
        return ensure_security_group(
            client("ec2", profile.region),
            security_group_name(profile),
            profile.ssh_cidr,
            profile.allow_ssh_from_anywhere,
        )
    except (AwsUnavailable, SecurityGroupError) as e:
        _fail(str(e), 2 if isinstance(e, AwsUnavailable) else 1)
    except Exception as e:  # botocore: no credentials, access denied, endpoint down
        _fail(f"AWS refused or could not be reached while preparing the security group: {type(e).__name__}: {e}")


def _audited_group(profile) -> str:
    """The profile's own security group, once its inbound rules pass the audit (exit 2 if not)."""
    from infra.aws.network import SecurityGroupError, audit_security_group
    from infra.aws.session import AwsUnavailable, client

    try:
        audit_security_group(client("ec2", profile.region), profile.security_group_id, profile.allow_ssh_from_anywhere)
    except (AwsUnavailable, SecurityGroupError) as e:
        _fail(f"{e}. Nothing was created", 2)
    except Exception as e:  # botocore: group not found, access denied, endpoint down
        _fail(f"could not read security group {profile.security_group_id}: {type(e).__name__}: {e}")
    return profile.security_group_id


def _write(profile, source: str, sg: str, spot_usd: dict[str, float] | None = None, build: bool = True) -> Path:
    from infra.aws.launcher import dump

    path = _cluster_file(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(_checked_config(profile, sg, spot_usd, build), source))
    return path


def _current_spot_usd(profile) -> dict[str, float]:
    """Cheapest current spot USD/h per worker type, for the nodes' price labels (trial cost);
    {} when EC2 does not answer (the labels then carry the upper bound: max_price or on demand)."""
    from infra.aws.prices import spot_prices

    if not profile.spot:
        return {}
    try:
        offers = spot_prices(
            profile.region,
            [w.instance_type for w in profile.workers],
            on_demand_overrides=profile.on_demand_usd_per_hour,
        )
    except Exception as e:  # noqa: BLE001 - a price label is not worth failing `up` over
        err.print(
            f"[yellow]warning[/] no current spot prices ({type(e).__name__}); "
            "trial costs will use max_price or the on-demand price",
            highlight=False,
        )
        return {}
    best: dict[str, float] = {}
    for o in offers:
        best[o.instance_type] = min(best.get(o.instance_type, o.spot_usd_per_hour), o.spot_usd_per_hour)
    return best


def _bucket(profile) -> None:
    from infra.aws.session import AwsUnavailable
    from infra.aws.storage import ensure_bucket

    try:
        state = ensure_bucket(profile.s3_bucket, profile.region)
    except AwsUnavailable as e:
        _fail(str(e), 2)
    except Exception as e:  # botocore: no credentials, name taken by another account, endpoint down
        _fail(f"could not prepare bucket {profile.s3_bucket} in {profile.region}: {type(e).__name__}: {e}")
    verb = "created" if state.created else "found"
    err.print(
        f"bucket {state.name} {verb}: public access blocked {state.public_access_blocked}, default encryption "
        f"{state.encrypted}, TLS only {state.tls_only}. "
        f"Sweeps store checkpoints there with `storage: s3://{state.name}/ganops` in the spec.",
        highlight=False,
    )


def _ray(*args: str) -> int:
    exe = shutil.which("ray")
    if not exe:
        _fail(f"the `ray` command is not on PATH; install it with pip install 'ray[default]=={_ray_version()}'", 2)
    err.print(f"$ ray {' '.join(args)}", style="dim", highlight=False)
    return subprocess.call([exe, *args])


@cluster_app.command()
def config(
    profile_path: ProfileArg,
    out: Annotated[Path | None, typer.Option("--out", help="Write the YAML here (default: stdout).")] = None,
    security_group_id: Annotated[
        str | None,
        typer.Option("--security-group-id", help="The security group every node joins (default: the profile's)."),
    ] = None,
) -> None:
    """Generate Ray's cluster-launcher YAML from a profile, checked against Ray's schema.

    The nodes install this client's ganops: a wheel of its source and its requirements pinned
    to its versions, built into GANOPS_HOME/clusters/NAME/dist (file_mounts copies it). Ray
    runs with token auth; the token is GANOPS_HOME/clusters/NAME/auth_token (made once, 0600).

    Example: ganops cluster config infra/clusters/aws-spot-gpu.yaml --out cluster.yaml
    """
    from infra.aws.launcher import dump, unsafe_reasons

    profile = _profile(profile_path)
    cfg = _checked_config(profile, security_group_id)
    text = dump(cfg, str(profile_path))
    if out:
        out.write_text(text)
        err.print(
            f"wrote {out}: {len(cfg['available_node_types']) - 1} worker "
            f"types, head {profile.head_instance_type} (on demand)",
            highlight=False,
        )
    else:
        typer.echo(text, nl=False)
    reasons = unsafe_reasons(cfg)
    for reason in reasons:
        err.print(
            f"[yellow]warning[/] {reason}. Do not `ray up` this file: `ganops cluster up` creates the group (SSH "
            f"from {profile.ssh_cidr} only) first, "
            "or pass --security-group-id.",
            highlight=False,
        )
    if not reasons:
        err.print(_next_steps(out or "CLUSTER_FILE", _token_file(profile)), style="dim", highlight=False)


@cluster_app.command()
def prices(
    profile_path: ProfileArg,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")] = False,
) -> None:
    """The cheapest spot offer per worker instance type and zone, beside the on-demand price.

    Example: ganops cluster prices infra/clusters/aws-spot-gpu.yaml
    """
    from infra.aws.prices import spot_prices
    from infra.aws.session import AwsUnavailable

    profile = _profile(profile_path)
    types = [w.instance_type for w in profile.workers]
    try:
        offers = spot_prices(profile.region, types, on_demand_overrides=profile.on_demand_usd_per_hour)
    except AwsUnavailable as e:
        _fail(str(e), 2)
    except Exception as e:  # botocore: no credentials, endpoint down, throttled
        _fail(f"could not read spot prices in {profile.region}: {type(e).__name__}: {e}")
    if json_:
        typer.echo(json.dumps({"region": profile.region, "offers": [o.to_dict() for o in offers]}))
        return
    table = Table(title=f"spot offers in {profile.region}, cheapest first per type", title_justify="left")
    for col in ("instance type", "zone", "spot $/h", "on-demand $/h", "saving"):
        table.add_column(col, justify="right" if "$" in col or col == "saving" else "left")
    for o in offers:
        od = "-" if o.on_demand_usd_per_hour is None else f"{o.on_demand_usd_per_hour:.4f}"
        table.add_row(
            o.instance_type,
            o.zone,
            f"{o.spot_usd_per_hour:.4f}",
            od,
            "-" if o.saving_pct is None else f"{o.saving_pct:.0f}%",
        )
    table_out.print(table)
    missing = sorted(set(types) - {o.instance_type for o in offers})
    if missing:
        err.print(f"[yellow]no spot offer[/] for {', '.join(missing)} in {profile.region}", highlight=False)
    sources = sorted({o.on_demand_source for o in offers})
    err.print(
        f"on-demand prices: {'; '.join(sources)} (override with on_demand_usd_per_hour in the profile)",
        style="dim",
        highlight=False,
    )


@cluster_app.command()
def bucket(profile_path: ProfileArg) -> None:
    """Create the profile's S3 bucket for checkpoints (private, public access blocked, encrypted,
    TLS only), or re-apply those settings.

    Example: ganops cluster bucket infra/clusters/aws-spot-gpu.yaml
    """
    _bucket(_profile(profile_path))


@cluster_app.command()
def up(profile_path: ProfileArg, yes: YesOpt = False) -> None:
    """Create the security group (SSH from ssh_cidr only), then start the cluster with `ray up`.

    Example: ganops cluster up infra/clusters/aws-spot-gpu.yaml
    """
    profile = _profile(profile_path)
    _preflight_or_exit(profile, profile_path)
    if profile.security_group_id:
        _audited_group(profile)  # a group open to the world is refused before anything is asked or created
    kind = "spot" if profile.spot else "on-demand"
    if not yes and not typer.confirm(
        f"Start cluster {profile.name} in {profile.region}: head {profile.head_instance_type} (on demand), up to "
        f"{profile.max_workers} "
        f"{kind} GPU workers ({', '.join(w.instance_type for w in profile.workers)}). This costs money. Continue?",
        err=True,
    ):
        _fail("cancelled; nothing was created", 1)
    _bucket(profile)
    path = _write(profile, str(profile_path), _aws_ready(profile), _current_spot_usd(profile))
    code = _ray("up", "-y", str(path))
    if code:
        _fail(
            f"`ray up` failed (exit {code}); see its output above. Tear "
            f"down what it started: ganops cluster down {profile_path}",
            1,
        )
    err.print(
        f"Check it: ganops cluster status {profile_path}. " + _next_steps(path, _token_file(profile)),
        style="dim",
        highlight=False,
    )


@cluster_app.command()
def down(profile_path: ProfileArg, yes: YesOpt = False) -> None:
    """Terminate every node of the cluster with `ray down` (the security group stays, for the next `up`).
    Creates nothing.

    Example: ganops cluster down infra/clusters/aws-spot-gpu.yaml -y
    """
    profile = _profile(profile_path)
    _preflight_or_exit(profile, profile_path)
    group = _existing_security_group(profile)  # never created here: `down` creates nothing
    path = _cluster_file(profile)
    if group is None and not path.is_file():
        _fail(
            f"nothing to tear down: no security group {_group_name(profile)} in {profile.region} and no cluster file "
            f"{path}, so `ganops cluster up` has not "
            f"run for this profile here; look in the EC2 console for instances tagged ray-cluster-name={profile.name}",
            1,
        )
    if not yes and not typer.confirm(
        f"Terminate every node of cluster {profile.name} in {profile.region}? Running sweeps stop.", err=True
    ):
        _fail("cancelled; nothing was terminated", 1)
    if group is not None:  # `ray down` installs nothing; with the group named, Ray's bootstrap creates none either
        path = _write(profile, str(profile_path), group, build=False)
    code = _ray("down", "-y", str(path))
    if code:
        _fail(
            f"`ray down` failed (exit {code}); check the EC2 console for instances tagged "
            f"ray-cluster-name={profile.name}",
            1,
        )


@cluster_app.command()
def status(profile_path: ProfileArg) -> None:
    """Show the cluster's nodes and resources: `ray status` on the head, through `ray exec`.

    Example: ganops cluster status infra/clusters/aws-spot-gpu.yaml
    """
    profile = _profile(profile_path)
    path = _cluster_file(profile)
    if not path.is_file():
        _fail(f"no cluster file {path}: this machine has not run `ganops cluster up {profile_path}`", 1)
    # `ray status` only sends the token (~/.ray/auth_token on the head) when told auth is on.
    raise typer.Exit(1 if _ray("exec", str(path), "RAY_AUTH_MODE=token ray status") else 0)


# -- preflight: what a launch needs, checked before anything is asked or created -----------------
@dataclass(frozen=True)
class Check:
    """One thing a launch needs. ok: True found, False missing (a launch would fail), None: not
    there yet but `cluster up` makes it, or not checkable before something else is fixed."""

    name: str
    ok: bool | None
    detail: str


def _ray_version() -> str:
    from infra.aws.launcher import RAY_VERSION

    return RAY_VERSION


def _group_name(profile) -> str:
    from infra.aws.launcher import security_group_name

    return security_group_name(profile)


def _local_checks(profile) -> list[Check]:
    """What this machine needs: boto3, credentials boto3 finds (their source only, never a key), the ray
    command, Python."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    checks = []
    has_boto3 = importlib.util.find_spec("boto3") is not None
    checks.append(Check("boto3", has_boto3, "installed" if has_boto3 else "not installed: pip install 'ganops[aws]'"))
    if has_boto3:
        import boto3

        creds = boto3.Session(region_name=profile.region).get_credentials()
        checks.append(
            Check(
                "credentials",
                creds is not None,
                f"found ({creds.method})"
                if creds is not None
                else "none found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run `aws configure` "
                "(or `aws sso login`)",
            )
        )
    else:
        checks.append(Check("credentials", None, "not checked: needs boto3"))
    try:
        have = version("ray")
    except PackageNotFoundError:
        have = None
    want = _ray_version()
    exe = shutil.which("ray")
    ray_ok = exe is not None and have == want
    checks.append(
        Check(
            "ray command",
            ray_ok,
            f"{exe} (ray {have})"
            if ray_ok
            else f"{'not on PATH' if exe is None else f'ray {have}, the nodes run {want}'}: pip install "
            f"'ray[default]=={want}'",
        )
    )
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    image = profile.image_id or "Ray's deep-learning AMI for the region"
    checks.append(
        Check(
            "python",
            True,
            f"this client {py}; the nodes' image ({image}) must have Python {py}: the wheel's pins are this client's",
        )
    )
    return checks


def _aws_checks(profile) -> list[Check]:
    """What AWS must have or accept: the credentials, the region, the image, the security group, the
    bucket, the instance profile, spot offers."""
    from infra.aws.network import SecurityGroupError, audit_security_group
    from infra.aws.session import client

    def ask(name: str, call, found, missing: tuple[bool | None, str] | None = None) -> Check:
        try:
            return Check(name, True, found(call()))
        except SecurityGroupError as e:  # the audit's own message: which rule, and how to remove it
            return Check(name, False, str(e))
        except Exception as e:  # noqa: BLE001 - botocore's errors: shown, never raised
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if missing is not None and any(
                k in code for k in ("NotFound", "NoSuchEntity", "404", "NoSuchBucket", "InvalidGroup")
            ):
                return Check(name, *missing)
            return Check(name, False, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")

    sts, ec2 = client("sts", profile.region), client("ec2", profile.region)
    who = ask("credentials accepted", sts.get_caller_identity, lambda r: "AWS accepts them (sts get-caller-identity)")
    if not who.ok:
        return [who]
    checks = [
        who,
        ask(
            "region",
            lambda: ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])[
                "AvailabilityZones"
            ],
            lambda zones: f"{profile.region}: {len(zones)} zones available",
        ),
    ]
    if profile.image_id:
        checks.append(
            ask(
                "image",
                lambda: ec2.describe_images(ImageIds=[profile.image_id])["Images"][0],
                lambda im: f"{profile.image_id} ({im.get('Name', '?')})",
                (False, f"{profile.image_id} not found in {profile.region}"),
            )
        )
    else:
        checks.append(Check("image", True, f"Ray's default deep-learning AMI for {profile.region}"))
    if profile.security_group_id:
        checks.append(
            ask(
                "security group",
                lambda: audit_security_group(ec2, profile.security_group_id, profile.allow_ssh_from_anywhere),
                lambda _: f"{profile.security_group_id} (from the profile; nothing but SSH open to the internet)",
                (False, f"{profile.security_group_id} not found in {profile.region}"),
            )
        )
    else:
        group = _find_group(ec2, _group_name(profile))
        checks.append(
            Check(
                "security group",
                True if group else None,
                f"{group} ({_group_name(profile)})"
                if group
                else f"none yet: `ganops cluster up` creates {_group_name(profile)} (SSH from {profile.ssh_cidr} only)",
            )
        )
    s3 = client("s3", profile.region)
    checks.append(
        ask(
            "bucket",
            lambda: s3.head_bucket(Bucket=profile.s3_bucket),
            lambda _: f"s3://{profile.s3_bucket}",
            (None, f"none yet: `ganops cluster up` creates s3://{profile.s3_bucket} (private, encrypted)"),
        )
    )
    iam = client("iam", profile.region)
    ref = profile.iam_instance_profile_ref
    name = ref.get("Name") or ref["Arn"].rsplit("/", 1)[-1]
    checks.append(
        ask(
            "instance profile",
            lambda: iam.get_instance_profile(InstanceProfileName=name),
            lambda _: f"{name} (how the nodes reach the bucket)",
            (
                False,
                f"{name} not found: create an IAM instance profile with read/write on s3://{profile.s3_bucket} (aws "
                "iam create-instance-profile; docs/aws.md), or name another in iam_instance_profile",
            ),
        )
    )
    if profile.spot:
        from infra.aws.prices import spot_prices

        types = [w.instance_type for w in profile.workers]
        offers = ask(
            "spot offers",
            lambda: {
                o.instance_type
                for o in spot_prices(profile.region, types, on_demand_overrides=profile.on_demand_usd_per_hour)
            },
            lambda have: ", ".join(sorted(have)) + "".join(f"; none for {t}" for t in types if t not in have),
        )
        checks.append(
            offers
            if not offers.detail.startswith(";")
            else Check("spot offers", False, f"no spot offer for {', '.join(types)} in {profile.region}")
        )
    return checks


def _find_group(ec2, name: str) -> str | None:
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    return groups[0]["GroupId"] if groups else None


def _existing_security_group(profile) -> str | None:
    """The cluster's security group if it exists (the profile's, or the one `up` created); never creates one."""
    if profile.security_group_id:
        return profile.security_group_id
    from infra.aws.session import client

    try:
        return _find_group(client("ec2", profile.region), _group_name(profile))
    except Exception as e:  # noqa: BLE001 - botocore: access denied, endpoint down
        _fail(
            f"AWS refused or could not be reached while looking for security group {_group_name(profile)}: "
            f"{type(e).__name__}: {e}"
        )


def _preflight_or_exit(profile, profile_path: Path) -> None:
    """Before `up` / `down` ask anything: boto3, credentials AWS accepts and the ray command, or exit 2
    saying what is missing."""
    checks = _local_checks(profile)
    if all(c.ok is not False for c in checks):
        checks += _aws_checks(profile)[:1]  # do the credentials work? (one STS call)
    missing = [c for c in checks if c.ok is False]
    if missing:
        _fail(
            "; ".join(f"{c.name}: {c.detail}" for c in missing)
            + f". Nothing was asked or created; `ganops cluster check {profile_path}` shows every check",
            2,
        )


@cluster_app.command()
def check(
    profile_path: ProfileArg,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")] = False,
) -> None:
    """What a launch of this profile needs, and what is missing: boto3, credentials, the ray command,
    Python, region, image, security group, bucket, instance profile, spot offers. Exit 1 if something
    is missing.

    Example: ganops cluster check infra/clusters/aws-spot-gpu.yaml
    """
    profile = _profile(profile_path)
    checks = _local_checks(profile)
    if all(c.ok for c in checks[:2]):  # boto3 and credentials: without them AWS cannot be asked
        checks += _aws_checks(profile)
    ready = all(c.ok is not False for c in checks)
    if json_:
        typer.echo(
            json.dumps(
                {
                    "profile": str(profile_path),
                    "cluster": profile.name,
                    "region": profile.region,
                    "ready": ready,
                    "checks": [asdict(c) for c in checks],
                    "warnings": profile.warnings,
                }
            )
        )
    else:
        table = Table(
            title=f"cluster {profile.name} in {profile.region}: {'ready to launch' if ready else 'not ready'}",
            title_justify="left",
        )
        for col in ("", "check", "detail"):
            table.add_column(col)
        for c in checks:
            table.add_row(
                {True: "[green]ok[/]", False: "[red]missing[/]", None: "[yellow]to do[/]"}[c.ok],
                c.name,
                escape(c.detail),
            )
        table_out.print(table)
        err.print(
            f"Next: ganops cluster up {profile_path}" if ready else "Fix what is missing, then run this check again.",
            style="dim",
            highlight=False,
        )
    if not ready:
        raise typer.Exit(1)
