"""Load a spec file safely and turn every mistake into a message a person can act on.

A message names the file, the line, the field path and what is allowed, e.g.
`dcgan.yaml:12 trainer.lr_g: Input should be greater than 0`.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from search_spaces.spec import SpecProblems, SweepSpec, clip, optional_needs, redact_secrets

MAX_SPEC_BYTES = 1_000_000
# A spec nests 5 levels (search.lr_g.choice.[...]); PyYAML's composer recurses once a level, and
# 2,000 `[` ran Python out of stack (RecursionError) before any check could speak.
MAX_DEPTH = 32
MESSAGE_CHARS = 2_000  # a message longer than this repeats something the person wrote: cut it
_PATH_IN_MSG = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.S)


@dataclass(frozen=True)
class SpecIssue:
    path: str  # dotted field path, "" for the whole file
    line: int | None
    message: str
    flag: str | None = None  # the `--set key=value` it came from, blamed instead of a line of the file

    def __post_init__(self) -> None:
        # What a person wrote comes back in every message and `--json` (and CI logs): never more
        # than a glance of it, and never a password or token it held.
        object.__setattr__(self, "path", clip(self.path))
        object.__setattr__(self, "message", clip(redact_secrets(self.message), MESSAGE_CHARS))
        if self.flag is not None:
            object.__setattr__(self, "flag", clip(redact_secrets(self.flag)))


class SpecError(Exception):
    """A spec that cannot run. Carries every issue found, each with its place in the file."""

    def __init__(self, source: str, issues: list[SpecIssue]):
        self.source = source
        self.issues = issues
        super().__init__(self.render())

    def render(self) -> str:
        return render_issues(self.source, self.issues)


def render_issues(source: str, issues: list[SpecIssue]) -> str:
    """One line per issue: `file:line field.path: what to do`, or `--set k=v: ...` for a flag."""
    lines = []
    for i in issues:
        if i.flag:
            key = i.flag.split("=", 1)[0].strip()
            field = f" {i.path}:" if i.path and i.path != key else ""
            lines.append(f"--set {i.flag}:{field} {i.message}")
            continue
        where = f"{source}:{i.line}" if i.line else source
        field = f" {i.path}:" if i.path else ""
        lines.append(f"{where}{field} {i.message}")
    return "\n".join(lines)


@dataclass
class SpecCheck:
    """What `ganops validate` reports: the spec (None when it has errors), every error, every warning."""

    source: str
    spec: Any | None
    errors: list[SpecIssue] = field(default_factory=list)
    warnings: list[SpecIssue] = field(default_factory=list)


def _shape_problem(text: str) -> tuple[int, str] | None:
    """(line, what to do) for YAML that would blow up as it is built, or None: nesting deeper
    than MAX_DEPTH, and aliases (a billion-laughs document is a few hundred bytes). Read from
    PyYAML's event stream, which builds nothing and does not recurse."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            return (
                event.start_mark.line + 1,
                "YAML anchors and aliases (&name, *name) are not supported; write the value out",
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return event.start_mark.line + 1, f"nests deeper than {MAX_DEPTH} levels; a spec needs 5 at most"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each field path to its 1-based line (of a document `_shape_problem` passed)."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out)
    return out


def _line_for(lines: dict[tuple, int], loc: tuple) -> int | None:
    for n in range(len(loc), -1, -1):
        if tuple(loc[:n]) in lines:
            return lines[tuple(loc[:n])]
    return None


