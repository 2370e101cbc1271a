"""Precision modes of the encoder and decoder networks, and which device can run which.

- ``"exact"``: float32 operands, products and sums. On CPU this is the reference's own
  arithmetic (bit-equal to Meta's ``encodec`` on CPU); on CUDA our kernels (Triton's, and where
  they fit the CUDA C++ ones of :mod:`.cluster_lstm`, :mod:`.sgemm_conv` and :mod:`.rvq_search`)
  compute in IEEE float32 (never TF32, whatever ``torch.backends`` flags say).
- ``"tf32"``: CUDA only; tensor-core float32. The decoder's convolution and LSTM products take
  TF32 operands (10-bit mantissa) and sum in float32; the encoder, which picks the tokens,
  uses 3xTF32 (each float32 operand split into two TF32 parts; error near float32's).
  Activations stay float32.
- ``"fp16"``: float16 weights and activations between the convolutions (11-bit significand,
  8 times finer than bfloat16's; largest value 65504), products summed in float32; the LSTM
  keeps its cell state in float32, and on CUDA its products take float16 operands too. Outputs
  made non-finite by an overflow of float16 raise instead of giving tokens. On CPU it needs float16
  instructions (AVX512-FP16 or AMX-FP16).
- ``"bf16"``: bfloat16 weights and activations between the convolutions, products summed in
  float32; the LSTM runs in float32 (with TF32 products on CUDA). On CPU it needs bf16
  instructions (AVX512-BF16 or AMX).

The vector quantizer always runs in float32: on CUDA its products are IEEE float32 in
``exact`` and 3xTF32 in the other modes (:data:`fastencodec.kernels.cuda.CODE_PRECISION`). The mode is an explicit
argument of every runner: no process-wide flag is read or changed. The names are those of
:data:`fastencodec.engine.policy.PRECISIONS`.
"""

from __future__ import annotations

import torch

from fastencodec.engine.policy import PRECISIONS


def check_precision(precision: str, device: torch.device | str) -> str:
    """Validate ``precision`` for ``device`` and return it.

    Args:
        precision: a name in :data:`~fastencodec.engine.policy.PRECISIONS`.
        device: where the networks run.

    Returns:
        The precision name.

    Raises:
        ValueError: unknown name, or a mode the device cannot run (``tf32`` on CPU, ``fp16`` or
            ``bf16`` on a CPU without instructions for them).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if kind == "cpu":
        refusal = _cpu_refusal(precision)
        if refusal is not None:
            raise ValueError(f"{refusal}; use {_others(precision, device)}")
    elif kind != "cuda":
        raise ValueError(f"precision modes are defined for CPU and CUDA devices, not {kind!r}")
    return precision


def _cpu_refusal(precision: str) -> str | None:
    """Why this CPU cannot run ``precision`` (a known name), or None if it can."""
    if not PRECISIONS[precision].cpu:
        return "precision 'tf32' needs a CUDA GPU (CPUs have no TF32 arithmetic)"
    if precision == "bf16" and not cpu_has_bf16():
        return "precision 'bf16' on CPU needs AVX512-BF16 or AMX instructions, which this CPU lacks"
    if precision == "fp16" and not cpu_has_fp16():
        return "precision 'fp16' on CPU needs AVX512-FP16 or AMX-FP16 instructions, which this CPU lacks"
    return None


def _others(precision: str, device: torch.device | str) -> str:
    """The modes other than ``precision`` that ``device`` runs, for messages: ``'exact' or 'bf16'``."""
    cpu = torch.device(device).type == "cpu"
    names = [f"'{name}'" for name in PRECISIONS if name != precision and not (cpu and _cpu_refusal(name))]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class PrecisionOverflowError(ValueError):
    """An input whose activations overflowed the range of ``precision``'s activation dtype."""

    def __init__(self, part: str, precision: str, device: torch.device | str):
        dtype = activation_dtype(precision)
        super().__init__(
            f"the {part}'s activations overflowed {str(dtype).removeprefix('torch.')} (largest value "
            f"{torch.finfo(dtype).max:g}) on this input in precision {precision!r}; use precision "
            f"{_others(precision, device)}"
        )


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (oneDNN's check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_fp16() -> bool:
    """Whether this CPU runs float16 matrix products natively (oneDNN's check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return False


ACTIVATION_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
"""Activation dtype of the reduced-precision modes; the others keep float32."""


def activation_dtype(precision: str) -> torch.dtype:
    """dtype of activations between layers in ``precision``."""
    return ACTIVATION_DTYPES.get(precision, torch.float32)
