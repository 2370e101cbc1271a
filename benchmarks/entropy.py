"""Entropy coding: ours ("lm": Meta-compatible, "lmp1": portable) against Meta's encodec, side by side.

Run from the repository root::

    python benchmarks/entropy.py [--seconds 3] [--threads 1 0] [--device cpu|cuda] [--json out.json]

For Meta's 24 kHz model at 6 kbps (8 codebooks) and its 48 kHz model at 6 kbps (4 codebooks,
1 s segments), on one thread and on torch's default thread count (``0``), it times Meta's
entropy coding (``compress(use_lm=True)`` minus ``compress(use_lm=False)``, and the same for
``decompress``) and ours on the same codes, checks that our ``lm`` file is Meta's byte for byte
and that both of our modes decode back to the codes, and prints one table: seconds, speed-up
over Meta, and real-time factor per core (audio seconds / (coding seconds x threads)); then the
seconds Meta's LM forward takes within its LM decoding (timed in an extra run), which any decoder
that reproduces Meta's float32 CDFs must spend too.

Models and LMs have *random* weights (the published ones are not reachable offline): sizes
show the coders work, not the savings Meta's trained LM gives. Audio: espeak-ng speech when
installed, else a speech-like signal. One-time costs are paid before timing: numba compiling (or
loading its cache) and the ``lm`` coder's check, per codebook count and thread count, that its
batched encoding pass gives the frame-by-frame bits. CPU times are noisy when other processes run:
the load average is printed with the table.

``--device cuda``: Meta's model, LM and coder on the GPU (``compress``/``decompress`` with the audio
and model there), ours with the LM on the GPU (``lm``: Meta's bits there, CUDA graphs; ``lmp1``: its
torch block pass there). Ours is timed twice: the first run of a coder pays the one-time costs (each
window size runs eagerly, then is captured as a CUDA graph on its second use), the second replays;
the table shows the second, the first is listed below it. Then the replay time of one frame's
transformer graph for the smallest and the largest attention window (what a key/value cache
could at most save). The thread count does not apply (one host thread drives the GPU).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import support  # noqa: E402

support.install_torchaudio_standin()

from fastencodec.entropy import MetaLMCoder, PortableCoder  # noqa: E402
from fastencodec.formats.ecdc import EcdcWriter  # noqa: E402
from fastencodec.io.resample import resample  # noqa: E402

meta_compress = importlib.import_module("encodec.compress")

TEXT = (
    "The quick brown fox jumps over the lazy dog. Speech codecs squeeze voices into a few kilobits per "
    "second, and an entropy coder driven by a small language model squeezes the tokens further still."
)
CASES = [("encodec_24khz", 24000, 1, 6.0), ("encodec_48khz", 48000, 2, 6.0)]
LAYOUTS = support.LM_LAYOUTS


def audio_for(rate: int, channels: int, seconds: float) -> tuple[str, torch.Tensor]:
    """(name, ``[channels, samples]``): espeak-ng speech looped to ``seconds``, else a speech-like signal."""
    if shutil.which("espeak-ng") is None:
        return "speech-like signal", support.speech_like(rate, channels, seconds, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(path), TEXT], check=True, capture_output=True)
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = resample(torch.from_numpy(audio.T.copy()), sr, rate)[0]
    n = int(seconds * rate)
    audio = 0.8 * audio.repeat(-(-n // audio.shape[0]))[:n]
    return "espeak-ng speech", audio.expand(channels, n).contiguous()


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def ours_file(name: str, length: int, segments, coder) -> bytes:
    """Our ``.ecdc`` file of ``segments`` (codes, scale), written as Meta's compress writes it."""
    out = io.BytesIO()
    writer = EcdcWriter(out, model_name=name, num_codebooks=segments[0][0].shape[0], bits_per_codebook=10,
                        normalize=LAYOUTS[name].normalize, audio_length=length, coder=coder, checksum=False)
    for codes, scale in segments:
        writer.begin_segment(scale)
        writer.write_frames(codes)
        writer.end_segment()
    writer.finish()
    return out.getvalue()


def ours_encode(coder, segments) -> list[bytes]:
    coded = []
    for codes, _ in segments:
        out = io.BytesIO()
        encoder = coder.encoder(out, codes.shape[0])
        encoder.push(codes)
        encoder.finish()
        coded.append(out.getvalue())
    return coded