def parse_override(item: str) -> tuple[list[str], Any]:
    """`trainer.steps=200` -> (["trainer", "steps"], 200); the value is parsed as YAML."""
    if "=" not in item:
        raise SpecError(
            "--set", [SpecIssue("", None, "must look like key.path=value, e.g. trainer.steps=200", flag=item)]
        )
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError(
            "--set", [SpecIssue("", None, "has an empty key; write key.path=value, e.g. trainer.steps=200", flag=item)]
        )
    try:
        shape = _shape_problem(raw)  # what a file may not do, a flag may not either
        if shape is not None:
            raise SpecError("--set", [SpecIssue(".".join(parts), None, shape[1], flag=item)])
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise SpecError(
            "--set",
            [SpecIssue(".".join(parts), None, f"value {clip(repr(raw))} is not valid YAML: {clip(str(e))}", flag=item)],
        ) from None
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`data` with every `--set` applied, or SpecError naming every flag that cannot be."""
    problems = _apply_overrides(data, overrides)[1]
    if problems:
        raise SpecError("--set", problems)
    return data


def _apply_overrides(data: dict, overrides: list[str]) -> tuple[list[tuple[tuple, str]], list[SpecIssue]]:
    """Apply what can be applied; return (path, flag) of each applied override and the issues of the rest."""
    applied, problems = [], []
    for item in overrides:
        try:
            parts, value = parse_override(item)
        except SpecError as e:
            problems += e.issues
            continue
        node = data
        for depth, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                where = ".".join(parts[: depth + 1])
                problems.append(
                    SpecIssue(where, None, f"is a value, not a section: cannot set {'.'.join(parts)}", flag=item)
                )
                break
            node = nxt
        else:
            node[parts[-1]] = value
            applied.append((tuple(parts), item))
    return applied, problems


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the model accepts at `loc` (a section's field names), [] where it is not a model."""
    tp: Any = model
    for part in loc:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
        # X | None -> X (a section that can be turned off)
        models = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and models:
            tp = models[0]
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _friendly(err: Mapping[str, Any], model: type[BaseModel] = SweepSpec) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        fields = _fields_at(model, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.6)
        if near:
            return f"unknown key; did you mean {near[0]!r}?"
        return f"unknown key; keys here: {', '.join(fields)}" if fields else "unknown key; remove it"
    if err["type"] == "missing":
        return "required; add it to the spec"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


# Stand-ins for missing required values, so the cross-field checks can still run on the rest.
_PLACEHOLDERS = {"name": "unnamed"}


def _issues_of(e: ValidationError, model: type[BaseModel]) -> list[tuple[tuple, str]]:
    """(loc, message) of each pydantic error; a cross-field check's several problems come one by one."""
    out = []
    for err in e.errors():
        loc = tuple(err["loc"])
        problems = (err.get("ctx") or {}).get("error")
        if isinstance(problems, SpecProblems):
            for path, msg in problems.problems:
                out.append((loc + _split_path(path), msg))
            continue
        text = _friendly(err, model)
        m = _PATH_IN_MSG.match(text)
        if not loc and m:  # cross-field errors name their path in the message
            loc, text = _split_path(m.group(1)), m.group(2)
        out.append((loc, text))
    return out


def _split_path(path: str) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in path.split(".") if x)


def _related(a: tuple, b: tuple) -> bool:
    """One problem is inside the other's value (trainer.lr_g and trainer), so report only the first."""
    if not a or not b:
        return a == b
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _without(data: dict, loc: tuple, missing: bool) -> bool:
    """Drop the value at `loc` (its section, for a missing key) so it takes its default; False if nothing changed."""
    if missing:
        if len(loc) == 1 and loc[0] in _PLACEHOLDERS and loc[0] not in data:
            data[loc[0]] = _PLACEHOLDERS[loc[0]]
            return True
        loc = loc[:-1]
    node, last = data, None
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            break
        last = (node, part)
        node = node[part]
    if last is None:
        return False
    del last[0][last[1]]
    return True


# Values the cross-field checks read: with one of them dropped (so at its default), those checks
# would judge a spec the person did not write (`modle: mlp2d` read as dcgan28 on grid25), so the
# gathering stops there rather than report problems that are not there.
_PIVOTS = (
    {("trainer", k) for k in ("model", "data", "data_dir", "image_size", "channels", "loss", "params")}
    | {("sweep", k) for k in ("search_alg", "scheduler", "metric", "mode", "pbt")}
    | {("metrics", "features")}
)


