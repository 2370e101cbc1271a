"""Side-by-side benchmark of fastencodec against Meta's ``encodec`` and ``transformers``.

All three implementations run in one process on the same audio, with random weights
(codebooks seeded as in ``tests/reference.py``). Each timing is the median wall-clock
time of several runs after a warm-up; on CUDA every run ends with a synchronisation.
Peak memory is measured per implementation: peak RSS (sampled every 2 ms) of a fresh
subprocess that imports only that implementation on CPU (total, and the growth during
the call), and
``torch.cuda.max_memory_allocated`` above the pre-call level on CUDA.

Entry points: ``benchmarks/bench_cpu.py`` and ``benchmarks/bench_gpu.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from fastencodec import EnCodec  # noqa: E402
from fastencodec.bench import median_seconds  # noqa: E402
from fastencodec.engine.policy import PRECISIONS, cudnn_precision  # noqa: E402
from fastencodec.kernels import check_precision  # noqa: E402
from fastencodec.quality import compare  # noqa: E402
from tests import support as reference  # noqa: E402

BANDWIDTH = 6.0
"""kbps for every run (8 codebooks at 24 kHz, 4 at 48 kHz)."""


# -- implementations -----------------------------------------------------------------
@dataclass
class Impl:
    """One codec under test: ``encode(audio) -> tokens`` and ``decode(tokens) -> audio``."""

    name: str
    encode: Callable[[torch.Tensor], Any]
    decode: Callable[[Any], torch.Tensor]
    codes: Callable[[Any], torch.Tensor]
    """Tokens as int64 ``[batch, codebooks, frames]`` on CPU."""


def ours(path: Path, device: str, precision: str = "exact", name: str = "fastencodec") -> Impl:
    codec = EnCodec.from_pretrained(path, device=device, precision=precision)
    return Impl(
        name,
        lambda x: codec.encode(x, BANDWIDTH),
        codec.decode,
        lambda tokens: torch.as_tensor(tokens.codes).cpu(),
    )


def meta(model: torch.nn.Module, device: str) -> Impl:
    model = model.to(device)
    model.set_target_bandwidth(BANDWIDTH)

    @torch.inference_mode()
    def encode(x: torch.Tensor) -> Any:
        return model.encode(x)

    @torch.inference_mode()
    def decode(frames: Any) -> torch.Tensor:
        return model.decode(frames)

    return Impl("encodec (Meta)", encode, decode, lambda frames: torch.cat([c for c, _ in frames], -1).cpu())


def hf(model: torch.nn.Module, device: str) -> Impl:
    model = model.to(device)

    @torch.inference_mode()
    def encode(x: torch.Tensor) -> Any:
        return model.encode(x, bandwidth=BANDWIDTH)

    @torch.inference_mode()
    def decode(out: Any) -> torch.Tensor:
        return model.decode(out.audio_codes, out.audio_scales)[0]

    return Impl("transformers", encode, decode, lambda out: out.audio_codes[0].cpu())


# -- timing --------------------------------------------------------------------------
@dataclass
class Row:
    """Timings of one implementation on one case (seconds), plus optional peak memory (bytes)."""

    case: str
    impl: str
    seconds_audio: float
    encode_s: float
    decode_s: float
    peak_bytes: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def rtf(self) -> float:
        """Audio seconds coded (encode+decode) per wall-clock second."""
        return self.seconds_audio / (self.encode_s + self.decode_s)


def time_impl(impl: Impl, case: str, audio: torch.Tensor, sample_rate: int, device: str, repeat: int) -> Row:
    """Encode and decode ``audio`` ``[batch, channels, samples]`` (already on ``device``).

    Two warm-up runs on CUDA: fastencodec captures a CUDA graph on the second sight of a shape.
    """
    tokens = impl.encode(audio)
    warmup = 2 if device.startswith("cuda") else 1
    enc = median_seconds(lambda: impl.encode(audio), torch.device(device), repeat, warmup)
    dec = median_seconds(lambda: impl.decode(tokens), torch.device(device), repeat, warmup)
    seconds = audio.shape[0] * audio.shape[-1] / sample_rate
    return Row(case, impl.name, seconds, enc, dec)


def gpu_peak(impl: Impl, audio: torch.Tensor) -> int:
    """Peak CUDA bytes allocated above the pre-call level during one encode+decode."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    impl.decode(impl.encode(audio))
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


