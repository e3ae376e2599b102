"""The sweep's contact sheet: rows = trials (best first, the best 32 at most), columns = eval
steps, every cell drawn from the SAME sweep-wide fixed noise, so a person compares trials at a glance.

Built from the `samples` images the trials logged to MLflow, and logged on the sweep's parent run.
"""

from __future__ import annotations

import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow.artifacts
import numpy as np
from mlflow import MlflowClient
from PIL import Image, ImageDraw

_STEP = re.compile(r"samples\+step\+(\d+)\+")
CELL = 96  # px per cell side
LABEL_W = 110  # px for the trial label column
MAX_ROWS = 32  # the best trials; past a few dozen rows a sheet is no longer read at a glance


def _trial_images(client: MlflowClient, run_id: str) -> tuple[str, dict[int, str]]:
    """The run's artifact root and step -> path of its sample grids (PNG, not the webp preview).

    Read through the run's artifact root, not `client.list_artifacts(run_id, ...)`: MLflow 3
    routes those through `runs:/`, which costs two more requests per call (a get_run and a
    logged-model search) - minutes for a few hundred trials on a tracking server."""
    root = client.get_run(run_id).info.artifact_uri
    out = {}
    for a in mlflow.artifacts.list_artifacts(artifact_uri=f"{root}/images", tracking_uri=client.tracking_uri):
        name = a.path.rsplit("/", 1)[-1]
        m = _STEP.search(name)
        if m and name.endswith(".png") and "compressed" not in name:
            out[int(m.group(1))] = f"images/{name}"
    return root, out


def trial_images(client: MlflowClient, run_id: str) -> dict[int, str]:
    """step -> artifact path (within the run) of the trial's sample grids."""
    return _trial_images(client, run_id)[1]


def _cell(path: str) -> Image.Image:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w >= 200 and h >= 200 and w == h:  # an 8x8 image grid: the top-left 4x4 digits, larger
        img = img.crop((0, 0, w // 2, h // 2))
    return img.resize((CELL, CELL), Image.Resampling.NEAREST)


def build(
    client: MlflowClient, trials: list[tuple[str, str]], max_cols: int = 12, max_rows: int = MAX_ROWS
) -> Image.Image | None:
    """`trials`: (label, run_id) best first; the first `max_rows` make the rows. None when no
    trial has logged a picture yet."""
    trials = trials[:max_rows]
    with ThreadPoolExecutor(4) as pool:  # requests to a tracking server overlap; the sheet waits on them
        per_trial = list(pool.map(lambda t: (t[0], *_trial_images(client, t[1])), trials))
    steps = sorted({s for _, _, imgs in per_trial for s in imgs})
    if not steps:
        return None
    if len(steps) > max_cols:  # keep the first and last, evenly between
        idx = np.linspace(0, len(steps) - 1, max_cols).round().astype(int)
        steps = [steps[i] for i in sorted(set(idx))]
    sheet = Image.new("RGB", (LABEL_W + CELL * len(steps), 18 + CELL * len(per_trial)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, s in enumerate(steps):
        draw.text((LABEL_W + c * CELL + 4, 3), f"step {s}", fill="black")
    cells = [
        (r, c, root, imgs[s]) for r, (_, root, imgs) in enumerate(per_trial) for c, s in enumerate(steps) if s in imgs
    ]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(4) as pool:

        def fetch(cell):
            r, c, root, path = cell
            return (
                r,
                c,
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{root}/{path}",
                    dst_path=str(Path(tmp) / f"{r}-{c}"),
                    tracking_uri=client.tracking_uri,
                ),
            )

        for r, c, local in pool.map(fetch, cells):
            sheet.paste(_cell(local), (LABEL_W + c * CELL, 18 + r * CELL))
    for r, (label, _, _) in enumerate(per_trial):
        draw.text((4, 18 + r * CELL + CELL // 2 - 6), label, fill="black")
    return sheet


def log_contact_sheet(client: MlflowClient, parent_run_id: str, trials: list[tuple[str, str]]) -> bool:
    sheet = build(client, trials)
    if sheet is None:
        return False
    client.log_image(parent_run_id, sheet, "contact_sheet.png")
    return True
