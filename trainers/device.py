"""Where a trial's tensors live: the worker's device, its speed settings, and a report that
everything is on it (the placement check and GPU telemetry the loop logs).

Pure torch: the loop asks Ray for the device (`ray.train.torch.get_device()`) and passes it in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import cast

import torch
from torch import nn


def prepare(device: torch.device, tf32: bool) -> str:
    """Make `device` current (NCCL's collectives use the current CUDA device) and set TF32;
    returns a one-line description for the trial's `ganops.device` tag."""
    if device.type != "cuda":
        return f"{device} (tf32 n/a)"
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    major, minor = torch.cuda.get_device_capability(device)
    # TF32 exists from compute capability 8.0 (Ampere); the flags do nothing on older GPUs.
    state = ("on" if tf32 else "off") if major >= 8 else "n/a before sm_80"
    return f"{device} ({torch.cuda.get_device_name(device)}, sm_{major}{minor}, tf32 {state})"


def _devices(tensors: Iterable[torch.Tensor]) -> list[str]:
    return sorted({str(t.device) for t in tensors})


def optimizer_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's per-parameter state tensors, less Adam's scalar `step` counters (kept on
    the CPU by design unless capturable/fused)."""
    return [v for s in opt.state.values() for k, v in s.items() if torch.is_tensor(v) and k != "step"]


def placement(expected: torch.device, **groups: Iterable[torch.Tensor] | list[str]) -> dict:
    """{"device": expected, "groups": {name: [devices seen]}, "off_device": [names]}: each group
    (parameters, optimizer state, batches, ...) and whether it lives on `expected`.
    A group may be given as tensors or as a list of device names already."""
    seen = {k: _device_names(v) for k, v in groups.items()}
    want = _canonical(expected)
    off = sorted(k for k, devs in seen.items() if any(_canonical(torch.device(d)) != want for d in devs))
    return {"device": want, "groups": seen, "off_device": off}


def _device_names(group: Iterable[torch.Tensor] | list[str]) -> list[str]:
    items = list(group)
    if items and isinstance(items[0], str):
        return cast(list[str], items)  # device names already
    return _devices(cast(list[torch.Tensor], items))


def _canonical(d: torch.device) -> str:
    # "cuda" and "cuda:0" name the same device once set_device has run
    if d.type == "cuda" and d.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(d)


def module_tensors(*modules: nn.Module) -> list[torch.Tensor]:
    return [t for m in modules for t in [*m.parameters(), *m.buffers()]]


def telemetry(device: torch.device) -> dict[str, float]:
    """GPU memory (allocated now, peak since the last call) and, when pynvml is importable,
    utilisation; {} on a CPU."""
    if device.type != "cuda":
        return {}
    out = {
        "gpu_mem_allocated_mb": torch.cuda.memory_allocated(device) / 2**20,
        "gpu_mem_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20,
    }
    torch.cuda.reset_peak_memory_stats(device)
    try:
        # torch maps the logical device to NVML's physical one (CUDA_VISIBLE_DEVICES); needs
        # pynvml (nvidia-ml-py), which is optional.
        out["gpu_util_pct"] = float(torch.cuda.utilization(device))
    except Exception:  # no pynvml, or no NVML library: memory figures only
        pass
    return out


def report_json(report: dict) -> str:
    return json.dumps(report, sort_keys=True)
