"""Tiles of the CUDA convolution kernels, per layer of the 24 kHz model: milliseconds of each layer
with each candidate (:mod:`fastencodec.kernels.conv_tiles`), at 64 x 10 s, per operand kind.

``python benchmarks/conv_tiles.py [--operands 16-bit,ieee] [--only SHAPES] [--workers N] [--out DIR]``
on one CUDA GPU. Records every convolution launch of one encode and one decode (the LSTMs' input
projections among them, as 1x1 convs storing the activations' dtype where the real projection stores
float32), then times each with every candidate tile (CUDA events around one launch, median of 5
after a warm-up: launch overhead included, the same for every candidate) and checks its output
against the chosen tiles'. ``--workers`` processes compile the candidates first, in parallel, into
Triton's disk cache (timing runs in one process). Prints, per layer shape, the chosen tiles' time,
the fastest candidate and the sums, and writes ``conv_tiles.json`` (``conv_tiles_only.json`` with
``--only``) to ``--out``. :data:`~fastencodec.kernels.conv_tiles.TUNED` holds the fastest tiles where
at least 3% faster than the defaults. ``bf16`` uses the ``16-bit`` tiles without a sweep of its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.throughput import cuda_ms  # noqa: E402
from fastencodec.kernels.conv_tiles import NARROW, ConvShape, ConvTiles, conv_tiles, pow2  # noqa: E402
from fastencodec.kernels.plan import flatten  # noqa: E402
from fastencodec.nn.config import META_24KHZ  # noqa: E402
from fastencodec.nn.layers import Conv1d  # noqa: E402
from fastencodec.nn.model import EncodecModel  # noqa: E402

PRECISION = {"16-bit": "fp16", "ieee": "exact"}
"""The mode whose networks each operand kind's layers come from."""

