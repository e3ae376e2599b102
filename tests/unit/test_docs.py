"""The docs stay true: README is a front page, its spec is the shipped one, its commands exist,
every relative link lands, and docs/spec.md is what the pydantic models render today."""

from __future__ import annotations

import re
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SHIPPED_SPEC = ROOT / "search_spaces" / "dcgan.yaml"

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _code(text: str) -> list[str]:
    """Fenced blocks and inline code spans of a markdown text."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    return blocks + re.findall(r"`([^`\n]+)`", prose)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def _cli() -> dict[str, dict[str, set[str]]]:
    """Top-level command name -> {subcommand name ("" for the command itself) -> its option flags}."""
    from orchestrator.cli import app

    def flags(cmd) -> set[str]:
        return {o for p in cmd.params for o in [*p.opts, *p.secondary_opts]} | {"--help"}

    group = typer.main.get_command(app)
    out = {"--": {"": flags(group)}}  # the top level's own options: --version, --install-completion
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None) or {}
        out[name] = {"": flags(cmd), **{sub: flags(c) for sub, c in subs.items()}}
    return out


GANOPS = re.compile(
    r"(?:^|[\s(`;&|])ganops ((?:[a-z][\w-]*)(?:\|[a-z][\w-]*)*)(?: ((?:[a-z][\w-]*)(?:\|[a-z][\w-]*)*))?([^\n#`]*)",
    re.M,
)


def _command_problems(page: Path) -> list[str]:
    """`ganops <command> [<sub>] [--flags]` in a page's code that the CLI does not have."""
    cli, problems = _cli(), []
    for code in _code(page.read_text()):
        for flag in re.findall(r"(?:^|[\s(`;&|])ganops (--[a-z][\w-]*)", code, re.M):
            if flag not in cli["--"][""]:
                problems.append(f"`ganops {flag}` (no such option)")
        for m in GANOPS.finditer(code):
            for name in m.group(1).split("|"):
                if name not in cli:
                    problems.append(f"`ganops {name}` (commands: {', '.join(sorted(c for c in cli if c != '--'))})")
                    continue
                subs = [s for s in cli[name] if s]
                targets = [""]
                if subs and m.group(2):
                    targets = m.group(2).split("|")
                    problems += [
                        f"`ganops {name} {t}` (subcommands: {', '.join(sorted(subs))})"
                        for t in targets
                        if t not in cli[name]
                    ]
                for target in (t for t in targets if t in cli[name]):
                    rest = (m.group(2) or "") + (m.group(3) or "") if not subs else m.group(3) or ""
                    for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest):
                        if flag not in cli[name][target]:
                            problems.append(f"`ganops {name}{' ' + target if target else ''} {flag}` (no such option)")
    return [f"{page.relative_to(ROOT)}: {p}" for p in problems]


def test_readme_is_a_front_page():
    """README.md is at most 200 lines; the rest lives in docs/."""
    lines = README.read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; keep it a front page of <= 200 and move detail to a docs/ page"


def test_readme_states_python_version():
    """A newcomer reads which Python ganops needs."""
    assert "Python 3.11" in README.read_text(), "README.md must state the Python version (Python 3.11)"


def test_readme_spec_is_the_shipped_dcgan_yaml():
    """The README's spec block is search_spaces/dcgan.yaml (all of it, or its first lines) verbatim, its
    editor modeline optional."""
    text = README.read_text()
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)
    assert blocks, "README.md has no ```yaml block; quote search_spaces/dcgan.yaml in it"
    block = blocks[0].rstrip("\n").split("\n")
    shipped = SHIPPED_SPEC.read_text().rstrip("\n").split("\n")
    if block[0] != shipped[0]:  # the editor modeline (# yaml-language-server: $schema=...) may be left out
        shipped = [line for line in shipped if not line.startswith("# yaml-language-server:")]
    assert len(block) >= 5, "README.md's spec block is too short to show a spec; quote search_spaces/dcgan.yaml"
    assert block == shipped[: len(block)], (
        "README.md's first ```yaml block differs from search_spaces/dcgan.yaml; paste the file (or its first lines) "
        "verbatim:\n" + "\n".join(f"  README: {a!r}\n  file:   {b!r}" for a, b in zip(block, shipped) if a != b)[:2000]
    )


def test_readme_test_command_is_what_ci_runs():
    """The README's command that sets up and runs the tests is the one .ci/run runs."""
    blocks = FENCE.findall(README.read_text())
    test_cmds = [line for b in blocks for line in b.splitlines() if "pytest" in line and "pip install" in line]
    assert test_cmds, "README.md has no command that sets up and runs the tests (pip install ... && python -m pytest)"
    ci = (ROOT / ".ci" / "run").read_text()
    for cmd in test_cmds:
        assert cmd.strip() in ci, (
            f"README.md's test command {cmd.strip()!r} is not what .ci/run runs; make them the same"
        )


def test_documented_commands_exist_in_the_cli():
    """Every `ganops <command>` (and `ganops cluster <sub>`) with its flags that README.md or a docs/ page
    names is real."""
    problems = [p for page in [README, *DOCS] for p in _command_problems(page)]
    assert not problems, "the docs name commands or options the CLI does not have; fix or remove them:\n" + "\n".join(
        problems
    )


def test_relative_links_land():
    """Every relative link in README.md and docs/*.md points at a file that exists (and a heading, with #)."""
    broken = []
    for page in [README, *DOCS]:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            if not dest.exists():
                shown = dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest
                broken.append(f"{page.relative_to(ROOT)}: {target} (no file {shown})")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, "broken links; fix the target or the heading:\n" + "\n".join(broken)


def test_spec_reference_is_current():
    """docs/spec.md is what search_spaces.reference renders from the models today."""
    from search_spaces.reference import COMMAND, render

    on_disk = (ROOT / "docs" / "spec.md").read_text()
    assert on_disk == render(), f"docs/spec.md is stale (a spec field or description changed); regenerate it: {COMMAND}"


def test_spec_reference_has_a_table_per_section():
    """The reference covers every top-level section of the spec, with a row per field."""
    from search_spaces.reference import render
    from search_spaces.spec import SweepSpec

    text = render()
    for section in ("trainer", "sweep", "resources", "stopping", "tracking", "metrics", "budget"):
        assert f"\n## {section}\n" in text, f"no table for {section}"
    for name in SweepSpec.model_fields:
        assert f"| `{name}` |" in text
    assert "| `lr_g` | float | `0.0002` |" in text
