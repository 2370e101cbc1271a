"""MusicGen generation speed: fastencodec vs transformers, side by side in one run.

    python benchmarks/musicgen.py [--quick] [--device cuda] [--arch small medium] [--batch 1 8]
                                  [--seconds 10] [--guidance 3] [--dtype float32|bfloat16]
                                  [--theirs-dtype float32|bfloat16] [--repeat 2] [--profile]
                                  [--linear triton torch] [--no-transformers] [--no-graphs] [--kernels]
                                  [--json FILE]

Random weights in the published architectures (shapes of facebook/musicgen-small and -medium:
t5-base text encoder, 24 x 1024 or 48 x 1536 decoder, 4 codebooks of 2048, the 32 kHz EnCodec), so
nothing is downloaded; speed does not depend on the weights. Both sample with top-k 250 and
classifier-free guidance in one doubled batch. Reported: wall time of a whole call (text encoder,
``seconds * 50 + 3`` decoder steps, codec decode), decoder steps per second, real-time factor, and the
decoder-weight bandwidth it implies (weight bytes read per step / step time: the bound at batch 1).
Ours is also split into its phases (tokens: text encoder and all steps; codec decode; the text
conditioning alone) and its first call (CUDA graph capture) is shown. For each architecture ours runs
first (every dtype and batch size), then transformers in its first dtype (after a short warm-up call);
transformers' other dtypes come after all architectures, so a time limit cuts the least needed rows.
``--profile`` times the captured steps at 50 positions spread over the window (each the graph of its
attention span), replays queued back to back, and splits the average step into kernel time and the
gaps between kernels (torch.profiler); also the step at the first and at the last span.
``--kernels`` instead times a step's pieces alone, each captured 20 times back to back in a CUDA graph,
with their alternatives (attention over a span of the cache; the matrix products in torch and as the
few-row Triton kernel, alone and with the LayerNorm before or the residual after them). ``--linear``
picks how ours runs a captured step's linear layers: ``triton`` (the few-row kernel, the default),
``torch`` (cuBLAS), or both (each a row of the table).
``--quick`` runs musicgen-small, batch 1, 1 s, once (a CPU smoke test).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import capture, cuda_ms  # noqa: E402
from fastencodec.musicgen import MusicGen  # noqa: E402
from fastencodec.musicgen.decoder import few_rows  # noqa: E402

ARCHS = {  # published decoder shapes (facebook/musicgen-*/config.json)
    "small": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096),
    "medium": dict(hidden_size=1536, num_hidden_layers=48, num_attention_heads=24, ffn_dim=6144),
    "large": dict(hidden_size=2048, num_hidden_layers=48, num_attention_heads=32, ffn_dim=8192),
}
T5_BASE = dict(
    vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="relu",
)
ENCODEC_32KHZ = dict(
    sampling_rate=32000, audio_channels=1, hidden_size=128, num_filters=64, num_residual_layers=1,
    upsampling_ratios=[8, 5, 4, 4], codebook_size=2048, codebook_dim=128, target_bandwidths=[2.2],
    num_lstm_layers=2, use_causal_conv=False, use_conv_shortcut=False, norm_type="weight_norm",
    pad_mode="reflect", chunk_length_s=None, overlap=None, compress=2, trim_right_ratio=1.0,
)
PROMPTS = ["80s pop track with bassy drums and synth", "lofi jazz piano", "epic orchestral strings", "calm ambient pad",
           "90s rock song with loud guitars", "funky bass groove", "acoustic folk guitar", "techno beat at 130 bpm"]


def tokenizer():
    """A word-level stand-in for the T5 tokenizer (prompt lengths are what matter for speed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = sorted({w for p in PROMPTS for w in p.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tok


def build(arch: str, device: torch.device):
    """transformers' model (random weights) in the published shapes, initialised on ``device``."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    decoder = MusicgenDecoderConfig(vocab_size=2048, num_codebooks=4, pad_token_id=2048, bos_token_id=2048,
                                    decoder_start_token_id=2048, max_position_embeddings=2048, **ARCHS[arch])
    config = MusicgenConfig(text_encoder=T5Config(**T5_BASE), audio_encoder=EncodecConfig(**ENCODEC_32KHZ),
                            decoder=decoder)
    torch.manual_seed(0)
    with torch.device(device):  # random initialisation on the GPU: seconds, not a minute, for medium
        return MusicgenForConditionalGeneration(config).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def run_ours(ours: MusicGen, prompts: list[str], seconds: float, guidance: float) -> dict[str, float]:
    """One ``generate`` call, split into its two phases: tokens (text encoder and every decoding
    step) and the codec decode. Returns their seconds."""
    start = time.perf_counter()
    tokens = ours.generate_tokens(prompts, seconds, guidance_scale=guidance, top_k=250, seed=0)
    middle = time.perf_counter()
    ours.decode(tokens)
    return dict(tokens_s=middle - start, codec_decode_s=time.perf_counter() - middle)


def run_theirs(hf, ids: torch.Tensor, mask: torch.Tensor, steps: int, guidance: float) -> None:
    with torch.inference_mode():
        hf.generate(input_ids=ids, attention_mask=mask, do_sample=True, guidance_scale=guidance, top_k=250,
                    max_new_tokens=steps)


def text_seconds(ours: MusicGen, prompts: list[str], device: torch.device, repeat: int = 5) -> float:
    """Seconds the text conditioning (tokenizer + T5 encoder, doubled for guidance) takes (median)."""
    dtype = ours.lm.lm_heads[0].weight.dtype
    with torch.inference_mode():
        return statistics.median(timed(lambda: ours.text(prompts, True, device, dtype), device, repeat))


def profile_step(ours: MusicGen, device: torch.device, steps: int, samples: int = 50) -> dict:
    """What one captured decoding step costs on the GPU, averaged over a window of ``steps`` steps:
    ``samples`` positions spread evenly over it, each replayed (the graph of its attention span) with
    the replays queued back to back; wall time per step, the kernels in it and their summed run time
    (the rest are gaps between kernels). Also the wall per step at the window's first and last span."""
    from torch.profiler import ProfilerActivity, profile

    decoding = next(iter(ours._decoders._kept.values()))  # the graphs the last generate call used
    positions = [round(i * (steps - 1) / (samples - 1)) for i in range(samples)]

    def replay(at: list[int]) -> None:
        for position in at:
            decoding.position.fill_(position)  # one tiny kernel before each replay
            decoding.at = position
            decoding.advance()

    with torch.inference_mode():
        wall = statistics.median(timed(lambda: replay(positions), device, 3)) / samples
        first = statistics.median(timed(lambda: replay([0] * samples), device, 3)) / samples
        last = statistics.median(timed(lambda: replay([steps - 1] * samples), device, 3)) / samples
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            replay(positions)
            sync(device)
    kernels = [e for e in prof.key_averages() if getattr(e, "device_type", None) is not None
               and str(e.device_type).endswith("CUDA")]
    busy = {e.key: getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) for e in kernels}
    counts = {e.key: e.count for e in kernels}
    total_us = sum(busy.values()) / samples
    top = sorted(busy, key=busy.get, reverse=True)[:6]
    return dict(step_us=wall * 1e6, kernel_us=total_us, gap_us=wall * 1e6 - total_us,
                first_span_step_us=first * 1e6, last_span_step_us=last * 1e6,
                spans=sorted(decoding.graphs) if hasattr(decoding, "graphs") else None,
                kernels_per_step=sum(counts.values()) / samples,
                top=[(name[:60], busy[name] / samples, counts[name] / samples) for name in top])


def bench_arch(arch: str, args: argparse.Namespace, tok, device: torch.device, emit: Table):
    """Rows for one architecture: ours for every dtype and batch size first, then transformers in
    the first of ``--theirs-dtype``; printed as they come. Returns transformers' model for the
    other dtypes (timed after every architecture's first pass)."""
    hf = build(arch, device)
    for name in args.dtype:
        ours = MusicGen.from_tensors(hf.config.to_dict(), hf.state_dict(), tok, device, getattr(torch, name))
        ours.use_cuda_graphs = not args.no_graphs
        for linear in args.linear:
            ours.use_triton = linear == "triton"
            bench_ours(ours, arch, name, args, device, emit)
        del ours
    if not args.no_transformers:
        bench_theirs(hf, arch, args.theirs_dtype[0], args, tok, device, emit)
    return hf


def steps_of(seconds: float) -> int:
    """Decoder steps for ``seconds`` of audio: 50 frames a second plus the 3 of the delay pattern."""
    return round(seconds * 50) + 3


def bench_ours(
    ours: MusicGen, arch: str, dtype: str, args: argparse.Namespace, device: torch.device, emit: Table
) -> None:
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.lm.parameters())
    steps = steps_of(args.seconds)
    for batch in args.batch:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        fn = functools.partial(run_ours, ours, prompts, args.seconds, args.guidance)
        first = timed(fn, device, 1)[0]  # warm-up: CUDA graph capture, allocator, kernels
        parts = [fn() for _ in range(1 if args.quick else args.repeat)]
        wall = statistics.median(p["tokens_s"] + p["codec_decode_s"] for p in parts)
        linear = linear_of(ours, batch, guided=args.guidance != 1.0)
        row = dict(arch=arch, batch=batch, impl="fastencodec", dtype=dtype, linear=linear,
                   wall_s=wall, first_call_s=first,
                   steps_per_s=steps / wall, realtime=args.seconds / wall,
                   weight_gb_s=weight_bytes * steps / wall / 1e9,
                   tokens_s=statistics.median(p["tokens_s"] for p in parts),
                   codec_decode_s=statistics.median(p["codec_decode_s"] for p in parts),
                   text_s=text_seconds(ours, prompts, device))
        if args.profile and device.type == "cuda" and ours.use_cuda_graphs:
            try:
                row["profile"] = profile_step(ours, device, steps)
            except Exception as exc:  # the profiler is a bonus: a failure must not lose the timings
                row["profile_error"] = f"{type(exc).__name__}: {exc}"
        emit(row)


def linear_of(ours: MusicGen, batch: int, guided: bool) -> str:
    """How ``ours`` runs its captured steps' linear layers for ``batch`` items: ``triton`` (the
    few-row kernel) or ``torch`` (no kernel, or more rows than it takes: cuBLAS)."""
    module = few_rows()
    rows = batch * (2 if guided else 1)
    return "triton" if ours._kernels and module is not None and rows <= module.MAX_ROWS else "torch"


def bench_theirs(hf, arch: str, dtype: str, args: argparse.Namespace, tok, device: torch.device, emit: Table) -> None:
    """transformers' rows in ``dtype`` (the model is converted in place), with the speed-up of each
    of our rows of the same architecture and batch size."""
    hf.to(getattr(torch, dtype))
    weight_bytes = sum(p.numel() * p.element_size() for p in hf.decoder.parameters())
    steps = steps_of(args.seconds)
    for batch in args.batch:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        enc = [tok.encode(p).ids for p in prompts]
        width = max(map(len, enc))
        ids = torch.tensor([e + [0] * (width - len(e)) for e in enc], device=device)
        mask = (torch.arange(width)[None] < torch.tensor([len(e) for e in enc])[:, None]).long().to(device)
        timed(functools.partial(run_theirs, hf, ids, mask, 8, args.guidance), device, 1)  # warm-up, short
        fn = functools.partial(run_theirs, hf, ids, mask, steps, args.guidance)
        wall = statistics.median(timed(fn, device, 1 if args.quick else args.repeat))
        ours = {f"{r['dtype']} ({r['linear']} linear)": r["wall_s"] for r in emit.rows
                if r["arch"] == arch and r["batch"] == batch and r["impl"] == "fastencodec"}
        emit(dict(arch=arch, batch=batch, impl="transformers", dtype=dtype, wall_s=wall,
                  steps_per_s=steps / wall, realtime=args.seconds / wall,
                  weight_gb_s=weight_bytes * steps / wall / 1e9,
                  fastencodec_speedup={dtype: wall / ours_wall for dtype, ours_wall in ours.items()}))


def graph_us(fn, calls: int = 20, replays: int = 10) -> float:
    """Microseconds per call of ``fn`` (CUDA) with ``calls`` calls captured back to back in a CUDA
    graph (no launch overhead between them, as in our captured step); median of ``replays``."""
    graph, _ = capture(fn, calls)
    return cuda_ms(graph.replay, replays, warmup=0) * 1e3 / calls


def kernel_choices(arch: str, dtype: str, rows: int, device: torch.device) -> list[dict]:
    """One decoding step's pieces timed alone (``--kernels``, CUDA), with the alternatives: the
    self-attention of one frame over ``span`` cached frames (``scaled_dot_product_attention`` with
    the additive mask, as the step runs it, vs. matmul / softmax / matmul), and the linear layers of a
    step (``F.linear`` on the ``[out, in]`` weight, a matmul on the weight stored ``[in, out]``, and
    the few-row Triton kernel, also with the LayerNorm before the layer or the residual after it, as
    the captured step runs them); ``rows``: LM rows (twice the batch with guidance)."""
    import torch.nn.functional as F

    hidden, heads, ffn = (ARCHS[arch][k] for k in ("hidden_size", "num_attention_heads", "ffn_dim"))
    dt = getattr(torch, dtype)
    size = torch.empty((), dtype=dt).element_size()
    out = []
    q = torch.randn(rows, heads, 1, hidden // heads, device=device, dtype=dt)
    scale = (hidden // heads) ** -0.5
    for span in (64, 256, 512, 768):
        k = torch.randn(rows, heads, 768, hidden // heads, device=device, dtype=dt)
        v = torch.randn_like(k)
        mask = torch.zeros(1, 1, 1, span, device=device, dtype=dt)
        ks, vs = k[:, :, :span], v[:, :, :span]

        def sdpa(ks=ks, vs=vs, mask=mask):
            return F.scaled_dot_product_attention(q, ks, vs, attn_mask=mask)

        def math_attention(ks=ks, vs=vs, mask=mask):
            return torch.matmul(((q @ ks.transpose(-1, -2)) * scale + mask).softmax(-1), vs)

        moved = 2 * ks.numel() * size
        for name, fn in (("sdpa", sdpa), ("matmul-softmax-matmul", math_attention)):
            us = graph_us(fn)
            out.append(dict(arch=arch, dtype=dtype, rows=rows, piece=f"self-attention span {span}", choice=name,
                            us=us, gb_s=moved / us / 1e3))
    module = few_rows()
    few = module if module is not None and rows <= module.MAX_ROWS else None
    pieces = (("qkv", (3 * hidden, hidden)), ("out", (hidden, hidden)), ("fc1", (ffn, hidden)),
              ("fc2", (hidden, ffn)), ("head", (2048, hidden)))
    for piece, (n_out, n_in) in pieces:
        w = torch.randn(n_out, n_in, device=device, dtype=dt)
        wt = w.t().contiguous()
        xi = torch.randn(rows, n_in, device=device, dtype=dt)
        res = torch.randn(rows, n_out, device=device, dtype=dt)
        norm = torch.nn.LayerNorm(n_in, device=device, dtype=dt)
        choices = [("F.linear [out, in]", lambda xi=xi, w=w: F.linear(xi, w)),
                   ("matmul [in, out]", lambda xi=xi, wt=wt: xi @ wt),
                   ("(w @ x.T).T [out, in]", lambda xi=xi, w=w: (w @ xi.t()).t())]
        if few is not None:
            choices.append(("few-rows Triton", lambda xi=xi, w=w: few.few_rows_linear(xi, w)))
        if piece in ("qkv", "fc1", "head"):  # a LayerNorm comes before these in the step (and GELU after fc1)
            act = "gelu" if piece == "fc1" else None
            choices.append((f"torch LayerNorm + F.linear{' + GELU' if act else ''}",
                            lambda xi=xi, w=w, norm=norm, act=act: F.gelu(F.linear(norm(xi), w)) if act
                            else F.linear(norm(xi), w)))
            if few is not None:
                choices.append((f"few-rows Triton, LayerNorm{' and GELU' if act else ''} inside",
                                lambda xi=xi, w=w, norm=norm, act=act: few.few_rows_linear(xi, w, norm=norm,
                                                                                           activation=act)))
        else:  # the residual is added after these
            choices.append(("torch addmm (+ residual)", lambda xi=xi, w=w, res=res: torch.addmm(res, xi, w.t())))
            if few is not None:
                choices.append(("few-rows Triton (+ residual)",
                                lambda xi=xi, w=w, res=res: few.few_rows_linear(xi, w, residual=res)))
        with torch.inference_mode():
            for name, fn in choices:
                us = graph_us(fn)
                out.append(dict(arch=arch, dtype=dtype, rows=rows, piece=f"{piece} {n_in}->{n_out}", choice=name,
                                us=us, gb_s=w.numel() * size / us / 1e3))
    return out


class Table:
    """The rows so far: each printed as it comes and, with ``json``, the whole list rewritten there."""

    def __init__(self, json_path: Path | None):
        self.json_path, self.rows = json_path, []

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        show(row)
        if self.json_path:
            self.json_path.write_text(json.dumps(self.rows, indent=1))


def show(row: dict) -> None:
    """Print one row of the table (and the profile of a step when there is one)."""
    extra = (f"text {row['text_s'] * 1e3:.1f} ms, codec decode {row['codec_decode_s'] * 1e3:.0f} ms, "
             f"first call {row['first_call_s']:.2f} s") if "text_s" in row else \
        "fastencodec is " + ", ".join(f"{ratio:.2f}x faster in {dtype}" for dtype, ratio in
                                      row["fastencodec_speedup"].items())
    dtype = f"{row['dtype']} ({row['linear']} linear)" if "linear" in row else row["dtype"]
    print(f"| {row['arch']} | {row['batch']} | {row['impl']} | {dtype} | {row['wall_s']:.2f} | "
          f"{row['steps_per_s']:.1f} | {row['realtime']:.2f} | {row['weight_gb_s']:.0f} | {extra} |", flush=True)
    if "profile" in row:
        p = row["profile"]
        print(f"|   | step profile (window average): {p['step_us']:.0f} us/step = {p['kernel_us']:.0f} us in "
              f"{p['kernels_per_step']:.0f} kernels + {p['gap_us']:.0f} us between them; first / last span "
              f"{p['first_span_step_us']:.0f} / {p['last_span_step_us']:.0f} us/step; top: "
              + "; ".join(f"{name} {us:.0f} us x{n:.0f}" for name, us, n in p["top"]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small, batch 1, 1 s, one run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHS), default=["small", "medium"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--guidance", type=float, default=3.0)
    dtypes = ["float32", "bfloat16", "float16"]
    parser.add_argument("--dtype", nargs="+", choices=dtypes, default=["float32"], help="decoder LM dtypes of ours")
    parser.add_argument("--theirs-dtype", nargs="+", choices=dtypes,
                        help="transformers' dtypes (default: the first of --dtype); the first runs right after "
                             "ours for each architecture, the others after every architecture's first pass")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs after a warm-up; the median is shown")
    parser.add_argument("--linear", nargs="+", choices=["triton", "torch"], default=["triton"],
                        help="how ours runs a captured step's linear layers (few-row Triton kernel or cuBLAS)")
    parser.add_argument("--no-transformers", action="store_true", help="time ours only")
    parser.add_argument("--no-graphs", action="store_true", help="ours without CUDA graphs (eager steps)")
    parser.add_argument("--profile", action="store_true", help="also profile one captured step (GPU)")
    parser.add_argument("--kernels", action="store_true",
                        help="only time a step's pieces alone with their alternatives (CUDA; per arch, dtype, batch)")
    parser.add_argument("--json", type=Path, help="also write the rows here (rewritten after each row)")
    args = parser.parse_args()
    if args.quick:
        args.arch, args.batch, args.seconds, args.repeat = ["small"], [1], 1.0, 1
    args.theirs_dtype = args.theirs_dtype or args.dtype[:1]
    device = torch.device(args.device)
    tok = tokenizer()

    emit = Table(args.json)
    if args.kernels:
        print("| arch | dtype | rows | piece | choice | us per call | GB/s read |\n|---|---|---|---|---|---|---|")
        for arch in args.arch:
            for dtype in args.dtype:
                for batch in args.batch:
                    for row in kernel_choices(arch, dtype, batch * (2 if args.guidance > 1 else 1), device):
                        emit.rows.append(row)
                        print(f"| {arch} | {dtype} | {row['rows']} | {row['piece']} | {row['choice']} | "
                              f"{row['us']:.1f} | {row['gb_s']:.0f} |", flush=True)
        if args.json:
            args.json.write_text(json.dumps(emit.rows, indent=1))
        return

    print(f"# MusicGen, {args.seconds:g} s, guidance {args.guidance:g}, top-k 250, {'/'.join(args.dtype)}, {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    print("| arch | batch | impl | dtype | wall s | steps/s | x real time | weight GB/s | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    models = {}
    for arch in args.arch:
        models[arch] = bench_arch(arch, args, tok, device, emit)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for dtype in [] if args.no_transformers else args.theirs_dtype[1:]:
        for arch, hf in models.items():
            bench_theirs(hf, arch, dtype, args, tok, device, emit)


if __name__ == "__main__":
    main()
