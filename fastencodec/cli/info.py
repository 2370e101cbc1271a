"""``fastencodec info``: what an ``.ecdc`` file holds, checked whole."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any, BinaryIO

import torch

from fastencodec.cli.common import PROG, CliError, display_name, load_codec, open_binary
from fastencodec.engine.segments import SegmentLayout
from fastencodec.formats.coders import ENTROPY_NAMES
from fastencodec.formats.ecdc import DamagedSegmentWarning, EcdcHeader, EcdcReader
from fastencodec.nn.config import PUBLISHED_CONFIGS, EncodecConfig


def add_parser(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser(
        "info", help="describe an .ecdc file", description="Print what an .ecdc file holds, checking it whole."
    )
    info.add_argument("input", metavar="FILE", help=".ecdc file, or - for standard input")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--model", help="model, for files of models other than the published three")
    info.add_argument("--lm-weights", metavar="PATH", help="LM checkpoint of LM-coded files")
    info.set_defaults(run=run, device="cpu", each=False)


class CountingReader:
    """Wraps a binary stream, counting the bytes read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data


def run(args: argparse.Namespace) -> None:
    """Print the facts of ``args.input``; a file with damaged segments is described, then reported as
    an error (exit status 1)."""
    name = display_name(args.input)
    with open_binary(args.input) as stream, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counted = CountingReader(stream)
        reader = EcdcReader(counted, lm_weights=args.lm_weights)  # type: ignore[arg-type]  # only read()
        header = reader.header
        header_bytes = counted.count
        config = load_codec(args.model, "cpu").config if args.model else PUBLISHED_CONFIGS.get(header.model_name)
        if config is None:
            known = ", ".join(PUBLISHED_CONFIGS)
            raise CliError(f"{name}: unknown model {header.model_name!r} (known: {known}); pass --model")
        layout = SegmentLayout.of(config)
        device = lm_device(name, header)
        for _ in reader.chunks(layout, device=device):  # reads every code: checks the length and checksum
            pass
    for warning in caught:
        if not issubclass(warning.category, DamagedSegmentWarning):
            print(f"{PROG}: {name}: {warning.message}", file=sys.stderr)
    facts = describe(name, header, config, counted.count, header_bytes)
    facts["damaged_segments"] = [list(layout.span(i, header.audio_length)) for i in reader.damaged]
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        for line in info_lines(facts):
            print(line)
    if reader.damaged:
        raise CliError(f"{name}: {plural(len(reader.damaged), 'damaged segment')} (they decode as silence)")


def lm_device(name: str, header: EcdcHeader) -> str | None:
    """Where Meta's LM must run to read ``header``'s codes: the device kind its header records (a
    GPU-coded ``lm`` file decodes only on a GPU), else None (the CPU).

    Raises:
        CliError: the file needs CUDA and CUDA is not available.
    """
    if header.lm_device is None:
        return None
    if header.lm_device == "cuda" and not torch.cuda.is_available():
        raise CliError(f"{name}: coded with Meta's LM on a CUDA GPU; its codes decode (and check) only on one")
    return header.lm_device


def describe(name: str, header: EcdcHeader, config: EncodecConfig, size: int, header_bytes: int = 0) -> dict[str, Any]:
    """What ``info`` reports about an ``.ecdc`` file of ``size`` bytes, ``header_bytes`` of them
    metadata (JSON-ready). ``saving_vs_bits`` compares the payload (scales and codes) with the
    same codes plainly packed."""
    duration = header.audio_length / config.sample_rate
    rate = header.source_sample_rate or config.sample_rate
    channels = header.source_channels or config.channels
    pcm_bytes = 2 * channels * round(duration * rate)
    return {
        "file": name,
        "model": header.model_name,
        "fingerprint": header.fingerprint,
        "sample_rate": config.sample_rate,
        "channels": config.channels,
        "bandwidth_kbps": header.num_codebooks * config.bits_per_codebook * config.frame_rate / 1000,
        "codebooks": header.num_codebooks,
        "samples": header.audio_length,
        "duration_s": duration,
        "original_sample_rate": header.source_sample_rate,
        "original_channels": header.source_channels,
        "original_pcm16_bytes": pcm_bytes,
        "bytes": size,
        "bitrate_kbps": 8 * size / duration / 1000,
        "compression_ratio": pcm_bytes / size,
        "checksum": "crc32 ok" if header.checksum else "none",
        "entropy": header.coder,
        "lm_device": header.lm_device,
        "saving_vs_bits": 1 - (size - header_bytes - 4 * header.checksum) / plain_size(header, config),
    }


def plain_size(header: EcdcHeader, config: EncodecConfig) -> int:
    """Payload bytes (scales and codes) of ``header``'s codes with plain bit packing (``"bits"``)."""
    layout = SegmentLayout.of(config)
    return sum(
        -(-frames * header.num_codebooks * config.bits_per_codebook // 8) + 4 * config.normalize
        for frames in layout.frame_counts(header.audio_length)
    )


def info_lines(facts: dict[str, Any]) -> list[str]:
    """``describe``'s facts as aligned ``label: value`` lines."""
    if facts["original_sample_rate"] is None:
        original = "not recorded (file written by Meta's encodec); ratio against the model's rate"
    else:
        original = f"{facts['original_sample_rate']} Hz, {plural(facts['original_channels'], 'channel')}"
    rows = [
        ("file", facts["file"]),
        ("model", f"{facts['model']} ({facts['sample_rate']} Hz, {plural(facts['channels'], 'channel')})"),
        ("fingerprint", facts["fingerprint"] or "not recorded"),
        ("bandwidth", f"{facts['bandwidth_kbps']:g} kbps ({plural(facts['codebooks'], 'codebook')})"),
        ("duration", f"{facts['duration_s']:.3f} s ({facts['samples']} samples at {facts['sample_rate']} Hz)"),
        ("original", original),
        ("original size", f"{facts['original_pcm16_bytes']:,} bytes as 16-bit PCM"),
        ("size", f"{facts['bytes']:,} bytes ({facts['bitrate_kbps']:.2f} kbps)"),
        ("ratio", f"{facts['compression_ratio']:.1f}:1"),
        ("checksum", facts["checksum"]),
        (
            "entropy",
            f"{ENTROPY_NAMES.get(facts['entropy'], facts['entropy'])} "
            f"({facts['saving_vs_bits']:+.1%} vs plain bit packing)"
            + (f", coded on {facts['lm_device']} (decodes only there)" if facts.get("lm_device") else ""),
        ),
    ]
    for offset, samples in facts.get("damaged_segments", []):
        rows.append(("damaged", f"samples {offset} to {offset + samples} (fail their CRC; decode as silence)"))
    return [f"{label + ':':<15}{value}" for label, value in rows]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
