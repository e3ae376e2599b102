"""The Python API of ganops; the CLI is a thin layer over it.

    from orchestrator.api import load_spec, run_sweep
    result = run_sweep(load_spec("search_spaces/dcgan.yaml", ["sweep.num_samples=2"]))
    print(result.best.trial_id, result.best.metrics[result.metric])
"""

from orchestrator.report import ReportError, report
from orchestrator.gate import GateError, evaluate as check_gate, parse as parse_gate
from orchestrator.sample import sample
from orchestrator.sweep import SweepResult, TrialSummary, run_sweep
from search_spaces.loader import SpecError, load_spec, spec_from_text
from search_spaces.spec import SweepSpec

__all__ = ["GateError", "check_gate", "parse_gate", "ReportError", "SpecError", "SweepResult", "SweepSpec", "TrialSummary", "load_spec", "report", "run_sweep", "sample", "spec_from_text"]