def _is_pivot(loc: tuple, err: Mapping[str, Any], data: dict) -> bool:
    if len(loc) < 2:
        return err["type"] != "missing" or loc not in {(k,) for k in _PLACEHOLDERS}  # a whole section at its default
    if loc[0] == "trainer" and err["type"] == "extra_forbidden":  # a misspelt `model:` leaves model at dcgan28
        return bool(difflib.get_close_matches(str(loc[1]), [k for _, k in _PIVOTS], n=1))
    if loc[0] == "search":  # PBT's checks read which settings are searched
        return (data.get("sweep") or {}).get("scheduler") == "pbt" if isinstance(data.get("sweep"), dict) else False
    return loc[:2] in _PIVOTS


def _validate_all(model: type[BaseModel], data: dict, context: dict) -> tuple[Any | None, list[tuple[tuple, str]]]:
    """Validate, gathering every problem: pydantic reports all field errors at once, but skips a
    model's cross-field checks while one of its fields is wrong. So drop each wrong value (it takes
    its default) and validate again, keeping only problems not inside one already found, as long
    as no dropped value is one the cross-field checks read (`_PIVOTS`).
    Returns (the model, or the model with wrong values dropped, or None; the problems)."""
    found: list[tuple[tuple, str]] = []
    data = copy.deepcopy(data)
    for _ in range(5):  # a few rounds: field errors, then each layer of cross-field checks
        try:
            return model.model_validate(data, context=context), found
        except ValidationError as e:
            errors = e.errors()
            fresh = [(loc, msg) for loc, msg in _issues_of(e, model) if not any(_related(loc, old) for old, _ in found)]
            found += fresh
            if not fresh or model is not SweepSpec or any(_is_pivot(tuple(err["loc"]), err, data) for err in errors):
                break
            if not any([_without(data, tuple(err["loc"]), err["type"] == "missing") for err in errors]):
                break
    return None, found


def _check_text(
    text: str,
    source: str,
    overrides: list[str],
    model: type[BaseModel],
    base_dir: str | Path | None,
    packages: bool = False,
) -> SpecCheck:
    """Every problem of spec text: YAML, then `--set`, then the model's fields and cross-field checks."""
    check = SpecCheck(source, None)
    try:
        shape = _shape_problem(text)
        if shape is not None:
            check.errors.append(SpecIssue("", *shape))
            return check
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines = _line_map(node) if node is not None else {}
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = f"{e.problem}" if e.problem else str(e)
        if "python/" in str(e) or "could not determine a constructor" in str(e):
            what = "tags such as !!python/... are not allowed in a spec: " + what
        check.errors.append(SpecIssue("", line, f"not valid YAML: {what}"))
        return check
    except yaml.YAMLError as e:
        check.errors.append(SpecIssue("", None, f"not valid YAML: {e}"))
        return check
    if data is None:
        data = {}
    if not isinstance(data, dict):
        check.errors.append(
            SpecIssue(
                "",
                1,
                f"a spec is a mapping of sections ({', '.join(list(model.model_fields)[:4])}, ...), not a "
                f"{type(data).__name__}",
            )
        )
        return check
    applied, check.errors = _apply_overrides(data, overrides)
    context = {"base_dir": str(base_dir) if base_dir is not None else None}
    obj, problems = _validate_all(model, data, context)

    def place(loc: tuple, msg: str, *also: tuple) -> SpecIssue:
        """Blame the last `--set` that wrote `loc` (or one of `also`), else the file's line."""
        flag = next(
            (item for parts, item in reversed(applied) if any(where[: len(parts)] == parts for where in (loc, *also))),
            None,
        )
        return SpecIssue(".".join(map(str, loc)), None if flag else _line_for(lines, loc), msg, flag=flag)

    check.errors += [place(loc, msg) for loc, msg in sorted(problems, key=lambda p: _line_for(lines, p[0]) or 0)]
    if packages and model is SweepSpec:  # from the spec as written: checked even when it has errors
        known = " ".join(i.message for i in check.errors)  # torchvision data already says how to install it
        check.errors += [
            place(_split_path(path), msg)
            for path, extra, msg in _missing_packages(data)
            if f"ganops[{extra}]" not in known
        ]
    if check.errors:
        return check
    check.spec = obj
    if isinstance(obj, SweepSpec):
        check.warnings += [place(("search",), msg, ("sweep", "num_samples")) for msg in _warnings(obj)]
    return check


