"""The spec's JSON Schema for editors: shipped current, no stricter than the loader, named by every shipped spec."""

import json
import os
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import pytest
import yaml

from search_spaces import schema as schema_module
from search_spaces.loader import load_spec
from search_spaces.spec import json_schema

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "search_spaces" / "ganops.schema.json"
SHIPPED = sorted(
    [
        *(REPO / "search_spaces").glob("*.yaml"),
        *(REPO / "examples").rglob("*.yaml"),
        *(REPO / "bench" / "specs").glob("*.yaml"),
    ]
)


def _validator():
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_shipped_schema_is_current():
    """search_spaces/ganops.schema.json is what the pydantic models generate today."""
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_module.render(), (
        f"{SCHEMA_FILE.relative_to(REPO)} is stale (a spec field or its description changed); "
        f"regenerate it with `{schema_module.REGENERATE}` and commit it"
    )


def test_schema_names_its_draft_and_describes_every_field():
    """Editors need the draft, a title, and a description on every field (their hover text)."""
    s = json_schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema" and s["title"]

    def described(prop: dict) -> bool:  # pydantic leaves out a field's description that repeats its model's docstring
        ref = prop.get("$ref", "").removeprefix("#/$defs/")
        return bool(prop.get("description") or (ref and s["$defs"][ref].get("description")))

    missing = [
        f"{name}.{key}"
        for name, d in [("SweepSpec", s), *s["$defs"].items()]
        for key, prop in d.get("properties", {}).items()
        if not described(prop)
    ]
    assert not missing, f"add Field(description=...) to: {', '.join(missing)}"


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
def test_every_shipped_spec_names_the_schema_validates_against_it_and_loads(path, monkeypatch):
    """Each shipped YAML starts with the yaml-language-server header pointing at the shipped
    schema, is valid under that schema, and loads with load_spec (the schema must not refuse
    what the loader takes, e.g. a plugin's own trainer keys)."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema="), (
        f"{path}: add the header line `# yaml-language-server: $schema=...`"
    )
    target = (path.parent / first.split("$schema=", 1)[1].strip()).resolve()
    assert target == SCHEMA_FILE, f"{path}: the header points at {target}, not {SCHEMA_FILE}"
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator().iter_errors(yaml.safe_load(path.read_text(encoding="utf-8")))
    ]
    assert not errors, errors
    overrides = []
    if path.name == "sngan.yaml" and not entry_points(group="ganops.models", name="sngan"):
        # The example names its installed entry point; uninstalled, the same class by module path.
        monkeypatch.syspath_prepend(str(path.parent))
        overrides = ["trainer.model=sngan_hinge.model:SNGan"]
    monkeypatch.chdir(REPO)
    load_spec(path, overrides)


@pytest.mark.parametrize(
    "text, ok",
    [
        ("name: t\ntrainer: {model: tiny.py:Tiny, hidden: 8}\n", True),  # a plugin's own key
        ("name: t\ntrainer: {model: dcgan28, hidden: 8}\n", False),  # a built-in model has no such key
        ("name: t\ntrainer: {lr_gg: 0.1}\n", False),  # model absent = dcgan28
        (
            "name: t\nsearch: {lr_d: {loguniform: [1.0e-4, 1.0e-3]}}\nstopping: {plateau: {patience: 2}, d_fooled: "
            "null}\n",
            True,
        ),
        ("name: t\nsweep: {num_sampels: 3}\n", False),
    ],
)
def test_schema_refuses_unknown_keys_except_a_plugins(text, ok):
    """Misspellings are flagged in the editor; a plugin model's extra trainer keys are not."""
    assert not list(_validator().iter_errors(yaml.safe_load(text))) == (not ok)


def test_schema_module_check_fails_on_a_stale_copy(tmp_path, monkeypatch, capsys):
    """`python -m search_spaces.schema --check` exits 1 with the command that regenerates it."""
    stale = tmp_path / "ganops.schema.json"
    stale.write_text("{}\n")
    monkeypatch.setattr(schema_module, "SCHEMA_FILE", stale)
    assert schema_module.main(["--check"]) == 1 and schema_module.REGENERATE in capsys.readouterr().err
    assert schema_module.main([]) == 0 and schema_module.main(["--check"]) == 0
    assert os.path.getsize(stale) > 1000
