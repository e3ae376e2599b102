"""`ganops report`: a real sweep (real Ray, real MLflow) and a running one, rendered and opened in headless Chromium."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from PIL import Image
from typer.testing import CliRunner

from orchestrator import tracking
from orchestrator.api import run_sweep, spec_from_text
from orchestrator.cli import app
from trainers.metrics import image_grid

pytestmark = pytest.mark.integration


TINY_DCGAN = """
name: tiny-dcgan
trainer: {model: dcgan28, data: mnist, steps: 6, eval_every: 2, batch_size: 16, width: 8, eval_samples: 200}
search:
  lr_g: {loguniform: [1.0e-4, 1.0e-3]}
  real_label: {choice: [0.9, 1.0]}
sweep: {num_samples: 2, seed: 1}
stopping: {mode_collapse: null}  # 6 iterations: a fresh G draws one class
"""

# Added to a COPY of the report by the test (the report itself carries no script): once the
# page has loaded, it writes what the browser shows into the DOM, which --dump-dom returns.
PROBE = """<script>addEventListener('load', () => {
  const imgs = [...document.images];
  const out = {
    sections: [...document.querySelectorAll('section')].map(s => [s.id, s.querySelector('h2').textContent]),
    trials: document.querySelectorAll('article.trial').length,
    curves: document.querySelectorAll('figure.curves svg').length,
    curve_lines: [...document.querySelectorAll('figure.curves svg')].map(s => s.querySelectorAll('path').length),
    overview: document.querySelectorAll('figure.overview svg').length,
    samples: document.querySelectorAll('figure.samples img').length,
    contact_sheet: document.querySelectorAll('img.contact-sheet').length,
    images: imgs.map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]),
    leaderboard_rows: document.querySelectorAll('#leaderboard tbody tr').length,
    running: document.querySelectorAll('.running').length,
  };
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.append(pre);
});</script>"""


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium. `.ci/run` installs it (`.ci/setup-chromium`); no test installs system packages.

    In CI (`CI=true`) a missing browser fails the test, so the report is never passed unseen.
    """
    exe = shutil.which("chromium")
    if exe is None:
        msg = "chromium is not installed: run .ci/setup-chromium (it installs Debian's chromium and a font)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg + "; CI=true, so this test may not skip")
        pytest.skip(msg)
    return exe


def browse(chromium: str, page: Path, tmp: Path) -> tuple[dict, Path]:
    """Open the page in headless Chromium: what its DOM shows once loaded, and a screenshot."""
    probed = tmp / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    base = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ]
    dom = subprocess.run([*base, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert m, f"the probe did not run; chromium exit {dom.returncode}: {dom.stderr[-1000:]}"
    shot = tmp / f"{page.stem}.png"
    r = subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), f"no screenshot; chromium exit {r.returncode}: {r.stderr[-1000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")), shot


