"""The CUDA LSTM kernel (``triton_ops.lstm_wave_kernel``) per product precision and tiles: microseconds a
launch (one time step of each layer), 750 steps replayed as one CUDA graph.

``python benchmarks/lstm_step.py`` on one CUDA GPU. Width 512 (the 24 and 48 kHz models), batches
of 1, 16, 64 and 256 items, :data:`~fastencodec.kernels.cuda.LSTM_ITEMS` items a program; one layer
with 4, 8 or 16 hidden units a program (each with its four gates; the default reduction chunk and
pipelining depth), and two layers a launch (the codec's LSTMs) with each tile of
:data:`~fastencodec.kernels.cuda.LSTM_TILES` and the default. Float32 operands for ``ieee``,
``tf32x3`` and ``tf32`` products, float16 operands (the ``fp16`` mode) for ``fp16``. Marks the
tiles :func:`~fastencodec.kernels.cuda.lstm_tiles` picks, and says whether the two-layer outputs of
all those tiles are bitwise the same (batch invariance needs them to be).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import capture, cuda_ms  # noqa: E402
from fastencodec.kernels import triton_ops as ops  # noqa: E402
from fastencodec.kernels.cuda import LSTM_DEFAULT, LSTM_ITEMS, LSTM_TILES, LSTMTiles, lstm_tiles  # noqa: E402

WIDTH, STEPS = 512, 750
PRECISIONS = ("ieee", "tf32x3", "tf32", "fp16")
UNITS = (4, 8, 16)


def step_us(batch: int, precision: str, tiles: LSTMTiles, layers: int = 1) -> tuple[float, torch.Tensor]:
    """Microseconds a launch of the ``STEPS + layers - 1`` captured in one CUDA graph (median of replays),
    and the last layer's outputs ``[batch, STEPS, WIDTH]`` (the same seeded weights and inputs every call)."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    seeded = torch.Generator(device="cuda").manual_seed(0)
    weights = torch.randn(2 * layers, WIDTH, 4 * WIDTH, device="cuda", generator=seeded) * 0.04
    weights = torch.stack([ops.units_layout(w, tiles.units) for w in weights.to(dtype)])
    w_hh, w_ih = weights[:layers].contiguous(), weights[layers:].contiguous()
    bias = torch.zeros(layers, 4 * WIDTH, device="cuda")
    gates = torch.randn(batch, STEPS, 4 * WIDTH, device="cuda", generator=seeded) * 0.5
    hidden = torch.zeros(layers, batch, STEPS, WIDTH, device="cuda", dtype=dtype)
    cell = torch.zeros(layers, batch, WIDTH, device="cuda")
    out = torch.zeros(batch, STEPS, WIDTH, device="cuda")

    def network():
        for wave in range(STEPS + layers - 1):
            ops.lstm_wave_kernel[(triton.cdiv(batch, LSTM_ITEMS), layers * WIDTH // tiles.units)](
                gates, w_ih, w_hh, bias, hidden, cell, out, out, wave, STEPS, batch, batch * STEPS * WIDTH,
                L=layers, H=WIDTH, PREC="ieee" if precision == "fp16" else precision,
                BM=LSTM_ITEMS, U=tiles.units, BK=tiles.chunk, num_warps=4, num_stages=tiles.stages,
            )  # fmt: skip

    graph, _ = capture(network)
    return cuda_ms(graph.replay, 5) * 1000 / (STEPS + layers - 1), out.clone()


@torch.inference_mode()
def main() -> None:
    torch.manual_seed(0)
    two = sorted({LSTM_DEFAULT, *(t for pair in LSTM_TILES.values() for t in pair)})
    head = [f"1 layer, {u} units" for u in UNITS]
    head += [f"2 layers, {t.units} units, chunk {t.chunk}, depth {t.stages}" for t in two]
    head.append("2 layers: outputs bitwise alike")
    print("| batch | products | " + " | ".join(head) + " |")
    print("|---:|---|" + "---:|" * (len(head) - 1) + "---|")
    for batch in (1, 16, 64, 256):
        for precision in PRECISIONS:
            cells = [f"{step_us(batch, precision, LSTM_DEFAULT._replace(units=u))[0]:.2f} us" for u in UNITS]
            picked = lstm_tiles(precision, batch, WIDTH)
            outs = []
            for t in two:
                us, out = step_us(batch, precision, t, layers=2)
                outs.append(out)
                cells.append(f"{us:.2f} us" + (" (used)" if t == picked else ""))
            cells.append("yes" if all(torch.equal(o, outs[0]) for o in outs) else "**no**")
            print(f"| {batch} | {precision} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
