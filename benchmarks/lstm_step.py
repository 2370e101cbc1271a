"""The CUDA LSTM step kernel (``triton_ops.lstm_step_kernel``) per product precision and number of
hidden units a program: microseconds per time step of one layer, 750 steps replayed as one CUDA graph.

``python benchmarks/lstm_step.py`` on one CUDA GPU. Width 512 (the 24 and 48 kHz models), batches
of 1, 64 and 256 items; items a program and reduction chunk as
:data:`~fastencodec.kernels.cuda.LSTM_TILE`; 4, 8 or 16 hidden units a program (each with its four
gates). Float32 operands for ``ieee``, ``tf32x3`` and ``tf32`` products, float16 operands (the
``fp16`` mode) for ``fp16``. Marks the units ``LSTM_TILE`` picks.
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


def step_us(batch: int, precision: str, units: int) -> float:
    """Microseconds a step of ``STEPS`` steps captured in one CUDA graph (median of replays)."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    weights = (torch.randn(WIDTH, 4 * WIDTH, device="cuda") * 0.04).to(dtype)
    weights = ops.units_layout(weights, units).contiguous()
    gates = torch.randn(batch, STEPS, 4 * WIDTH, device="cuda") * 0.5
    hidden = torch.zeros(batch, STEPS, WIDTH, device="cuda", dtype=dtype)
    cell = torch.zeros(batch, WIDTH, device="cuda")
    items, _, chunk = LSTM_TILE

    def layer():
        for t in range(STEPS):
            ops.lstm_step_kernel[(triton.cdiv(batch, items), WIDTH // units)](
                gates, weights, hidden, cell, hidden, hidden, t, STEPS, batch,
                H=WIDTH, ADD=False, PREC="ieee" if precision == "fp16" else precision,
                BM=items, U=units, BK=chunk, num_warps=4,
            )  # fmt: skip

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        layer()  # compile outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        layer()
    return cuda_ms(graph.replay, 5) * 1000 / STEPS


@torch.inference_mode()
def main() -> None:
    torch.manual_seed(0)
    print("| batch | products | " + " | ".join(f"{u} units a program" for u in UNITS) + " |")
    print("|---:|---|" + "---:|" * len(UNITS))
    for batch in (1, 64, 256):
        for precision in PRECISIONS:
            cells = [f"{step_us(batch, precision, u):.2f} us{' (used)' if u == LSTM_TILE[1] else ''}" for u in UNITS]
            print(f"| {batch} | {precision} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
