"""``fastencodec generate``: text to a music file with MusicGen.

    fastencodec generate "jazz piano" -d 10 -o jazz.wav [--model NAME|DIR] [--seed N] [--guidance G]
                         [--top-k K] [--top-p P] [--temperature T] [--greedy] [--audio-prompt FILE]
                         [--device DEVICE] [--dtype D] [-f] [-q]

The output (``.wav`` or ``.flac``) is written atomically; a progress bar on stderr counts seconds of
audio generated.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from fastencodec.cli.common import DTYPES, CliError, UsageError, check_device, device_value, positive_float


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``generate`` command to the ``fastencodec`` command line's subparsers."""
    parser = commands.add_parser(
        "generate",
        help="text -> music (MusicGen)",
        description="Generate music from a text prompt with MusicGen (pip install fastencodec[musicgen]) and "
        "write it as WAV or FLAC at 32 kHz. The published weights (facebook/musicgen-*) are CC-BY-NC 4.0 and are "
        "downloaded on first use.",
    )
    parser.add_argument("prompt", metavar="PROMPT", nargs="?", help="text prompt (omit for unconditional music)")
    parser.add_argument("-d", "--duration", type=positive_float, default=10.0, help="seconds of audio (10)")
    parser.add_argument("-o", "--output", metavar="FILE", help="output .wav or .flac (default: PROMPT as a name)")
    parser.add_argument("--model", default="facebook/musicgen-small", help="repo id, short name or checkpoint dir")
    parser.add_argument("--seed", type=int, help="sampler seed, for reproducible output")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale, 1 = off (3)")
    parser.add_argument("--top-k", type=int, default=250, help="sample among the K most likely tokens, 0 = all (250)")
    parser.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling threshold, 0 = off (0)")
    parser.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature (1)")
    parser.add_argument("--greedy", action="store_true", help="pick the most likely token at every step")
    parser.add_argument("--audio-prompt", metavar="FILE", help="audio file to continue (its length counts in -d)")
    parser.add_argument("--extend-stride", type=positive_float, default=18.0, help="window advance in s past 30 s")
    parser.add_argument("--device", type=device_value, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="decoder LM dtype (float32)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT if it exists")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run, each=False)


def default_output(prompt: str | None) -> str:
    """``"Jazz piano, slow!"`` -> ``jazz_piano_slow.wav``."""
    slug = re.sub(r"[^a-z0-9]+", "_", (prompt or "").lower()).strip("_")[:60]
    return f"{slug or 'unconditional'}.wav"


def run(args: argparse.Namespace) -> None:
    """Run ``fastencodec generate``."""
    from fastencodec.io.audio import read_audio, write_audio
    from fastencodec.io.resample import resample
    from fastencodec.musicgen import MusicGen

    if args.device is not None:
        check_device(args.device)
    output = Path(args.output or default_output(args.prompt))
    if output.suffix.lower() not in (".wav", ".flac"):
        raise UsageError(f"{output}: output must be .wav or .flac")
    if output.exists() and not args.force:
        raise CliError(f"{output} exists (use -f to overwrite)")
    try:
        model = MusicGen.from_pretrained(args.model, args.device, DTYPES[args.dtype])
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(f"{args.model}: {exc}") from None
    prompt_audio = None
    if args.audio_prompt:
        audio, rate = read_audio(args.audio_prompt)
        prompt_audio = torch.from_numpy(resample(audio, rate, model.sample_rate))
    with tqdm(
        total=round(args.duration, 2),
        unit="s",
        desc="generating",
        bar_format="{desc}: {n:.1f}/{total:.1f} s of audio [{elapsed}<{remaining}]",
        disable=args.quiet,
    ) as bar:

        def progress(done: float, total: float) -> None:
            bar.update(round(done, 2) - bar.n)  # tqdm redraws at most every 0.1 s

        try:
            audio = model.generate(
                args.prompt,
                args.duration,
                guidance_scale=args.guidance,
                top_k=args.top_k,
                top_p=args.top_p,
                temperature=args.temperature,
                seed=args.seed,
                do_sample=not args.greedy,
                audio_prompt=prompt_audio,
                extend_stride=args.extend_stride,
                progress=progress,
            )
        except ValueError as exc:  # duration, sampling settings, audio prompt
            raise UsageError(str(exc)) from None
        except MemoryError as exc:
            raise CliError(str(exc)) from None
    write_audio(output, audio[0].numpy(), model.sample_rate)
    if not args.quiet:
        print(f"{output}: {audio.shape[-1] / model.sample_rate:.2f} s at {model.sample_rate} Hz", file=sys.stderr)
