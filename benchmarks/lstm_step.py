"""The CUDA LSTM kernel (``triton_ops.lstm_wave_kernel``) per product precision and number of hidden
units a program: microseconds a launch (one time step of each layer), 750 steps replayed as one CUDA graph.

``python benchmarks/lstm_step.py`` on one CUDA GPU. Width 512 (the 24 and 48 kHz models), batches
of 1, 64 and 256 items; items a program and reduction chunk as
:data:`~fastencodec.kernels.cuda.LSTM_TILE`; 4, 8 or 16 hidden units a program (each with its four
gates), one layer; and two layers a launch (the codec's LSTMs) at the units ``LSTM_TILE`` picks.
Float32 operands for ``ieee``, ``tf32x3`` and ``tf32`` products, float16 operands (the ``fp16``
mode) for ``fp16``. Marks the units ``LSTM_TILE`` picks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import cuda_ms  # noqa: E402
from fastencodec.kernels import triton_ops as ops  # noqa: E402
from fastencodec.kernels.cuda import LSTM_TILE  # noqa: E402

WIDTH, STEPS = 512, 750
PRECISIONS = ("ieee", "tf32x3", "tf32", "fp16")
UNITS = (4, 8, 16)


def step_us(batch: int, precision: str, units: int, layers: int = 1) -> float:
    """Microseconds a launch of the ``STEPS + layers - 1`` captured in one CUDA graph (median of replays)."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    weights = (torch.randn(2 * layers, WIDTH, 4 * WIDTH, device="cuda") * 0.04).to(dtype)
    weights = torch.stack([ops.units_layout(w, units) for w in weights])
    w_hh, w_ih = weights[:layers].contiguous(), weights[layers:].contiguous()
    bias = torch.zeros(layers, 4 * WIDTH, device="cuda")
    gates = torch.randn(batch, STEPS, 4 * WIDTH, device="cuda") * 0.5
    hidden = torch.zeros(layers, batch, STEPS, WIDTH, device="cuda", dtype=dtype)
    cell = torch.zeros(layers, batch, WIDTH, device="cuda")
    out = torch.zeros(batch, STEPS, WIDTH, device="cuda")
    items, _, chunk = LSTM_TILE

    def network():
        for wave in range(STEPS + layers - 1):
            ops.lstm_wave_kernel[(triton.cdiv(batch, items), layers * WIDTH // units)](
                gates, w_ih, w_hh, bias, hidden, cell, out, out, wave, STEPS, batch, batch * STEPS * WIDTH,
                L=layers, H=WIDTH, PREC="ieee" if precision == "fp16" else precision,
                BM=items, U=units, BK=chunk, num_warps=4,
            )  # fmt: skip

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        network()  # compile outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        network()
    return cuda_ms(graph.replay, 5) * 1000 / (STEPS + layers - 1)


@torch.inference_mode()
def main() -> None:
    torch.manual_seed(0)
    used = LSTM_TILE[1]
    head = [f"1 layer, {u} units a program" for u in UNITS] + [f"2 layers a launch, {used} units"]
    print("| batch | products | " + " | ".join(head) + " |")
    print("|---:|---|" + "---:|" * len(head))
    for batch in (1, 64, 256):
        for precision in PRECISIONS:
            cells = [f"{step_us(batch, precision, u):.2f} us" for u in UNITS]
            cells.append(f"{step_us(batch, precision, used, layers=2):.2f} us (used)")
            print(f"| {batch} | {precision} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
