"""bench/gpu_check.py on a machine without CUDA: it says so, writes its JSON and exits 0."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check")
def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    """No CUDA: one line saying there is nothing to check and how to run it, `cuda: false` in the JSON, exit 0."""
    out = tmp_path / "gpu.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "no CUDA GPU visible" in r.stdout and "--cpu-smoke" in r.stdout
    assert json.loads(out.read_text())["cuda"] is False
