"""Small pieces shared by the T5 encoder and the decoder LM."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply the activation transformers calls ``name`` (see ``config.ACTIVATIONS``)."""
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return F.gelu(x, approximate="tanh")
    if name == "silu":
        return F.silu(x)
    raise ValueError(f"unknown activation {name!r}")
