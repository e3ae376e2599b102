"""The sweep's contact sheet: rows = trials (best first), columns = eval steps, every cell drawn
from the SAME sweep-wide fixed noise, so a person compares trials at a glance.

Built from the `samples` images the trials logged to MLflow, and logged on the sweep's parent run.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from PIL import Image, ImageDraw

_STEP = re.compile(r"samples\+step\+(\d+)\+")
CELL = 96  # px per cell side
LABEL_W = 110  # px for the trial label column


def trial_images(client: MlflowClient, run_id: str) -> dict[int, str]:
    """step -> artifact path of the trial's sample grid (PNG, not the webp preview)."""
    out = {}
    for a in client.list_artifacts(run_id, "images"):
        m = _STEP.search(a.path)
        if m and a.path.endswith(".png") and "compressed" not in a.path:
            out[int(m.group(1))] = a.path
    return out


def _cell(path: str) -> Image.Image:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w >= 200 and h >= 200 and w == h:  # an 8x8 image grid: the top-left 4x4 digits, larger
        img = img.crop((0, 0, w // 2, h // 2))
    return img.resize((CELL, CELL), Image.NEAREST)


def build(client: MlflowClient, trials: list[tuple[str, str]], max_cols: int = 12) -> Image.Image | None:
    """`trials`: (label, run_id) best first. None when no trial has logged a picture yet."""
    per_trial = [(label, run_id, trial_images(client, run_id)) for label, run_id in trials]
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
    with tempfile.TemporaryDirectory() as tmp:
        for r, (label, run_id, imgs) in enumerate(per_trial):
            y = 18 + r * CELL
            draw.text((4, y + CELL // 2 - 6), label, fill="black")
            for c, s in enumerate(steps):
                if s in imgs:
                    local = client.download_artifacts(run_id, imgs[s], dst_path=str(Path(tmp) / run_id))
                    sheet.paste(_cell(local), (LABEL_W + c * CELL, y))
    return sheet


def log_contact_sheet(client: MlflowClient, parent_run_id: str, trials: list[tuple[str, str]]) -> bool:
    sheet = build(client, trials)
    if sheet is None:
        return False
    client.log_image(parent_run_id, sheet, "contact_sheet.png")
    return True
