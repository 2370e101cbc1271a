"""The codec's two-layer LSTM (width 512, 750 steps: 10 s at 24 kHz) on CUDA in ``fp16`` and in
``exact`` (IEEE float32), the two kernels side by side: the Triton kernel (a launch a time step of
both layers) and the cluster kernel (``fastencodec.kernels.cluster_lstm``: a launch a layer).
Milliseconds a network's LSTM (input projections included) replayed as a CUDA graph, medians, at
batches of 1 to 256, and the largest difference between the two kernels' outputs; then, for
``exact``, each float32 cluster kernel (8 or 10 items a cluster) at each batch, the one
:func:`~fastencodec.kernels.cluster_lstm.variant` picks, and whether their outputs are bitwise equal.

``python benchmarks/lstm_layers.py`` on one CUDA GPU of compute capability 9.x.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import capture, cuda_ms  # noqa: E402
from fastencodec.kernels import cluster_lstm, cuda  # noqa: E402
from fastencodec.kernels.plan import LSTMStep  # noqa: E402
from fastencodec.nn.layers import LSTM  # noqa: E402

WIDTH, STEPS = 512, 750


def network_ms(net: cuda.CudaNetwork, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Median ms of ``net``'s LSTM on ``x`` replayed as a CUDA graph, and its output."""

    graph, out = capture(lambda: net._lstm(net.steps[0], x))
    return cuda_ms(graph.replay, 5), out.clone()


def main() -> None:
    torch.manual_seed(0)
    module = LSTM(WIDTH, 2).cuda().eval()  # parameters made outside inference mode, as a model's are
    with torch.inference_mode():
        for precision in ("fp16", "exact"):
            table(cuda.CudaNetwork([LSTMStep(module)], precision, "encoder"))
        float_kernels(cuda.CudaNetwork([LSTMStep(module)], "exact", "encoder"))


def table(net: cuda.CudaNetwork) -> None:
    device = torch.device("cuda")
    runs = cluster_lstm.fits(WIDTH, device, net.dtype)
    at_once = cluster_lstm.concurrent_clusters(WIDTH, torch.cuda.current_device(), net.dtype) if runs else 0
    print(f"\n{net.precision}: cluster kernel runs here: {runs} ({at_once} clusters at once)")
    print("| batch | Triton, a launch a step | cluster, a launch a layer | ratio | max difference |")
    print("|---:|---:|---:|---:|---:|")
    fits = cluster_lstm.fits
    for batch in (1, 4, 16, 64, 256):
        x = (torch.randn(batch, STEPS, WIDTH, device="cuda") * 0.5).to(net.dtype)
        cluster_lstm.fits = lambda width, device, dtype: False
        try:
            triton_ms, triton_out = network_ms(net, x)
        finally:
            cluster_lstm.fits = fits
        cluster_ms, cluster_out = network_ms(net, x)
        diff = float((triton_out.float() - cluster_out.float()).abs().max())
        print(f"| {batch} | {triton_ms:.3f} ms | {cluster_ms:.3f} ms | {triton_ms / cluster_ms:.2f}x | {diff:.2e} |")


def float_kernels(net: cuda.CudaNetwork) -> None:
    device = torch.device("cuda")
    if not cluster_lstm.fits(WIDTH, device, torch.float32):
        return
    kernels = cluster_lstm.VARIANTS[torch.float32]
    print("\nexact, each float32 cluster kernel (ms a network's LSTM):")
    print("| batch | " + " | ".join(f"{v.items} items a cluster" for v in kernels) + " | chosen | bitwise equal |")
    print("|---:|" + "---:|" * len(kernels) + "---:|---|")
    choose = cluster_lstm.variant
    for batch in (1, 16, 56, 64, 70, 128, 256):
        x = torch.randn(batch, STEPS, WIDTH, device="cuda") * 0.5
        times, outs = [], []
        for v in kernels:
            cluster_lstm.variant = lambda *a, v=v: v
            try:
                ms, out = network_ms(net, x)
            finally:
                cluster_lstm.variant = choose
            times.append(f"{ms:.3f}")
            outs.append(out)
        chosen = choose(batch, WIDTH, device, torch.float32).items
        equal = all(torch.equal(outs[0], o) for o in outs[1:])
        print(f"| {batch} | " + " | ".join(times) + f" | {chosen} | {equal} |")


if __name__ == "__main__":
    main()