# -- precision modes ------------------------------------------------------------------
def mode_quality(path: Path, device: str, precision: str, audio: torch.Tensor) -> dict[str, Any]:
    """:func:`fastencodec.quality.compare` of ``precision`` against ``exact`` (same device) on
    ``audio`` ``[batch, 1, samples]`` at 24 kHz: per-codebook agreement, excess distortion, decoder SNR."""
    exact = EnCodec.from_pretrained(path, device=device).engine.networks
    mode = EnCodec.from_pretrained(path, device=device, precision=precision).engine.networks
    n_q = exact.model.config.codebooks_for_bandwidth(BANDWIDTH)
    return compare(exact, mode, audio, n_q).as_dict()


# -- CPU peak memory in a subprocess -------------------------------------------------
def rss_child(impl_name: str, model_path: str, seconds: float) -> None:
    """Body of the memory subprocess: load one implementation, encode+decode, print JSON."""
    torch.manual_seed(0)
    if impl_name == "fastencodec":
        impl = ours(Path(model_path), "cpu")
    elif impl_name == "meta":
        reference.install_torchaudio_standin()
        from encodec.model import EncodecModel

        model = EncodecModel.encodec_model_24khz(pretrained=False).eval()
        model.load_state_dict(torch.load(model_path))
        impl = meta(model, "cpu")
    else:
        from transformers import EncodecModel

        impl = hf(EncodecModel.from_pretrained(model_path).eval(), "cpu")
    audio = reference.speech_like(24_000, 1, seconds)[None]
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:  # ru_maxrss would also count peaks from imports and model building
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    impl.decode(impl.encode(audio))
    done.set()
    sampler.join()
    peak = max(peak, process.memory_info().rss)
    print(json.dumps({"peak_bytes": peak, "before_bytes": before}))


