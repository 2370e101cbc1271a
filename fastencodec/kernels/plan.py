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


def fusable_shortcut(conv: Conv1d, shortcut: Conv1d) -> bool:
    """Whether a residual block's conv ``shortcut`` can be computed inside the kernel of the block's
    last ``conv`` (which adds it): both 1x1 with stride 1 and neither normalised (no GroupNorm)."""
    return all(
        m.conv.kernel_size[0] == 1 and m.conv.stride[0] == 1 and m.conv.dilation[0] == 1 and m.norm is None
        for m in (conv, shortcut)
    )


def activated_outputs(steps: list[Step]) -> list[bool]:
    """Per step, whether its output can be stored after the ELU that the next step applies to it
    (computed once an output value instead of once a kernel tap that reads it): the next step is a
    conv or transposed conv with an ELU on its input, and does not keep its input (a residual block's
    input is added back unactivated). An LSTM's output is stored as it is."""
    out = []
    for step, after in zip(steps, steps[1:]):
        consumer = isinstance(after, ConvTransposeStep) or (isinstance(after, ConvStep) and not after.keep)
        out.append(not isinstance(step, LSTMStep) and consumer and after.elu)
    return out + [False]


def output_length(step: Step, length: int) -> int:
    """Samples (frames) out of ``step`` for an input of ``length``: the reference's arithmetic
    (the conv's padding and ``extra padding``, the transposed conv's trims)."""
    if isinstance(step, ConvStep):
        module = step.module
        left, right = module.padding(length)
        conv = module.conv
        reach = conv.dilation[0] * (conv.weight.shape[-1] - 1)
        return (length + left + right - reach - 1) // conv.stride[0] + 1
    if isinstance(step, ConvTransposeStep):
        conv = step.module.conv
        return (length - 1) * conv.stride[0] + conv.weight.shape[-1] - sum(step.module.trim)
    return length


def ragged_steps(steps: list[Step]) -> bool:
    """Whether the CUDA kernels can run ``steps`` on a batch of items of unequal lengths: every
    conv pads with reflection or zeros by index arithmetic and nothing normalises over time."""
    for step in steps:
        module = step.module
        if isinstance(step, ConvStep) and (module.pad_mode not in ("reflect", "constant") or module.norm is not None):
            return False
        if isinstance(step, ConvTransposeStep) and module.norm is not None:
            return False
    return True


def step_lengths(steps: list[Step], length: int) -> list[int] | None:
    """Each step's input length for one item of ``length`` samples (frames), then the network's
    output length; None when a reflect-padded conv sees an input no longer than its padding
    (the reference then zero-extends before reflecting, which the ragged kernels do not do)."""
    lengths = [length]
    for step in steps:
        if isinstance(step, ConvStep) and step.module.pad_mode == "reflect":
            if length <= max(step.module.padding(length)):
                return None
        length = output_length(step, length)
        if length <= 0:
            return None
        lengths.append(length)
    return lengths