def assert_self_contained(page: str) -> None:
    """Nothing fetched from anywhere: every src/href is a data: URI or an in-page #anchor."""
    assert "<script" not in page and "<link" not in page and "@import" not in page
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [
        r[:60] for r in refs if not r.startswith(("data:", "#"))
    ]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_report_of_a_finished_sweep_shows_leaderboard_contact_sheet_curves_and_samples(
    local_ray, ganops_home, chromium, tmp_path
):
    """A finished sweep's page has its leaderboard, contact sheet, every trial's curves and newest samples,
    all of which a browser renders."""
    result = run_sweep(spec_from_text(TINY_DCGAN), spec_text=TINY_DCGAN)
    assert len(result.trials) == 2 and all(t.status == "done" for t in result.trials)

    r = CliRunner().invoke(app, ["report", result.sweep_id, "--out", "out/report.html", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    page = Path(info["path"])
    assert info["trials"] == 2 and page == (tmp_path / "out" / "report.html").resolve()
    text = page.read_text(encoding="utf-8")
    assert_self_contained(text)
    for t in result.trials:
        assert t.trial_id in text
    assert "samples at step 6" in text  # the newest grid, not the first

    seen, shot = browse(chromium, page, tmp_path)
    assert [s[0] for s in seen["sections"]] == ["leaderboard", "contact-sheet", "overview", "trials"]
    assert seen["trials"] == 2 and seen["curves"] == 2 and seen["overview"] == 1
    assert all(n > 20 for n in seen["curve_lines"]), seen["curve_lines"]  # drawn lines, not empty axes
    assert seen["samples"] == 2 and seen["contact_sheet"] == 1 and seen["leaderboard_rows"] == 2
    assert len(seen["images"]) == 3 and all(done and w > 0 and h > 0 for _, done, w, h in seen["images"]), seen[
        "images"
    ]
    assert seen["running"] == 0
    pic = np.asarray(Image.open(shot).convert("L"))
    assert pic.std() > 10, "the screenshot is blank"

    # The parent's MLflow run id names the same sweep.
    r = CliRunner().invoke(app, ["report", result.parent_run_id, "--out", "by-run-id.html", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["trials"] == 2, r.output


def make_running_sweep() -> tuple[str, str]:
    """The MLflow state of a sweep mid-run, written by the same tracking functions a sweep uses:
    one trial past two evals (metrics and sample grids as trainers/loop.py logs them), one just started."""
    spec = spec_from_text(TINY_DCGAN)
    uri = tracking.resolve_tracking_uri(None)
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(client, spec.name, uri)
    sweep_id = "tiny-dcgan-20260101-000000"
    parent = tracking.start_sweep_run(
        client, exp, sweep_id, spec.model_dump(mode="json"), spec.spec_hash, TINY_DCGAN, None, spec.metric, spec.mode
    )
    cfg = spec.trainer.model_dump()
    busy = tracking.trial_run(
        client,
        exp,
        parent,
        sweep_id,
        "aaaa1_00000",
        "trial_0",
        spec.spec_hash,
        {**cfg, "lr_g": 3e-4},
        {"lr_g": 3e-4, "real_label": 0.9},
    )
    tracking.trial_run(
        client,
        exp,
        parent,
        sweep_id,
        "aaaa1_00001",
        "trial_1",
        spec.spec_hash,
        {**cfg, "lr_g": 5e-4},
        {"lr_g": 5e-4, "real_label": 1.0},
    )
    gen = torch.Generator().manual_seed(0)
    for step, (ld, lg, fid) in {2: (1.2, 0.9, 300.0), 4: (1.35, 0.75, 240.0)}.items():
        values = {
            "loss_d": ld,
            "loss_g": lg,
            "d_x": 0.6,
            "d_g_z": 0.45,
            "grad_norm_d": 3.0,
            "grad_norm_g": 2.0,
            "fid": fid,
            "step": step,
        }
        client.log_batch(busy, metrics=[Metric(k, v, 0, step) for k, v in values.items()])
        client.log_image(
            busy, image_grid(torch.rand(16, 1, 28, 28, generator=gen) * 2 - 1, nrow=4), key="samples", step=step
        )
    return sweep_id, parent


def test_report_of_a_running_sweep_says_what_is_missing_and_shows_what_is_there(ganops_home, chromium, tmp_path):
    """While a sweep runs (no leaderboard or contact sheet yet) the page says so and shows the trials'
    curves and samples so far."""
    sweep_id, parent = make_running_sweep()
    r = CliRunner().invoke(app, ["report", sweep_id, "--out", "running.html", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["trials"] == 2 and info["status"] == "RUNNING"
    text = Path(info["path"]).read_text(encoding="utf-8")
    assert_self_contained(text)
    assert "No leaderboard yet: the sweep is still running" in text
    assert "No contact sheet yet: the sweep draws it when its first trial ends" in text
    assert "samples at step 4" in text and "no samples yet" in text

    seen, _ = browse(chromium, Path(info["path"]), tmp_path)
    assert seen["running"] == 1 and seen["trials"] == 2 and seen["curves"] == 2
    assert seen["samples"] == 1 and seen["contact_sheet"] == 0
    assert seen["leaderboard_rows"] == 2  # the live standings from MLflow
    assert len(seen["images"]) == 1 and seen["images"][0][2] > 0


def test_report_of_an_unknown_sweep_exits_2_with_what_to_pass(ganops_home):
    """A sweep id that names nothing is a usage error that says what to pass; no file is written."""
    r = CliRunner().invoke(app, ["report", "no-such-sweep", "--out", "x.html", "--json"])
    assert r.exit_code == 2
    assert "no sweep 'no-such-sweep'" in r.stderr and "sweep id" in r.stderr
    assert r.stdout == "" and not Path("x.html").exists()
