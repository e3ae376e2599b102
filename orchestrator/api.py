"""The Python API of ganops; the CLI is a thin layer over it.

    from orchestrator.api import load_spec, run_sweep
    result = run_sweep(load_spec("search_spaces/dcgan.yaml", ["sweep.num_samples=2"]))
    print(result.best.trial_id, result.best.metrics[result.metric])

On a Ray cluster, through the Ray Jobs API:

    handle = submit(load_spec("search_spaces/dcgan.yaml"), "http://127.0.0.1:8265")
    outcome = wait(handle.job_id, handle.address)        # JobOutcome: status, result

From an image back to z (docs/latent.md), for a finished trial's run:

    train_encoder(uri, run, steps=500)                              # E from D, logged on the run
    style_transfer(uri, run, Path("digit.png"), Path("styles.png"), all_classes=True)
    attribute_vector(uri, run, Path("ones"), Path("sevens"), Path("v.npy"))
    attribute_walk(uri, run, Path("v.npy"), Path("walk.png"), scale=(-2, 2), steps=9, n=4)
"""

from orchestrator.gate import GateError
from orchestrator.gate import evaluate as check_gate
from orchestrator.gate import parse as parse_gate
from orchestrator.jobs import (
    JobError,
    JobOutcome,
    SweepHandle,
    cancel,
    logs,
    status,
    submit,
    wait,
)
from orchestrator.latent import LatentError, attribute_vector, attribute_walk, style_transfer
from orchestrator.latent import encode as train_encoder
from orchestrator.report import ReportError, report
from orchestrator.sample import sample
from orchestrator.sweep import (
    SweepError,
    SweepResult,
    TrialSummary,
    resume_sweep,
    run_sweep,
)
from search_spaces.loader import SpecError, load_spec, spec_from_text
from search_spaces.spec import SweepSpec

__all__ = [
    "GateError",
    "JobError",
    "JobOutcome",
    "LatentError",
    "ReportError",
    "SpecError",
    "SweepError",
    "SweepHandle",
    "SweepResult",
    "SweepSpec",
    "TrialSummary",
    "attribute_vector",
    "attribute_walk",
    "cancel",
    "check_gate",
    "load_spec",
    "logs",
    "parse_gate",
    "report",
    "resume_sweep",
    "run_sweep",
    "sample",
    "spec_from_text",
    "status",
    "style_transfer",
    "submit",
    "train_encoder",
    "wait",
]