def ours_decode(coder, coded: list[bytes], segments) -> list[np.ndarray]:
    return [coder.decoder(io.BytesIO(data), c.shape[0], c.shape[1]).read(c.shape[1])
            for data, (c, _) in zip(coded, segments)]


def run_case(name: str, rate: int, channels: int, bandwidth: float, seconds: float, threads: int, models,
             device: str = "cpu") -> dict:
    model, coders = models[name]
    model.set_target_bandwidth(bandwidth)
    signal, wav = audio_for(rate, channels, seconds)
    wav = wav.to(device)
    torch.set_num_threads(threads)
    used = torch.get_num_threads()
    with torch.no_grad():
        segments = [(c[0].cpu().numpy(), None if s is None else float(s)) for c, s in model.encode(wav[None])]
    warm = [(segments[0][0][:, :3], None)]  # one-time checks per codebook and thread count, untimed
    for coder in coders.values():
        ours_decode(coder, ours_encode(coder, warm), warm)
    meta_compress.compress(model, wav[:, : rate // 10], True)  # Meta's one-time costs (CUDA, cuBLAS), untimed
    plain, t_plain = timed(meta_compress.compress, model, wav, False)
    meta_lm, t_meta = timed(meta_compress.compress, model, wav, True)
    _, t_dplain = timed(meta_compress.decompress, plain, device)
    _, t_dmeta = timed(meta_compress.decompress, meta_lm, device)
    row = {
        "model": name, "bandwidth_kbps": bandwidth, "signal": signal, "seconds": seconds, "threads": used,
        "device": device, "codebooks": segments[0][0].shape[0], "meta_encode_s": t_meta - t_plain,
        "meta_decode_s": t_dmeta - t_dplain, "bytes_plain": len(plain), "bytes_meta_lm": len(meta_lm),
    }
    for tag, coder in coders.items():
        runs = 2 if device != "cpu" else 1  # on a GPU the first run captures the CUDA graphs
        for run in range(runs):
            coded, t_enc = timed(ours_encode, coder, segments)
            decoded, t_dec = timed(ours_decode, coder, coded, segments)
            assert all(np.array_equal(d, c) for d, (c, _) in zip(decoded, segments)), f"{tag} round trip failed"
            if run == 0 and runs > 1:
                row[f"{tag}_encode_first_s"], row[f"{tag}_decode_first_s"] = t_enc, t_dec
        row[f"{tag}_encode_s"], row[f"{tag}_decode_s"] = t_enc, t_dec
        row[f"bytes_{tag}"] = len(ours_file(name, wav.shape[-1], segments, coder))
    # Meta's header writer: on a GPU our writer adds "ld" (where the file decodes), which Meta's files lack
    ours_lm = support.encode_meta_lm_file(name, wav.shape[-1], segments, coders["lm"])
    row["bytes_lm"] = len(ours_lm)
    row["lm_identical_to_meta"] = ours_lm == meta_lm
    row["meta_lm_forward_decode_s"] = lm_forward_seconds(meta_lm, device)
    if device != "cpu":
        row["graph_replay_us"] = graph_replay_us(coders["lm"].lm)
    return row


def lm_forward_seconds(data: bytes, device: str = "cpu") -> float:
    """Seconds Meta's ``decompress`` of ``data`` spends in its LM's forward (one call a frame, waited
    for on a GPU), timed in an extra, untimed run: the floor of any decoder that computes Meta's
    float32 CDFs on that device."""
    from encodec.model import LMModel

    forward, spent = LMModel.forward, [0.0]

    def timed_forward(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return forward(self, *args, **kwargs)
        finally:
            if device != "cpu":
                torch.cuda.synchronize()
            spent[0] += time.perf_counter() - start

    LMModel.forward = timed_forward
    try:
        meta_compress.decompress(data, device)
    finally:
        LMModel.forward = forward
    return spent[0]


def graph_replay_us(lm, replays: int = 200) -> dict[str, float]:
    """Microseconds one replay of the frame's transformer graph takes, for the smallest and the largest
    window captured (CUDA events around ``replays`` back-to-back replays on the LM's stream). The
    graphs write the LM's state: the coder's next segment resets it."""
    sizes = sorted(h for kind, h in lm._graphs if kind == "layers")
    out = {}
    with torch.cuda.stream(lm._stream):
        for held in (sizes[0], sizes[-1]) if sizes else ():
            graph = lm._graphs[("layers", held)]
            graph.replay()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(replays):
                graph.replay()
            end.record()
            end.synchronize()
            out[f"window_{held + 1}"] = start.elapsed_time(end) * 1000 / replays
    return out


def report(rows: list[dict]) -> None:
    load = os.getloadavg()[0]
    gpu = rows[0]["device"] != "cpu"
    where = f"GPU ({torch.cuda.get_device_name()}, torch {torch.__version__}), host" if gpu else "CPU"
    print(f"entropy coding, {where} ({os.cpu_count()} cores, load average {load:.1f} when done: "
          f"{'a loaded machine, times are noisy' if load > 1.0 else 'quiet'}); random model and LM weights")
    rt = "xRT" if gpu else "xRT/core"
    head = (f"{'model':<14}{'kbps':>5}{'thr':>4} {'dir':<4}{'Meta s':>8}{'lm s':>8}{'xMeta':>7}{rt:>9}"
            f"{'lmp1 s':>8}{'xMeta':>7}{rt:>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        for direction in ("encode", "decode"):
            meta = r[f"meta_{direction}_s"]
            cells = [f"{r['model']:<14}{r['bandwidth_kbps']:>5g}{r['threads']:>4} {direction[:3]:<4}{meta:>8.2f}"]
            for tag in ("lm", "lmp1"):
                ours = r[f"{tag}_{direction}_s"]
                per = 1 if gpu else r["threads"]
                cells.append(f"{ours:>8.3f}{meta / ours:>7.1f}{r['seconds'] / (ours * per):>9.1f}")
            print("".join(cells))
    if gpu:
        print("\nfirst run of each coder (eager window sizes, CUDA graph captures), seconds:")
        for r in rows:
            print(f"  {r['model']}: " + ", ".join(f"{tag} {d} {r[f'{tag}_{d}_first_s']:.3f}"
                                                 for tag in ("lm", "lmp1") for d in ("encode", "decode")))
        print("\none frame's transformer graph (lm), replay time by attention window (frames):")
        for r in rows:
            print(f"  {r['model']}: " + ", ".join(f"{k} {v:.1f} us" for k, v in r["graph_replay_us"].items()))
    print("\nMeta's LM forward within its LM decoding (the part any decoder of Meta's bits must run):")
    for r in rows:
        print(f"  {r['model']} {r['threads']} thread(s): {r['meta_lm_forward_decode_s']:.3f} s of the LM's "
              f"{r['meta_decode_s']:.3f} s; ours lm {r['lm_decode_s']:.3f} s")
    print("\nsizes (bytes, whole files) and checks:")
    for r in rows[: len(CASES)]:
        print(f"  {r['model']} {r['bandwidth_kbps']:g} kbps, {r['seconds']:g} s of {r['signal']}: plain "
              f"{r['bytes_plain']}, Meta lm {r['bytes_meta_lm']}, ours lm {r['bytes_lm']}, lmp1 {r['bytes_lmp1']}; "
              f"ours lm byte-identical to Meta's: {r['lm_identical_to_meta']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="audio per case (default 3)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="thread counts; 0: torch's default")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where Meta's and our LMs run")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    device = str(torch.device(args.device))
    threads_list = args.threads if device == "cpu" else [0]
    default_threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TORCH_HOME"] = tmp
        support.save_lm_checkpoints(Path(tmp), {"encodec_24khz": 11, "encodec_48khz": 12})
        models = {}
        for seed, (name, rate, channels, _) in enumerate(CASES):
            model = support.meta_codec_for_entropy(name, seed, support.speech_like(rate, channels, 0.5, seed=seed))
            model = model.to(device)
            meta_compress.MODELS[name] = lambda m=model: m  # Meta's decompress would fetch published weights
            coders = {"lm": MetaLMCoder.for_model(name, device=device),
                      "lmp1": PortableCoder.for_model(name, device=device)}
            warm = [(np.zeros((2, 3), dtype=np.int64), None)]  # numba compiles (or loads its cache) here
            for coder in coders.values():
                ours_decode(coder, ours_encode(coder, warm), warm)
            models[name] = (model, coders)
        for threads in threads_list:
            for name, rate, channels, bandwidth in CASES:
                rows.append(run_case(name, rate, channels, bandwidth, args.seconds, threads or default_threads,
                                     models, device))
    torch.set_num_threads(default_threads)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
