"""CPU execution of the networks' steps in a reduced precision (torch ops, explicit dtypes).

``exact`` on CPU runs the modules themselves (the reference's arithmetic); this runner is the
``fp16`` and ``bf16`` path: 16-bit weights and activations, convolutions through oneDNN's 16-bit
kernels (products summed in float32, outputs rounded to 16 bits), GroupNorm and the LSTM in float32.
Every operation works on each batch item independently.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from fastencodec.kernels.plan import ConvStep, ConvTransposeStep, LSTMStep, Step
from fastencodec.nn.layers import pad1d


class WeightCache:
    """Derived copies of parameters (another dtype or layout), remade when a parameter changes in place."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self._copies: dict[tuple[int, str], tuple[int, torch.Tensor, torch.Tensor]] = {}

    def get(self, param: torch.Tensor, layout: str = "same", make=None) -> torch.Tensor:
        """``param`` in this cache's dtype, contiguous; ``make(param)`` first transforms it
        (``layout`` names the transform)."""
        key = (id(param), layout)
        entry = self._copies.get(key)
        if entry is None or entry[0] != param._version or entry[1] is not param:
            value = param.detach() if make is None else make(param.detach())
            entry = (param._version, param, value.to(self.dtype).contiguous())
            self._copies[key] = entry
        return entry[2]


def run_steps_reduced(steps: list[Step], x: torch.Tensor, weights: WeightCache) -> torch.Tensor:
    """Run ``steps`` on ``x`` ``[B, C, T]`` in ``weights.dtype`` (float16 or bfloat16); returns
    float32 ``[B, C', T']``."""
    dtype = weights.dtype
    x = x.to(dtype)
    residual = None
    for step in steps:
        if isinstance(step, ConvStep):
            if step.keep:
                residual = x if step.shortcut is None else _conv(step.shortcut, x, False, weights)
            y = _conv(step.module, x, step.elu, weights)
            x = (y.float() + residual.float()).to(dtype) if step.add else y
        elif isinstance(step, ConvTransposeStep):
            x = _conv_transpose(step, x, weights)
        elif isinstance(step, LSTMStep):
            x = step.module(x.float()).to(dtype)
        else:  # pragma: no cover - flatten() makes only these
            raise TypeError(type(step).__name__)
    return x.float()


def _conv(module, x: torch.Tensor, elu: bool, weights: WeightCache) -> torch.Tensor:
    if elu:
        x = F.elu(x)
    x = pad1d(x, *module.padding(x.shape[-1]), module.pad_mode)
    conv = module.conv
    y = F.conv1d(x, weights.get(conv.weight), weights.get(conv.bias), conv.stride, 0, conv.dilation)
    return y if module.norm is None else _group_norm(module.norm, y)


def _conv_transpose(step: ConvTransposeStep, x: torch.Tensor, weights: WeightCache) -> torch.Tensor:
    module = step.module
    if step.elu:
        x = F.elu(x)
    conv = module.conv
    y = F.conv_transpose1d(x, weights.get(conv.weight), weights.get(conv.bias), conv.stride)
    if module.norm is not None:
        y = _group_norm(module.norm, y)
    left, right = module.trim
    return y[..., left : y.shape[-1] - right]


def _group_norm(norm: torch.nn.GroupNorm, y: torch.Tensor) -> torch.Tensor:
    return norm(y.float()).to(y.dtype)
