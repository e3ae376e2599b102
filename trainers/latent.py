"""Walking the latent space: spherical interpolation between two latents.

A normal z in many dimensions lives near the sphere of radius sqrt(latent_dim); the straight
line between two such points cuts through the low-density interior (its midpoint has ~0.71
of their norm for orthogonal ones), where G saw no training input. slerp follows the great
circle instead (Shoemake 1985; White 2016, "Sampling Generative Networks").
"""

from __future__ import annotations

import torch
from torch import Tensor


def slerp(a: Tensor, b: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation from `a` (t = 0) to `b` (t = 1), both (D,); `t` (T,) -> (T, D).

    The direction follows the great circle between a's and b's; the norm goes linearly from
    |a| to |b| (so it is preserved when they are equal). Where no single great circle exists
    (a zero vector, a and b parallel or opposite to within `eps` rad) it is a straight line."""
    a, b = a.double().flatten(), b.double().flatten()
    t = t.double().reshape(-1, 1)  # (T, 1)
    na, nb = a.norm(), b.norm()
    if na < eps or nb < eps:
        return ((1 - t) * a + t * b).float()
    ua, ub = a / na, b / nb
    omega = torch.arccos((ua @ ub).clamp(-1.0, 1.0))
    if omega < eps or torch.pi - omega < eps:
        return ((1 - t) * a + t * b).float()
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so  # (T, D) unit vectors
    return (direction * ((1 - t) * na + t * nb)).float()
