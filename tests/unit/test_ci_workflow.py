"""The GitHub Actions workflow in docs/ stays true: valid YAML, and each `ganops sweep` /
`ganops submit` it runs names a shipped spec whose overrides and quality gate ganops accepts."""

import shlex
from pathlib import Path

import yaml

from orchestrator import gate
from search_spaces.loader import load_spec

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "docs" / "github-actions-ganops.yml"


def _ganops_commands():
    wf = yaml.safe_load(WORKFLOW.read_text())
    for job in wf["jobs"].values():
        for step in job["steps"]:
            text = step.get("run", "").replace("\\\n", " ")
            for line in text.splitlines():
                words = shlex.split(line)
                if words[:1] == ["ganops"] and words[1] in ("sweep", "submit"):
                    yield words


def test_workflow_runs_on_pull_requests_with_both_jobs():
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in wf[True]  # YAML 1.1 reads the key `on` as True
    assert set(wf["jobs"]) == {"smoke", "cluster"}


def test_every_ganops_command_in_the_workflow_is_valid():
    commands = list(_ganops_commands())
    assert {c[1] for c in commands} == {"sweep", "submit"}
    for words in commands:
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        requires = [words[i + 1] for i, w in enumerate(words) if w == "--require"]
        spec = load_spec(REPO / words[2], sets)  # raises SpecError on a bad spec or override
        assert requires and gate.parse(requires, spec)
