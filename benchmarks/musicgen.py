"""MusicGen generation speed: fastencodec vs transformers, side by side in one run.

    python benchmarks/musicgen.py [--quick] [--device cuda] [--arch small medium] [--batch 1 8]
                                  [--seconds 10] [--guidance 3] [--dtype float32|bfloat16] [--repeat 2]

Random weights in the published architectures (shapes of facebook/musicgen-small and -medium:
t5-base text encoder, 24 x 1024 or 48 x 1536 decoder, 4 codebooks of 2048, the 32 kHz EnCodec), so
nothing is downloaded; speed does not depend on the weights. Both sample with top-k 250 and
classifier-free guidance in one doubled batch. Reported: wall time of a whole call (text encoder,
``seconds * 50 + 3`` decoder steps, codec decode), decoder steps per second, real-time factor, and the
decoder-weight bandwidth it implies (weight bytes read per step / step time: the bound at batch 1).
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

from fastencodec.musicgen import MusicGen  # noqa: E402

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


def build(arch: str):
    """transformers' model (random weights) in the published shapes."""
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
    return MusicgenForConditionalGeneration(config).eval()


def timed(fn, device: torch.device, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def run_ours(ours: MusicGen, prompts: list[str], seconds: float, guidance: float) -> None:
    ours.generate(prompts, seconds, guidance_scale=guidance, top_k=250, seed=0)


def run_theirs(hf, ids: torch.Tensor, mask: torch.Tensor, steps: int, guidance: float) -> None:
    with torch.inference_mode():
        hf.generate(input_ids=ids, attention_mask=mask, do_sample=True, guidance_scale=guidance, top_k=250,
                    max_new_tokens=steps)


def bench_arch(arch: str, args: argparse.Namespace, tok, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """Rows for one architecture, every batch size, ours and transformers; printed as they come."""
    hf = build(arch)
    ours = MusicGen.from_tensors(hf.config.to_dict(), hf.state_dict(), tok, device, dtype)
    ours.use_cuda_graphs = not args.no_graphs
    hf = hf.to(device, dtype if dtype != torch.float32 else None)
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.lm.parameters())
    frames = round(args.seconds * ours.frame_rate)
    steps = frames + ours.num_codebooks - 1
    rows = []
    for batch in args.batch:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        enc = [tok.encode(p).ids for p in prompts]
        width = max(map(len, enc))
        ids = torch.tensor([e + [0] * (width - len(e)) for e in enc], device=device)
        mask = (torch.arange(width)[None] < torch.tensor([len(e) for e in enc])[:, None]).long().to(device)
        impls = [("fastencodec", functools.partial(run_ours, ours, prompts, args.seconds, args.guidance))]
        if not args.no_transformers:
            impls.append(("transformers", functools.partial(run_theirs, hf, ids, mask, steps, args.guidance)))
        medians = {}
        for name, fn in impls:
            first = timed(fn, device, 1)[0]  # warm-up (CUDA graph capture, allocator, kernels)
            median = first if args.quick else statistics.median(timed(fn, device, args.repeat))
            medians[name] = median
            rows.append(dict(arch=arch, batch=batch, impl=name, wall_s=median, first_call_s=first,
                             steps_per_s=steps / median, realtime=args.seconds / median,
                             weight_gb_s=weight_bytes * steps / median / 1e9))
        for row in rows[-len(impls):]:
            row["speedup_vs_transformers"] = medians.get("transformers", float("nan")) / row["wall_s"]
            print(f"| {arch} | {batch} | {row['impl']} | {row['wall_s']:.2f} | {row['steps_per_s']:.1f} | "
                  f"{row['realtime']:.2f} | {row['weight_gb_s']:.0f} | {row['speedup_vs_transformers']:.2f}x |",
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small, batch 1, 1 s, one run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHS), default=["small", "medium"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs after a warm-up; the median is shown")
    parser.add_argument("--no-transformers", action="store_true", help="time ours only")
    parser.add_argument("--no-graphs", action="store_true", help="ours without CUDA graphs (eager steps)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.arch, args.batch, args.seconds, args.repeat = ["small"], [1], 1.0, 1
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    tok = tokenizer()
    rows = []
    print(f"# MusicGen, {args.seconds:g} s, guidance {args.guidance:g}, top-k 250, {args.dtype}, {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"{time.strftime('%Y-%m-%d')}")
    print("| arch | batch | impl | wall s | steps/s | x real time | weight GB/s | vs transformers |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in args.arch:
        rows += bench_arch(arch, args, tok, device, dtype)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
