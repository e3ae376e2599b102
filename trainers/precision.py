"""Mixed precision for a GAN: autocast for the forward passes, and under fp16 one GradScaler per
network, so an overflow in D's backward skips D's step and never G's (and the other way round).

fp32 is the identity: no autocast, no scaler, so CPU runs stay bit-identical to a plain loop.
No Ray, MLflow or boto3 here (trainers/step.py imports it).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SCALE_FLOOR = 1.0  # an fp16 scale under this means the gradients overflow even unscaled: divergence


@dataclass
class Precision:
    """The autocast settings of one trial and, for fp16, each network's loss scaler."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None  # None: fp32, autocast off
    scaler_d: torch.amp.GradScaler | None = None
    scaler_g: torch.amp.GradScaler | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self, net: str) -> torch.amp.GradScaler | None:
        return self.scaler_d if net == "d" else self.scaler_g

    def scale(self, loss: Tensor, net: str) -> Tensor:
        s = self.scaler(net)
        return loss if s is None else s.scale(loss)

    def unscale(self, opt: torch.optim.Optimizer, net: str) -> None:
        s = self.scaler(net)
        if s is not None:
            s.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer, net: str) -> bool:
        """Apply the network's update; False when fp16 skipped it (inf/NaN in its scaled gradients)."""
        s = self.scaler(net)
        if s is None:
            opt.step()
            return True
        before = s.get_scale()
        s.step(opt)
        s.update()
        return s.get_scale() >= before  # the scale drops exactly when the step was skipped

    def gp_scale(self, net: str = "d") -> float:
        """The factor a gradient penalty's inner autograd.grad must undo (PyTorch AMP recipe)."""
        s = self.scaler(net)
        return 1.0 if s is None else float(s.get_scale())

    def state_dict(self) -> dict[str, Any]:
        return {k: s.state_dict() for k, s in (("d", self.scaler_d), ("g", self.scaler_g)) if s is not None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, s in (("d", self.scaler_d), ("g", self.scaler_g)):
            if s is not None and k in state:
                s.load_state_dict(state[k])


FP32 = Precision()


def build_precision(precision: str, device: torch.device | str) -> Precision:
    """`precision` (fp32 | bf16 | fp16) on `device`."""
    device_type = torch.device(device).type
    dtype = DTYPES[precision]
    if dtype is None:
        return Precision(device_type)
    scalers = (
        (torch.amp.GradScaler(device_type), torch.amp.GradScaler(device_type))
        if dtype is torch.float16
        else (None, None)
    )
    return Precision(device_type, dtype, *scalers)
