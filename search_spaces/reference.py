"""The spec reference (docs/spec.md), rendered from the pydantic models' field descriptions.

One table per section of the YAML (trainer, search, sweep, resources, stopping, tracking,
metrics, budget, and the models nested in them), so the page says what the models say and a
test can tell when it is stale. Regenerate with `python -m search_spaces.reference > docs/spec.md`.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from search_spaces.spec import SweepSpec

COMMAND = "python -m search_spaces.reference > docs/spec.md"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds: `Asha`, `Budget | None`, `dict[str, Distribution]`."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _type(annotation: Any) -> str:
    """A YAML reader's name for a type: `int`, `"fifo" | "asha"`, `float | null`, `{name: Distribution}`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if origin is list:
        return f"list[{_type(args[0])}]"
    if origin is tuple:
        return "[" + ", ".join(_type(a) for a in args) + "]"
    if origin is dict:
        return f"{{name: {_type(args[1])}}}"
    if annotation is Any:
        return "any"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "mapping"  # its own section says what it holds
    if inspect.isclass(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        made = field.default_factory()  # type: ignore[call-arg]
        return "its fields' defaults" if isinstance(made, BaseModel) else f"`{made!r}`"
    if field.default is PydanticUndefined:
        return "required"
    value = field.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """One line of a markdown table cell: pipes escaped, whitespace collapsed."""
    return " ".join(text.split()).replace("|", "\\|")


def _subpath(path: str, name: str, field: FieldInfo) -> str:
    """YAML path of a nested field's section: `sweep.asha`, `search.<name>` for a mapping of models."""
    sub = f"{path}.{name}" if path else name
    return sub + ".<name>" if typing.get_origin(field.annotation) is dict else sub


def _sections(model: type[BaseModel], path: str) -> list[tuple[str, type[BaseModel]]]:
    """(YAML path, model) of a model and of every model nested under it, in field order."""
    found = [(path, model)]
    for name, field in model.model_fields.items():
        for nested in _models_in(field.annotation):
            found += _sections(nested, _subpath(path, name, field))
    return found


def _table(path: str, model: type[BaseModel]) -> str:
    title = path or "top level"
    lines = [f"## {title}", ""]
    doc = inspect.getdoc(model)
    if doc and model.__doc__:
        lines += [" ".join(doc.split("\n\n")[0].split()), ""]
    if not model.model_fields:
        lines += ["No settings: present (`{}`) turns it on, `null` turns it off.", ""]
        return "\n".join(lines)
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        desc = field.description or ""
        if _models_in(field.annotation):
            desc = f"{desc} Fields: `{_subpath(path, name, field)}` below.".strip()
        lines.append(f"| `{name}` | {_cell(_type(field.annotation))} | {_cell(_default(field))} | {_cell(desc)} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """docs/spec.md: one markdown table per spec section (field, type, default, description)."""
    head = [
        "# Spec reference",
        "",
        f"<!-- Generated from the pydantic models by `{COMMAND}`; do not edit by hand. -->",
        "",
        "Every field a sweep spec (`search_spaces/*.yaml`) takes, from the models in",
        "`search_spaces/spec.py` and `trainers/config.py`. Unknown keys are refused. A dotted",
        "heading is a nested mapping: `sweep.asha` is `asha:` under `sweep:`. Any `trainer` field",
        "can be searched under `search:` with one distribution each (`search.<name>`).",
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(_table(path, model) for path, model in _sections(SweepSpec, ""))


if __name__ == "__main__":
    print(render(), end="")
