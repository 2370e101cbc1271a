"""GPU throughput side by side: fastencodec per precision mode, Meta's ``encodec`` 0.1.1
(PyTorch defaults, TF32 forced on, bf16 autocast) and ``transformers``' EncodecModel.

``python benchmarks/throughput.py [--quick] [--out DIR] [--audio DIR]`` on one CUDA GPU. Cases:
24 kHz 6 kbps 64 x 10 s encode+decode (real-time factor), batch 1 x 10 s (ms per direction),
48 kHz stereo and 32 kHz, real-time factor against batch size (PNG), and the quality of every
mode (:mod:`fastencodec.quality`) on the seeded random model and on the ``.npy`` recordings in
``--audio`` (24 kHz mono float32, made by ``benchmarks/real_audio.py``). Timings are medians
of CUDA-event-timed runs after warm-up (fastencodec captures its CUDA graphs then). Writes
``throughput.json`` and ``throughput.md`` (and ``rtf_vs_batch.png``) to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastencodec import EnCodec  # noqa: E402
from fastencodec.engine.policy import PRECISIONS  # noqa: E402
from fastencodec.kernels import Networks  # noqa: E402
from fastencodec.quality import compare  # noqa: E402
from tests import support as reference  # noqa: E402

BANDWIDTH = 6.0


def cuda_ms(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    """Median milliseconds of ``fn()`` timed with CUDA events after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def capture(fn: Callable[[], object], calls: int = 1) -> tuple[torch.cuda.CUDAGraph, object]:
    """A CUDA graph of ``calls`` calls of ``fn`` back to back (one call first on a side stream, so
    kernels compile outside the capture) and what the last captured call returned."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            out = fn()
    return graph, out


class Flags:
    """PyTorch's TF32 flags set for one peer's run, restored after (the peers' configurations)."""

    def __init__(self, tf32: bool | None):
        self.tf32 = tf32

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        if self.tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def ours(model, precision: str, n_q: int):
    nets = Networks(model, precision)
    return (lambda x: nets.quantize(nets.encode(x), n_q)), (lambda c: nets.decode(nets.dequantize(c)))


def meta_impl(model, autocast: bool):
    model.set_target_bandwidth(BANDWIDTH)

    def encode(x):
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            return model.encode(x)

    def decode(frames):
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            return model.decode(frames)

    return encode, decode


def hf_impl(model):
    return (lambda x: model.encode(x, bandwidth=BANDWIDTH)), (
        lambda out: model.decode(out.audio_codes, out.audio_scales)
    )


@torch.inference_mode()
def time_pair(encode, decode, x: torch.Tensor, repeat: int, flags: bool | None = None) -> tuple[float, float]:
    with Flags(flags):
        tokens = encode(x)
        return cuda_ms(lambda: encode(x), repeat), cuda_ms(lambda: decode(tokens), repeat)


def speech(sample_rate: int, channels: int, batch: int, seconds: float) -> torch.Tensor:
    return torch.stack([reference.speech_like(sample_rate, channels, seconds, 1000 + i) for i in range(batch)])


def mode_quality(exact: Networks, model, audio: torch.Tensor, n_q: int) -> dict:
    """Every mode but ``exact`` against ``exact`` on ``audio`` (:func:`fastencodec.quality.compare`)."""
    return {p: compare(exact, Networks(model, p), audio, n_q).as_dict() for p in list(PRECISIONS)[1:]}


def stereo_48khz(mono: torch.Tensor) -> torch.Tensor:
    """A 24 kHz mono recording ``[samples]`` as 48 kHz stereo ``[1, 2, samples']`` (whole seconds):
    left the upsampled recording, right the same 3 ms later at 0.7 times the level."""
    from fastencodec.io.resample import resample

    up = torch.from_numpy(resample(mono.numpy(), 24_000, 48_000)).float()
    delay = 144  # 3 ms at 48 kHz
    right = torch.cat([torch.zeros(delay), up[:-delay]]) * 0.7
    n = up.numel() // 48_000 * 48_000
    return torch.stack([up[:n], right[:n]])[None]


def normalised_segments(audio: torch.Tensor) -> torch.Tensor:
    """``[batch, channels, whole seconds at 48 kHz]`` as non-overlapping 1 s segments (Meta's
    overlap by 1%; for comparing modes that does not matter), each divided by its mono RMS (plus
    1e-8) as Meta's model does: ``[segments, channels, 48000]``."""
    b, c, n = audio.shape
    segs = audio.reshape(b, c, n // 48_000, 48_000).permute(0, 2, 1, 3).reshape(-1, c, 48_000)
    volume = segs.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
    return segs / (volume + 1e-8)


@torch.no_grad()
def seeded_meta(kind: str, directory: Path):
    """Meta model with seeded codebooks (seeding on the GPU), saved; returns (model on cuda, path)."""
    from encodec.model import EncodecModel

    torch.manual_seed(1 if kind == "24khz" else 2)
    model = getattr(EncodecModel, f"encodec_model_{kind}")(pretrained=False).eval().cuda()

    def encode(a):
        return model.encoder(a.cuda()).cpu()

    embeds = [layer._codebook.embed for layer in model.quantizer.vq.layers]
    bias = model.encoder.model[-1].conv.conv.bias
    reference.center_embeddings(lambda a: encode(a).cuda(), bias, model.sample_rate, model.channels)
    cpu_embeds = [e.cpu() for e in embeds]
    reference.seed_codebooks(encode, cpu_embeds, model.sample_rate, model.channels)
    for e, c in zip(embeds, cpu_embeds):
        e.copy_(c)
    name = {"24khz": "encodec_24khz-d7cc33bc.th", "48khz": "encodec_48khz-7e698e3e.th"}[kind]
    path = directory / name
    torch.save(model.state_dict(), path)
    return model, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batch sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--audio", type=Path, help="folder of 24 kHz mono float32 .npy recordings")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    parser.add_argument(
        "--replot", type=Path, metavar="JSON", help="only redraw the plot and tables of a throughput.json (no GPU)"
    )
    args = parser.parse_args()
    if args.replot is not None:  # e.g. a device run without matplotlib
        report = json.loads(args.replot.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        plot(report["rtf_vs_batch_24khz"], args.out / "rtf_vs_batch.png", report)
        write_markdown(report, args.out / "throughput.md")
        return
    reference.install_torchaudio_standin()
    repeat = 3 if args.quick else 7
    skip = set(args.skip.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }
    tmp = Path(tempfile.mkdtemp())
    t0 = time.time()
    meta24, path24 = seeded_meta("24khz", tmp)
    model24 = EnCodec.from_pretrained(path24, device="cuda").model
    print(f"models ready in {time.time() - t0:.0f} s", flush=True)

    def log(key, value):
        report[key] = value
        print(key, json.dumps(value), flush=True)
        (args.out / "throughput.json").write_text(json.dumps(report, indent=1))

    # -- 24 kHz 64 x 10 s ------------------------------------------------------------
    x64 = speech(24_000, 1, 64, 10.0).cuda()
    audio_s = 640.0
    rows = {}
    impls = {f"fastencodec {p}": (ours(model24, p, 8), None) for p in PRECISIONS}
    impls["Meta default (cuDNN TF32)"] = (meta_impl(meta24, False), None)
    impls["Meta TF32 (matmul+cuDNN)"] = (meta_impl(meta24, False), True)
    impls["Meta bf16 autocast"] = (meta_impl(meta24, True), None)
    if "hf" not in skip:
        from transformers import EncodecConfig, EncodecModel

        hf = EncodecModel(EncodecConfig()).eval().cuda()
        impls["transformers"] = (hf_impl(hf), None)
    for name, ((enc, dec), flags) in impls.items():
        if "main" in skip:
            break
        e, d = time_pair(enc, dec, x64, repeat, flags)
        rows[name] = {"encode_ms": e, "decode_ms": d, "rtf": audio_s / ((e + d) / 1000)}
        print(name, rows[name], flush=True)
    if rows:
        log("batch64x10s_24khz", rows)
    # -- batch 1 x 10 s ----------------------------------------------------------------
    x1 = x64[:1].contiguous()
    rows = {}
    for name, ((enc, dec), flags) in impls.items():
        if "batch1" in skip:
            break
        e, d = time_pair(enc, dec, x1, repeat * 3, flags)
        rows[name] = {"encode_ms": e, "decode_ms": d}
    if rows:
        log("batch1x10s_24khz_ms", rows)
    # -- quality on GPU ----------------------------------------------------------------
    exact = Networks(model24, "exact")
    recordings = {}
    if args.audio is not None:
        import numpy as np

        for f in sorted(args.audio.glob("*.npy")):
            recordings[f.stem] = torch.from_numpy(np.load(f)).float().reshape(-1)
    if "quality" not in skip:
        sources = {"speech-like (random model)": speech(24_000, 1, 16, 10.0)}
        sources |= {name: a[: a.numel() // 24_000 * 24_000].reshape(1, 1, -1) for name, a in recordings.items()}
        cpu_model = EnCodec.from_pretrained(path24).model
        quality = {}
        for src, audio in sources.items():
            quality[src] = mode_quality(exact, model24, audio, 8)
            short = audio[..., : 10 * 24_000]
            quality[src]["exact GPU vs exact CPU"] = compare(Networks(cpu_model, "exact"), exact, short, 8).as_dict()
            quality[src]["bf16 CPU vs exact CPU"] = compare(
                Networks(cpu_model, "exact"), Networks(cpu_model, "bf16"), short, 8
            ).as_dict()
        log("quality_gpu", quality)
    # -- where the time goes (eager, per step, CUDA events) ---------------------------------
    if "profile" not in skip:
        log("profile_64x10s_ms", {p: profile(model24, p, x64) for p in PRECISIONS})
    # our 24 kHz networks' CUDA graphs keep their activations' memory (a pool per network): freed here,
    # before other models' graphs (the sweep builds fresh networks)
    for name in [n for n in impls if n.startswith("fastencodec")]:
        del impls[name]
    del exact
    gc.collect()
    torch.cuda.empty_cache()
    # -- 48 kHz stereo and 32 kHz --------------------------------------------------------
    if "other" not in skip:
        rows = {}
        meta48, path48 = seeded_meta("48khz", tmp)  # seeded codebooks: quality below needs them
        model48 = EnCodec.from_pretrained(path48, device="cuda").model
        x48 = speech(48_000, 2, 16, 10.0).cuda()
        for name, make in {  # built one at a time: each mode's graphs are freed before the next
            **{f"fastencodec {p}": functools.partial(ours, model48, p, 4) for p in PRECISIONS},
            "Meta default": functools.partial(meta_impl, meta48, False),
        }.items():
            enc, dec = make()
            if name.startswith("fastencodec"):  # the model's 1 s segments as a batch, normalised as Meta does
                e, d = time_pair(enc, dec, normalised_segments(x48), repeat)
            else:
                e, d = time_pair(enc, dec, x48, repeat)
            rows[name] = {"encode_ms": e, "decode_ms": d, "rtf": 160.0 / ((e + d) / 1000)}
            del enc, dec
            gc.collect()
            torch.cuda.empty_cache()
        log("batch16x10s_48khz_stereo", rows)
        if "quality" not in skip:  # 6 kbps = 4 codebooks; Meta's per-segment normalisation
            sources = {"speech-like stereo (random model)": speech(48_000, 2, 8, 10.0)}
            sources |= {name: stereo_48khz(a) for name, a in recordings.items()}
            exact48 = Networks(model48, "exact")
            log(
                "quality_gpu_48khz",
                {src: mode_quality(exact48, model48, normalised_segments(a), 4) for src, a in sources.items()},
            )
            del exact48
        from transformers import EncodecConfig, EncodecModel

        hf32 = EncodecModel(EncodecConfig(**{k: v for k, v in reference.HF_32KHZ.items() if k != "model_type"}))
        hf32 = hf32.eval().cuda()
        d32 = tmp / "hf32"
        hf32.save_pretrained(d32)
        model32 = EnCodec.from_pretrained(d32, device="cuda").model
        x32 = speech(32_000, 1, 64, 10.0).cuda()
        rows = {}
        for name, make in {
            **{f"fastencodec {p}": functools.partial(ours, model32, p, 4) for p in PRECISIONS},
            "transformers": lambda: (
                lambda x: hf32.encode(x, bandwidth=2.2),
                lambda o: hf32.decode(o.audio_codes, o.audio_scales),
            ),
        }.items():
            enc, dec = make()
            e, d = time_pair(enc, dec, x32, repeat)
            rows[name] = {"encode_ms": e, "decode_ms": d, "rtf": 640.0 / ((e + d) / 1000)}
            del enc, dec
            gc.collect()
            torch.cuda.empty_cache()
        log("batch64x10s_32khz", rows)
    # -- real-time factor against batch size ---------------------------------------------
    if "sweep" not in skip:
        sizes = [1, 4, 16, 64, 256, 1024] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        sweep: dict = {}
        names = ["fastencodec tf32", "fastencodec fp16", "Meta default (cuDNN TF32)"]
        if not args.quick:
            names += ["fastencodec exact", "fastencodec bf16"]
        for name in names:
            sweep[name] = {}
            for b in sizes:
                if b > 256 and name.startswith("Meta"):
                    break
                if name.startswith("fastencodec"):  # fresh networks: graphs of earlier sizes freed
                    (enc, dec), flags = ours(model24, name.split()[-1], 8), None
                else:
                    (enc, dec), flags = impls[name]
                try:
                    x = speech(24_000, 1, 1, 10.0).expand(b, 1, -1).contiguous().cuda()
                    e, d = time_pair(enc, dec, x, 2 if b >= 256 else repeat, flags)
                except torch.OutOfMemoryError:
                    break
                sweep[name][b] = b * 10.0 / ((e + d) / 1000)
                del x
                torch.cuda.empty_cache()
            print(name, sweep[name], flush=True)
        log("rtf_vs_batch_24khz", sweep)
        try:
            plot(sweep, args.out / "rtf_vs_batch.png", report)
        except ImportError as exc:  # matplotlib missing: the JSON still has the numbers
            print(f"no plot: {exc}")
    write_markdown(report, args.out / "throughput.md")
    print((args.out / "throughput.md").read_text())


@torch.inference_mode()
def profile(model, precision: str, x: torch.Tensor) -> dict:
    """Milliseconds per kind of step of one eager encode and decode (CUDA events around each step)."""
    from fastencodec.kernels.cuda import CudaNetwork
    from fastencodec.kernels.plan import flatten

    out: dict = {}
    nets = Networks(model, precision)
    inputs = {"encoder": x, "decoder": nets.dequantize(nets.quantize(nets.encode(x), 8))}
    for part, data in inputs.items():
        net = CudaNetwork(flatten(getattr(model, part).layers), precision, part)
        net(data)  # compile
        times: dict = {}
        original = {name: getattr(net, name) for name in ("_conv", "_conv_transpose", "_lstm")}

        def timed(name, fn, times=times):
            def wrapper(*a, **kw):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                result = fn(*a, **kw)
                end.record()
                end.synchronize()
                if name == "_conv":
                    key = f"conv {a[0].conv.in_channels}->{a[0].conv.out_channels} k{a[0].conv.kernel_size[0]}"
                else:
                    key = name.strip("_")
                times[key] = times.get(key, 0.0) + start.elapsed_time(end)
                return result

            return wrapper

        for name, fn in original.items():
            setattr(net, name, timed(name, fn))
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        net(data)
        end.record()
        end.synchronize()
        times["total (with event syncs)"] = start.elapsed_time(end)
        out[part] = {k: round(v, 2) for k, v in sorted(times.items(), key=lambda kv: -kv[1])}
    embeddings = nets.encode(x)
    out["quantizer (8 codebooks)"] = round(cuda_ms(lambda: nets.quantize(embeddings, 8), 3), 2)
    return out


def plot(sweep: dict, path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in sweep.items():
        ax.plot([int(b) for b in points], list(points.values()), marker="o", label=name)  # JSON keys are strings
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (10 s items)")
    ax.set_ylabel("real-time factor (encode + decode)")
    ax.set_title(f"24 kHz, 6 kbps, {report['gpu']}, {report['date'][:10]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_markdown(report: dict, path: Path) -> None:
    lines = [f"# GPU throughput ({report['gpu']}, torch {report['torch']}, {report['date']})", ""]
    base = report.get("batch64x10s_24khz", {}).get("Meta default (cuDNN TF32)", {}).get("rtf")
    for key in ("batch64x10s_24khz", "batch16x10s_48khz_stereo", "batch64x10s_32khz"):
        if key in report:
            lines += [
                f"## {key}",
                "",
                "| implementation | encode ms | decode ms | real-time factor | vs Meta default |",
                "|---|---:|---:|---:|---:|",
            ]
            for name, r in report[key].items():
                ratio = f"{r['rtf'] / base:.2f}x" if base and key == "batch64x10s_24khz" else ""
                lines.append(f"| {name} | {r['encode_ms']:.1f} | {r['decode_ms']:.1f} | {r['rtf']:,.0f}x | {ratio} |")
            lines.append("")
    if "batch1x10s_24khz_ms" in report:
        lines += ["## batch 1 x 10 s, 24 kHz (ms)", "", "| implementation | encode | decode |", "|---|---:|---:|"]
        lines += [
            f"| {n} | {r['encode_ms']:.2f} | {r['decode_ms']:.2f} |" for n, r in report["batch1x10s_24khz_ms"].items()
        ]
        lines.append("")
    for key, title in (("quality_gpu", "24 kHz, 8 codebooks"), ("quality_gpu_48khz", "48 kHz stereo, 4 codebooks")):
        if key not in report:
            continue
        lines += [
            f"## quality ({title}, 6 kbps)",
            "",
            "| audio | mode vs reference | tokens equal (cb0 / mean) | excess distortion | decoder SNR dB | ok |",
            "|---|---|---:|---:|---:|---|",
        ]
        for src, modes in report[key].items():
            for mode, q in modes.items():
                agree = q["agreement"]
                lines.append(
                    f"| {src} | {mode} | {agree[0]:.3f} / {sum(agree) / len(agree):.3f} | "
                    f"{100 * q['excess_distortion']:.3f}% | {q['decoder_snr_db']:.1f} | {q['qualifies']} |"
                )
        lines.append("")
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
