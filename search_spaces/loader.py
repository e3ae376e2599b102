"""Load a spec file safely and turn every mistake into a message a person can act on.

A message names the file, the line, the field path and what is allowed, e.g.
`dcgan.yaml:12 trainer.lr_g: Input should be greater than 0`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from search_spaces.spec import SweepSpec

MAX_SPEC_BYTES = 1_000_000
_PATH_IN_MSG = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.S)


@dataclass(frozen=True)
class SpecIssue:
    path: str  # dotted field path, "" for the whole file
    line: int | None
    message: str


class SpecError(Exception):
    """A spec that cannot run. Carries every issue found, each with its place in the file."""

    def __init__(self, source: str, issues: list[SpecIssue]):
        self.source = source
        self.issues = issues
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for i in self.issues:
            where = f"{self.source}:{i.line}" if i.line else self.source
            field = f" {i.path}:" if i.path else ""
            lines.append(f"{where}{field} {i.message}")
        return "\n".join(lines)


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None, seen: set | None = None) -> dict[tuple, int]:
    """Map each field path to its 1-based line; refuse anchors/aliases (no billion-laughs)."""
    out = {} if out is None else out
    seen = set() if seen is None else seen
    if id(node) in seen:
        line = out.get(path, node.start_mark.line + 1)
        raise SpecError("", [SpecIssue(".".join(map(str, path)), line, "YAML anchors and aliases (&name, *name) are not supported; write the value out")])
    seen.add(id(node))
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out, seen)
    return out


def _line_for(lines: dict[tuple, int], loc: tuple) -> int | None:
    for n in range(len(loc), -1, -1):
        if tuple(loc[:n]) in lines:
            return lines[tuple(loc[:n])]
    return None


def parse_override(item: str) -> tuple[list[str], Any]:
    """`trainer.steps=200` -> (["trainer", "steps"], 200); the value is parsed as YAML."""
    if "=" not in item:
        raise SpecError("--set", [SpecIssue("", None, f"{item!r} must look like key.path=value, e.g. trainer.steps=200")])
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError("--set", [SpecIssue("", None, f"{item!r} has an empty key")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise SpecError("--set", [SpecIssue(".".join(parts), None, f"value {raw!r} is not valid YAML: {e}")]) from None
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for depth, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                where = ".".join(parts[: depth + 1])
                raise SpecError("--set", [SpecIssue(where, None, f"is a value, not a section: cannot set {'.'.join(parts)}")])
            node = nxt
        node[parts[-1]] = value
    return data


def _friendly(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key; check its spelling (see `ganops validate --help` for the schema)"
    if err["type"] == "missing":
        return "required; add it to the spec"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def spec_from_text(text: str, source: str = "<spec>", overrides: list[str] | None = None, model: type[BaseModel] = SweepSpec, base_dir: str | Path | None = None) -> Any:
    """Validate spec text into a `SweepSpec` (or another pydantic `model`, e.g. a cluster
    profile), or raise `SpecError` with every issue found. `base_dir`: where relative plugin
    files (`trainer.model: my_gan.py:MyGan`) are found; default the working directory."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines = _line_map(node) if node is not None else {}
        data = yaml.safe_load(text)
    except SpecError as e:
        raise SpecError(source, e.issues) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = f"{e.problem}" if e.problem else str(e)
        if "python/" in str(e) or "could not determine a constructor" in str(e):
            what = "tags such as !!python/... are not allowed in a spec: " + what
        raise SpecError(source, [SpecIssue("", line, f"not valid YAML: {what}")]) from None
    except yaml.YAMLError as e:
        raise SpecError(source, [SpecIssue("", None, f"not valid YAML: {e}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(source, [SpecIssue("", 1, f"a spec is a mapping of sections ({', '.join(list(model.model_fields)[:4])}, ...), not a {type(data).__name__}")])
    data = apply_overrides(data, overrides or [])
    try:
        return model.model_validate(data, context={"base_dir": str(base_dir) if base_dir is not None else None})
    except ValidationError as e:
        issues = []
        for err in e.errors():
            loc = tuple(err["loc"])
            m = _PATH_IN_MSG.match(_friendly(err))
            if not loc and m:  # cross-field errors name their path in the message
                loc = tuple(int(x) if x.isdigit() else x for x in m.group(1).split("."))
                err = {**err, "msg": m.group(2)}
            issues.append(SpecIssue(".".join(map(str, loc)), _line_for(lines, loc), _friendly(err)))
        raise SpecError(source, issues) from None


def read_yaml_text(path: str | Path, what: str = "spec", example: str = "search_spaces/dcgan.yaml") -> str:
    """The text of a small YAML file (`what`: a spec, a cluster profile), or SpecError saying why not."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(str(path), [SpecIssue("", None, f"no such file; pass the path of a {what} YAML, e.g. {example}")])
    if p.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(str(path), [SpecIssue("", None, f"file is larger than {MAX_SPEC_BYTES:,} bytes; a {what} is a short YAML file")])
    try:
        return p.read_text(encoding="utf-8")
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