DOT = [  # rows, output channels, input channels, warps, stages
    (64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (128, 64, 64, 4, 3), (128, 128, 32, 8, 3), (128, 128, 64, 8, 3),
    (64, 128, 32, 4, 3), (64, 128, 64, 4, 3), (256, 64, 32, 8, 3), (256, 128, 32, 8, 3), (128, 32, 32, 4, 3),
    (256, 32, 32, 4, 3), (64, 64, 64, 4, 4), (128, 64, 64, 8, 4), (64, 32, 32, 4, 3), (32, 64, 32, 4, 3),
]  # fmt: skip
NARROW_ROWS = [(64, 4), (128, 4), (256, 4), (256, 8), (512, 8), (1024, 8)]
"""Rows and warps for layers of fewer than 16 channels on a side."""


def chosen(shape: ConvShape, operands: str) -> ConvTiles:
    """The tiles the codec picks for ``shape`` on this GPU."""
    return conv_tiles(shape, operands, torch.cuda.get_device_capability())


def candidates(shape: ConvShape, operands: str) -> list[ConvTiles]:
    """The tiles tried for ``shape``, the chosen ones first."""

    out = [chosen(shape, operands)]
    c_in, c_out = shape.c_in, shape.c_out
    if c_in < NARROW:  # one input channel a chunk
        out += [ConvTiles(r, pow2(c_out, NARROW, o), 1, w, 3) for r, w in NARROW_ROWS for o in (32, 64)]
    elif shape.narrow_outputs:
        out += [ConvTiles(r, NARROW, pow2(c_in, NARROW, i), w, 3) for r, w in NARROW_ROWS for i in (16, 32, 64)]
    else:
        out += [ConvTiles(r, pow2(c_out, NARROW, o), pow2(c_in, NARROW, i), w, s) for r, o, i, w, s in DOT]
    return list(dict.fromkeys(out))


class Recorder:
    """Wraps a :class:`~fastencodec.kernels.cuda.CudaNetwork`'s conv methods to keep each call's
    shape (the one its launch asks tiles for: a fused shortcut's included) and arguments (for an LSTM,
    those of a 1x1 conv standing for its input projection)."""

    def __init__(self, net):
        self.net = net
        self.calls: list[tuple[ConvShape, str, tuple]] = []
        self.methods = {"conv": net._conv, "transpose": net._conv_transpose}
        lstm, tiles = net._lstm, net.tiles
        asked: list[ConvShape] = []

        def ask(shape, operands, capability):
            asked.append(shape)
            return tiles(shape, operands, capability)

        def record_conv(module, h, elu, lens=None, add=None, elu_out=False):
            out = self.methods["conv"](module, h, elu, lens, add, elu_out)  # a shortcut of its own records first
            self.calls.append((asked[-1], "conv", (module, h, elu, None, add, elu_out)))
            return out

        def record_transpose(module, h, elu, lens=None, elu_out=False):
            out = self.methods["transpose"](module, h, elu, lens, elu_out)
            self.calls.append((asked[-1], "transpose", (module, h, elu, None, elu_out)))
            return out

        def record_lstm(step, h):
            width = step.module.lstm.hidden_size
            with torch.inference_mode(False):  # its weights get a version counter (the weight cache reads it)
                projection = Conv1d(META_24KHZ, width, 4 * width, 1).to(h.device)
            self.calls.append((ConvShape.lstm_projection(width), "conv", (projection, h, False)))
            return lstm(step, h)

        net._conv, net._conv_transpose, net._lstm, net.tiles = record_conv, record_transpose, record_lstm, ask

    def run(self, call: tuple, tile: ConvTiles) -> torch.Tensor:
        """Call ``call`` again with ``tile``."""
        _, kind, args = call
        self.net.tiles = lambda shape, operands, capability: tile
        return self.methods[kind](*args)


def record(operands: str, batch: int, seconds: float) -> list[tuple[Recorder, str]]:
    """One encode and one decode of random audio by a random 24 kHz model in ``PRECISION[operands]``."""
    from fastencodec.kernels.cuda import CudaNetwork

    torch.manual_seed(0)
    model = EncodecModel(META_24KHZ).eval().requires_grad_(False).cuda()
    precision = PRECISION[operands]
    x = torch.randn(batch, 1, int(seconds * 24_000), device="cuda") * 0.1
    recorders = []
    with torch.inference_mode():
        for part in ("encoder", "decoder"):
            net = CudaNetwork(flatten(getattr(model, part).layers), precision, part)
            rec = Recorder(net)
            x = net(x)
            recorders.append((rec, part))
    return recorders


def compile_share(operands: str, worker: int, workers: int, only: list[str]) -> None:
    """Launch this worker's share of (call, candidate) pairs once, at batch 1 x 1 s (compiles them)."""
    recorders = record(operands, 1, 1.0)
    with torch.inference_mode():
        index = 0
        for rec, _ in recorders:
            for call in rec.calls:
                if not wanted(call[0], only):
                    continue
                for tile in candidates(call[0], operands):
                    if index % workers == worker:
                        rec.run(call, tile)
                    index += 1
    torch.cuda.synchronize()


def name(shape: ConvShape) -> str:
    """``transposed 512->256 k16 s8``; ``16->32 k1 s1 +32->32 k1`` with a fused shortcut."""
    kind = "transposed " if shape.transposed else ""
    shortcut = f" +{shape.shortcut}->{shape.c_out} k1" if shape.shortcut else ""
    return f"{kind}{shape.c_in}->{shape.c_out} k{shape.kernel} s{shape.stride}{shortcut}"


def wanted(shape: ConvShape, only: list[str]) -> bool:
    """Whether ``shape``'s name is one of ``only`` (every shape when empty)."""
    return not only or name(shape) in only


def sweep(operands: str, workers: int, only: list[str]) -> dict:
    """Per shape: milliseconds of each candidate (summed over the shape's layers) and its largest
    difference from the chosen tiles' output (relative to the largest output)."""
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=compile_share, args=(operands, w, workers, only)) for w in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"a compiling worker failed (exit codes {[p.exitcode for p in procs]})")
    totals: dict[str, dict] = {}
    recorders = record(operands, 64, 10.0)
    with torch.inference_mode():
        for rec, part in recorders:
            for call in rec.calls:
                shape = call[0]
                if not wanted(shape, only):
                    continue
                key = name(shape)
                reference = rec.run(call, chosen(shape, operands)).float()
                row = totals.setdefault(key, {"shape": asdict(shape), "parts": [], "ms": {}, "error": {}})
                row["parts"].append(part)
                for tile in candidates(shape, operands):
                    label = ",".join(map(str, asdict(tile).values()))
                    out = rec.run(call, tile).float()
                    err = float((out - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
                    ms = cuda_ms(lambda rec=rec, call=call, tile=tile: rec.run(call, tile), 5, warmup=1)
                    row["ms"][label] = row["ms"].get(label, 0.0) + ms
                    row["error"][label] = max(row["error"].get(label, 0.0), err)
                del reference, out
            rec.calls.clear()
            torch.cuda.empty_cache()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operands", default="16-bit,ieee", help=f"comma-separated: {', '.join(PRECISION)}")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--only", default="", help="comma-separated shapes, as printed (e.g. '32->1 k7 s1')")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    kinds = args.operands.split(",")
    if unknown := [k for k in kinds if k not in PRECISION]:
        parser.error(f"unknown operand kinds {unknown}; choose from {', '.join(PRECISION)}")
    only = [n for n in args.only.split(",") if n]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    for operands in kinds:
        rows = sweep(operands, args.workers, only)
        if not rows:
            parser.error(f"--only {args.only!r} names no layer shape of the model")
        report[operands] = rows
        (args.out / ("conv_tiles_only.json" if only else "conv_tiles.json")).write_text(json.dumps(report, indent=1))
        limit = 1e-2 if operands == "16-bit" else 1e-4
        chosen_total = best_total = 0.0
        print(f"\n## {operands}: ms at 64 x 10 s, summed over a shape's layers (chosen tiles, fastest candidate)")
        for key, row in rows.items():
            picked = row["ms"][",".join(map(str, asdict(chosen(ConvShape(**row["shape"]), operands)).values()))]
            ok = {label: ms for label, ms in row["ms"].items() if row["error"][label] < limit}
            best = min(ok, key=ok.get)
            chosen_total += picked
            best_total += ok[best]
            parts = "+".join(row["parts"])
            ratio = picked / ok[best]
            print(f"{key:28s} {parts:28s} {picked:8.3f} {ok[best]:8.3f}  {best}  ({ratio:.2f}x)", flush=True)
        print(f"{'total':57s} {chosen_total:8.3f} {best_total:8.3f}  ({chosen_total / best_total:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
