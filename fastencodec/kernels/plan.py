"""The encoder and decoder networks flattened into a list of fused steps.

Each step is one convolution (with the ELU before it, its padding, bias, optional
GroupNorm and an optional residual add folded in), one transposed convolution, or one
LSTM with its skip connection. Runners (:mod:`fastencodec.kernels.cpu`,
:mod:`fastencodec.kernels.cuda`) execute the steps; the weights stay the modules' own.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fastencodec.nn.layers import LSTM, Conv1d, ConvTranspose1d, ResnetBlock


@dataclass
class ConvStep:
    """``y = norm(conv(pad(elu(x)))) (+ residual)`` for one :class:`~fastencodec.model.Conv1d`.

    ``keep``: the step's input becomes the pending residual (a residual block's input);
    ``shortcut``: the pending residual is replaced by this conv of it (conv shortcut);
    ``add``: the pending residual is added to the output.
    """

    module: Conv1d
    elu: bool
    keep: bool = False
    shortcut: Conv1d | None = None
    add: bool = False


@dataclass
class ConvTransposeStep:
    """``y = trim(norm(conv_transpose(elu(x))))`` for one :class:`~fastencodec.model.ConvTranspose1d`."""

    module: ConvTranspose1d
    elu: bool


@dataclass
class LSTMStep:
    """``y = lstm(x) + x`` for one :class:`~fastencodec.model.LSTM` (float32 in every precision mode)."""

    module: LSTM


Step = ConvStep | ConvTransposeStep | LSTMStep


def flatten(layers: nn.Sequential) -> list[Step]:
    """The steps of an encoder's or decoder's ``layers``.

    Raises:
        ValueError: a layer of a kind the runners do not know, or an ELU that ends the network.
    """
    steps: list[Step] = []
    elu = False
    for layer in layers:
        if isinstance(layer, nn.ELU):
            if layer.alpha != 1.0:
                raise ValueError(f"ELU with alpha {layer.alpha} is not supported")
            elu = True
            continue
        if isinstance(layer, Conv1d):
            steps.append(ConvStep(layer, elu))
        elif isinstance(layer, ConvTranspose1d):
            steps.append(ConvTransposeStep(layer, elu))
        elif isinstance(layer, LSTM):
            if elu:
                raise ValueError("an ELU before an LSTM is not supported")
            steps.append(LSTMStep(layer))
        elif isinstance(layer, ResnetBlock):
            if elu:
                raise ValueError("an ELU before a residual block is not supported")
            first, second = layer.block[1], layer.block[3]
            shortcut = layer.shortcut if isinstance(layer.shortcut, Conv1d) else None
            steps.append(ConvStep(first, True, keep=True, shortcut=shortcut))
            steps.append(ConvStep(second, True, add=True))
        else:
            raise ValueError(f"layer {type(layer).__name__} is not supported by the kernels")
        elu = False
    if elu:
        raise ValueError("an ELU at the end of the network is not supported")
    return steps