def _missing_packages(data: dict) -> list[tuple[str, str, str]]:
    """(path, extra, message) of each optional package the spec needs and this Python lacks
    (found without importing it)."""
    return [
        (
            path,
            extra,
            f"needs the Python package {module}, which is not installed here; install it with `pip install "
            f"'ganops[{extra}]'`",
        )
        for path, module, extra in optional_needs(data)
        if not _installed(module)
    ]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or an entry blocked in sys.modules
        return False


def _warnings(spec: SweepSpec) -> list[str]:
    """Valid, but probably not what was meant."""
    n = spec.trial_count
    if n > 1 and spec.trials_identical:
        what = "searches nothing" if not spec.search else "searches a single value of each setting"
        return [
            f"{what}, so its {n} trials are identical (same settings, same seed); add settings under search:, search "
            "trainer.seed, or set sweep.num_samples: 1"
        ]
    return []


def spec_from_text(
    text: str,
    source: str = "<spec>",
    overrides: list[str] | None = None,
    model: type[BaseModel] = SweepSpec,
    base_dir: str | Path | None = None,
) -> Any:
    """Validate spec text into a `SweepSpec` (or another pydantic `model`, e.g. a cluster
    profile), or raise `SpecError` with every issue found. `base_dir`: where relative plugin
    files (`trainer.model: my_gan.py:MyGan`) are found; default the working directory."""
    check = _check_text(text, source, overrides or [], model, base_dir)
    if check.errors:
        raise SpecError(source, check.errors)
    return check.spec


def read_yaml_text(path: str | Path, what: str = "spec", example: str = "search_spaces/dcgan.yaml") -> str:
    """The text of a small YAML file (`what`: a spec, a cluster profile), or SpecError saying why not."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(
            str(path), [SpecIssue("", None, f"no such file; pass the path of a {what} YAML, e.g. {example}")]
        )
    # At most one byte past the limit is read, whatever the file's size says (/proc files say 0).
    try:
        with p.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(
            str(path), [SpecIssue("", None, f"cannot be read ({e.strerror}); check its permissions")]
        ) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(
            str(path),
            [SpecIssue("", None, f"file is larger than {MAX_SPEC_BYTES:,} bytes; a {what} is a short YAML file")],
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(str(path), [SpecIssue("", None, f"not UTF-8 text; a {what} is a YAML file")]) from None


def load_profile(path: str | Path):
    """Read, safely parse and validate a cluster profile (infra/aws/cluster.ClusterProfile), or raise SpecError."""
    from infra.aws.cluster import ClusterProfile

    text = read_yaml_text(path, "cluster profile", "infra/clusters/aws-spot-gpu.yaml")
    return spec_from_text(text, str(path), model=ClusterProfile)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read, safely parse and validate a spec file (`--set key=value` overrides applied)."""
    return spec_from_text(read_yaml_text(path), str(path), overrides, base_dir=Path(path).resolve().parent)


def check_spec(path: str | Path, overrides: list[str] | None = None, packages: bool = True) -> SpecCheck:
    """Everything `ganops validate` reports about a spec file, in one run: every error (YAML,
    `--set`, fields, cross-field checks, with `packages` the optional packages it needs and this
    Python lacks) and every warning."""
    try:
        text = read_yaml_text(path)
    except SpecError as e:
        return SpecCheck(str(path), None, e.issues)
    return _check_text(text, str(path), overrides or [], SweepSpec, Path(path).resolve().parent, packages)