def cpu_peak(impl_name: str, model_path: Path, seconds: float) -> dict[str, int]:
    """Peak RSS (bytes) of a fresh process doing one encode+decode, and its RSS before the call."""
    cmd = [sys.executable, __file__, "--rss-child", impl_name, str(model_path), str(seconds)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report --------------------------------------------------------------------------
def environment(device: str) -> dict[str, str]:
    """Machine, date and library versions for the report header."""
    reference.install_torchaudio_standin()
    import encodec
    import transformers

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "encodec": getattr(encodec, "__version__", "0.1.1"),
        "transformers": transformers.__version__,
        "cpu": _cpu_name(),
        "cpu threads": str(torch.get_num_threads()),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = str(torch.version.cuda)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 1 else f"{seconds * 1e3:.0f}"


def table(rows: list[Row], baseline: str = "encodec (Meta)") -> str:
    """Markdown table: times in ms, real-time factor, speed-up of each row over ``baseline``."""
    lines = [
        "| case | implementation | encode ms | decode ms | x real time | encode speed-up | decode speed-up | peak |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = {r.case: r for r in rows if r.impl == baseline}
    for r in rows:
        b = base.get(r.case)
        enc_up = f"{b.encode_s / r.encode_s:.2f}x" if b else ""
        dec_up = f"{b.decode_s / r.decode_s:.2f}x" if b else ""
        mem = ""
        if r.peak_bytes is not None:
            mem = f"{r.peak_bytes / 2**20:.0f} MiB"
            if "rss_before_call_bytes" in r.notes:
                mem += f" (+{(r.peak_bytes - r.notes['rss_before_call_bytes']) / 2**20:.0f} in call)"
        times = f"{_ms(r.encode_s)} | {_ms(r.decode_s)} | {r.rtf:.0f}"
        lines.append(f"| {r.case} | {r.impl} | {times} | {enc_up} | {dec_up} | {mem} |")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, title: str) -> None:
    """Encode+decode time versus audio length (batch 1, 24 kHz) for every implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for impl in dict.fromkeys(r.impl for r in rows):
        pts = sorted((r.seconds_audio, r.encode_s + r.decode_s) for r in rows if r.impl == impl)
        ax.plot([p[0] for p in pts], [p[1] * 1e3 for p in pts], marker="o", label=impl)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("audio length (s), batch 1, 24 kHz, 6 kbps")
    ax.set_ylabel("encode + decode time (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class Suite:
    """Random-weight models shared by the cases of one run."""

    device: str
    repeat: int
    workdir: Path
    impls24: list[Impl] = field(default_factory=list)
    path24: Path | None = None
    hf24_dir: Path | None = None
    meta48: torch.nn.Module | None = None
    path48: Path | None = None

    def __post_init__(self) -> None:
        for sub in ("meta24", "hf24", "meta48"):
            (self.workdir / sub).mkdir()
        meta24, self.path24 = reference.meta_model("24khz", self.workdir / "meta24")
        hf24, self.hf24_dir = reference.hf_model(reference.HF_24KHZ, self.workdir / "hf24")
        self.impls24 = [ours(self.path24, self.device), meta(meta24, self.device), hf(hf24, self.device)]
        self.meta48, self.path48 = reference.meta_model("48khz", self.workdir / "meta48")

    def run_24k(self, case: str, batch: int, seconds: float, repeat: int | None = None) -> list[Row]:
        audio = torch.stack([reference.speech_like(24_000, 1, seconds, seed=i) for i in range(batch)])
        audio = audio.to(self.device)
        rows = [time_impl(impl, case, audio, 24_000, self.device, repeat or self.repeat) for impl in self.impls24]
        agree = token_agreement(self.impls24[0], self.impls24[1], audio)
        rows[0].notes["tokens_equal_meta"] = agree
        return rows

    def run_48k(self, seconds: float) -> list[Row]:
        audio = reference.speech_like(48_000, 2, seconds)[None].to(self.device)
        impls = [ours(self.path48, self.device), meta(self.meta48, self.device)]
        case = f"48 kHz stereo, b1, {seconds:g} s"
        rows = [time_impl(impl, case, audio, 48_000, self.device, self.repeat) for impl in impls]
        rows[0].notes["tokens_equal_meta"] = token_agreement(impls[0], impls[1], audio)
        return rows


def token_agreement(a: Impl, b: Impl, audio: torch.Tensor) -> float:
    """Fraction of equal tokens between two implementations on ``audio``, both in true float32
    (cuDNN's TF32 off: it is on by default and moves a few percent of tokens on its own)."""
    with cudnn_precision(False):
        ca, cb = a.codes(a.encode(audio)), b.codes(b.encode(audio))
    return (ca == cb).float().mean().item()


def main(device: str, argv: list[str] | None = None) -> None:
    """Run the suite on ``device`` ("cpu" or "cuda"), print tables, write results and plot."""
    parser = argparse.ArgumentParser(description=f"fastencodec vs encodec vs transformers on {device}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="short lengths only (smoke test)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = device.startswith("cuda")
    tag = "gpu" if cuda else "cpu"
    env = environment(device)
    print(" | ".join(f"{k}: {v}" for k, v in env.items()), flush=True)
    lengths = [1.0, 2.0] if args.quick else [1.0, 5.0, 10.0, 30.0, 60.0]
    main_len = lengths[-1] if args.quick else 10.0
    long_len = lengths[-1]
    with tempfile.TemporaryDirectory() as tmp:
        suite = Suite(device, args.repeat, Path(tmp))
        sweep: list[Row] = []
        for seconds in lengths:
            repeat = max(3, args.repeat // 2) if seconds >= 30 and not cuda else None
            sweep += suite.run_24k(f"24 kHz, b1, {seconds:g} s", 1, seconds, repeat)
            print(table(sweep[-3:]), flush=True)
        extra: list[Row] = []
        if cuda:
            batch = 2 if args.quick else 64
            extra += suite.run_24k(f"24 kHz, b{batch} x {main_len:g} s", batch, main_len)
            print(table(extra[-3:]), flush=True)
        extra += suite.run_48k(main_len)
        print(table(extra[-2:]), flush=True)

        # peak memory, encode+decode of the longest length, batch 1
        names = {"fastencodec": "fastencodec", "meta": "encodec (Meta)", "hf": "transformers"}
        long_rows = {r.impl: r for r in sweep if r.seconds_audio == long_len}
        audio = reference.speech_like(24_000, 1, long_len)[None].to(device)
        for key, impl_name in names.items():
            if cuda:
                impl = next(i for i in suite.impls24 if i.name == impl_name)
                long_rows[impl_name].peak_bytes = gpu_peak(impl, audio)
            else:
                path = {"fastencodec": suite.path24, "meta": suite.path24, "hf": suite.hf24_dir}[key]
                rss = cpu_peak(key, path, long_len)
                long_rows[impl_name].peak_bytes = rss["peak_bytes"]
                long_rows[impl_name].notes["rss_before_call_bytes"] = rss["before_bytes"]

        # precision modes: quality against exact, and speed beside the reference's
        precision: dict[str, dict[str, Any]] = {}
        by_impl_len = {(r.impl, r.seconds_audio): r for r in sweep}
        prec_audio = reference.speech_like(24_000, 1, main_len)[None].to(device)
        for mode in PRECISIONS:
            if mode == "exact":
                continue
            try:
                check_precision(mode, device)
            except ValueError as err:
                precision[mode] = {"error": str(err)}
                continue
            stats = mode_quality(suite.path24, device, mode, prec_audio)
            impl = ours(suite.path24, device, mode, name=f"fastencodec {mode}")
            for seconds in sorted({main_len, long_len}):
                audio = reference.speech_like(24_000, 1, seconds)[None].to(device)
                repeat = max(3, args.repeat // 2) if seconds >= 30 and not cuda else args.repeat
                row = time_impl(impl, f"24 kHz, b1, {seconds:g} s", audio, 24_000, device, repeat)
                meta_row = by_impl_len[("encodec (Meta)", seconds)]
                stats[f"{seconds:g}s"] = {
                    "encode_s": row.encode_s,
                    "decode_s": row.decode_s,
                    "speedup_encode": meta_row.encode_s / row.encode_s,
                    "speedup_decode": meta_row.decode_s / row.decode_s,
                }
            precision[mode] = stats
            print(mode, stats, flush=True)

    report = [f"## {tag.upper()} results", "", " | ".join(f"{k}: {v}" for k, v in env.items()), ""]
    report += ["### Batch 1, 24 kHz, 6 kbps, time versus length", "", table(sweep), ""]
    report += ["### Other cases", "", table(extra), ""]
    by_len = {(r.impl, r.seconds_audio): r for r in sweep}
    if not args.quick:
        report += ["### Linearity (time at 60 s / time at 10 s)", ""]
        for impl in dict.fromkeys(r.impl for r in sweep):
            a, b = by_len[(impl, 10.0)], by_len[(impl, 60.0)]
            report.append(f"- {impl}: encode {b.encode_s / a.encode_s:.2f}x, decode {b.decode_s / a.decode_s:.2f}x")
        report.append("")
    report += ["### Token agreement with Meta (float32)", ""]
    agree = [r for r in sweep + extra if "tokens_equal_meta" in r.notes]
    report += [f"- {r.case}: {r.notes['tokens_equal_meta']:.4%}" for r in agree]
    report += ["", f"### Precision modes (fastencodec, 24 kHz, b1, {main_len:g} s audio, against exact)", ""]
    for mode, stats in precision.items():
        if "error" in stats:
            report.append(f"- {mode}: not run here ({stats['error']})")
            continue
        agree = ", ".join(f"{a:.1%}" for a in stats["agreement"])
        speed = "; ".join(
            f"{key}: encode {v['encode_s'] * 1e3:.0f} ms ({v['speedup_encode']:.2f}x Meta), "
            f"decode {v['decode_s'] * 1e3:.0f} ms ({v['speedup_decode']:.2f}x Meta)"
            for key, v in stats.items()
            if key.endswith("s") and isinstance(v, dict)
        )
        verdict = "qualifies" if stats["qualifies"] else "does not qualify"
        report.append(
            f"- {mode}: tokens equal per codebook {agree}; excess distortion {stats['excess_distortion']:.3%}; "
            f"decoder SNR {stats['decoder_snr_db']:.1f} dB; {verdict} (<= 0.5%, >= 45 dB); {speed}"
        )
    text = "\n".join(report) + "\n"
    print(text)
    (args.out / f"results_{tag}.md").write_text(text)
    rows_json = [r.__dict__ | {"rtf": r.rtf} for r in sweep + extra]
    blob = {"env": env, "rows": rows_json, "precision": precision}
    (args.out / f"results_{tag}.json").write_text(json.dumps(blob, indent=1))
    try:
        plot(sweep, args.out / f"time_vs_length_{tag}.png", f"{env.get('gpu', env['cpu'])}")
    except ImportError as exc:  # matplotlib (extra "bench") missing: the JSON and tables have the numbers
        print(f"no plot: {exc}")


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--rss-child":
    rss_child(sys.argv[2], sys.argv[3], float(sys.argv[4]))
