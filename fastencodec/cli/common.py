"""What the commands share: errors, model loading, outputs, progress bars, argument types."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

import torch
from tqdm import tqdm

from fastencodec.codec import EnCodec
from fastencodec.engine.policy import PRECISIONS, RuntimePolicy, default_threads
from fastencodec.io.atomic import STDIO
from fastencodec.kernels.precision import check_precision

PROG = "fastencodec"
PROGRESS_MIN_SECONDS = 5.0
"""Audio at least this long (seconds) gets a progress bar on stderr, unless ``--quiet``."""
BANDWIDTHS_HELP = "encodec-24khz: 1.5/3/6/12/24, encodec-48khz: 3/6/12/24, encodec-32khz: 2.2"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Network dtypes that ``--dtype`` takes (``bench``, ``generate``)."""


class CliError(Exception):
    """A failure reported as one line on stderr; exit status 1."""


class UsageError(CliError):
    """Bad usage (an option the chosen model or output cannot take); exit status 2."""


class ModelLoadError(CliError):
    """The model cannot be loaded: no file of a command can be done; exit status 1."""


def check_device(device: str) -> None:
    """Refuse a CUDA device when CUDA is not available.

    Raises:
        CliError: it is not (one line naming ``--device``).
    """
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {device}: CUDA is not available")


def load_codec(
    spec: str, device: str, threads: int | None = None, precision: str = "exact", local: bool = True
) -> EnCodec:
    """Load the model ``spec`` (name, repo id or path; without ``local`` only a published model's
    name, as for a name read from a file) on ``device`` in ``precision``, or fail with one line.

    The command owns its process, so it sets torch's CPU threads: ``threads``, or by default
    :func:`~fastencodec.engine.policy.default_threads` (the usable CPUs not already busy).

    Args:
        spec: the ``--model`` value, or the model name a file's header gives.
        device: ``--device``.
        threads: ``--threads``, or None.
        precision: ``--precision`` (a ``RuntimePolicy`` mode).
        local: accept local paths and repo ids (False for a name read from a file).

    Returns:
        The loaded codec.

    Raises:
        CliError: ``device`` is CUDA and CUDA is not available.
        ModelLoadError: the device cannot run ``precision``, or the model cannot be found or loaded.
    """
    check_device(device)
    try:
        check_precision(precision, device)  # a mode this device cannot run: said as is, not as a load failure
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    if threads is None and torch.device(device).type == "cpu":
        threads = default_threads()
    try:
        policy = RuntimePolicy(precision, threads=threads)
        return EnCodec.from_pretrained(spec, device=device, local=local, policy=policy)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{spec}: cannot load the model ({exc})") from None


def check_bandwidth(codec: EnCodec, bandwidth: float | None) -> float:
    """A bandwidth the model supports, as ``EnCodec.check_bandwidth`` gives it.

    Args:
        codec: the model.
        bandwidth: ``-b`` in kbps, or None for the model's default.

    Returns:
        The bandwidth in kbps, as the model lists it.

    Raises:
        UsageError: the model does not support it.
    """
    try:
        return codec.check_bandwidth(bandwidth)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_output(output: str, source: str, force: bool) -> None:
    """Refuse an output that exists (without ``force``), is a directory, lies in a missing folder,
    or is the input itself.

    Args:
        output: the output path, or ``-`` (always accepted).
        source: the input path, or ``-``.
        force: ``-f``: an existing output may be replaced.

    Raises:
        CliError: the output cannot or may not be written.
    """
    if output == STDIO:
        return
    path = Path(output)
    if path.is_dir():
        raise CliError(f"{output}: is a directory")
    if not path.parent.is_dir():
        raise CliError(f"{output}: cannot write (no folder {path.parent})")
    if not path.exists():
        return
    if source != STDIO and Path(source).exists() and os.path.samefile(source, output):
        raise CliError(f"{output}: is the input file")
    if not force:
        raise CliError(f"{output}: already exists (use -f/--force to overwrite)")


def check_distinct_outputs(jobs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Refuse two inputs that would write one output (e.g. ``a.wav`` and ``a.flac``, which both become ``a.ecdc``).

    Args:
        jobs: (input, output) pairs.

    Returns:
        ``jobs``.

    Raises:
        UsageError: two jobs write the same output (the message names both inputs).
    """
    seen: dict[str, str] = {}
    for source, output in jobs:
        key = output if output == STDIO else os.path.normcase(os.path.abspath(output))
        if key in seen:
            raise UsageError(f"{seen[key]} and {source} would both be written to {output}; give them one at a time")
        seen[key] = source
    return jobs


@contextmanager
def open_binary(path: str) -> Iterator[BinaryIO]:
    """Standard input for ``-``, else the file opened for binary reading; failures name the file."""
    if path == STDIO:
        yield sys.stdin.buffer
        return
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with stream:
        yield stream


def display_name(path: str) -> str:
    """How messages name a path: ``<stdin>`` for ``-``, else the path."""
    return "<stdin>" if path == STDIO else path


def expand_inputs(paths: list[str], suffixes: tuple[str, ...]) -> list[str]:
    """``paths`` with each folder replaced by the files with ``suffixes`` under it (sorted).

    Args:
        paths: files, folders or ``-``.
        suffixes: lower-case suffixes (``".wav"``, ...) of the files a folder contributes.

    Returns:
        The paths, folders expanded.

    Raises:
        CliError: an empty path, the file system's root (not searched), or a folder without such files.
    """
    out: list[str] = []
    for path in paths:
        if path == "":
            raise CliError("'': empty input path")
        if path != STDIO and Path(path).is_dir() and Path(path).resolve().parent == Path(path).resolve():
            raise CliError(f"{path}: is the root folder (not searched for files; name a folder below it)")
        if path != STDIO and Path(path).is_dir():
            found = sorted(str(p) for p in Path(path).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise CliError(f"{path}: is a directory with no {'/'.join(suffixes)} files")
            out += found
        else:
            out.append(path)
    return out


def split_output(paths: list[str], is_output: Callable[[str], bool]) -> tuple[list[str], str | None]:
    """Read ``INPUT [OUTPUT]`` or ``INPUT...``.

    Args:
        paths: the command's path arguments.
        is_output: whether a path names an output (by its suffix, or ``-``).

    Returns:
        ``([input], output)`` for two paths whose second ``is_output``, else ``(paths, None)``.
    """
    if len(paths) == 2 and is_output(paths[1]):
        return [paths[0]], paths[1]
    return paths, None


@contextmanager
def progress_bar(samples: int | None, sample_rate: int, quiet: bool, action: str) -> Iterator[tqdm]:
    """A tqdm bar on stderr, updated in samples and shown in seconds of audio.

    Hidden with ``quiet`` and for audio shorter than ``PROGRESS_MIN_SECONDS``; audio of unknown
    length (raw PCM streams, some FFmpeg inputs) shows a running count.

    Args:
        samples: the audio's length in samples, or None when unknown.
        sample_rate: its rate in Hz (the bar counts samples and shows seconds).
        quiet: ``-q``.
        action: the bar's label, e.g. ``"compress"``.

    Yields:
        The bar; ``update(n)`` with ``n`` samples.
    """
    hidden = quiet or (samples is not None and samples < PROGRESS_MIN_SECONDS * sample_rate)
    known = "{percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}, {rate_noinv_fmt}]"
    with tqdm(
        total=samples,
        desc=action,
        unit="s audio",
        unit_scale=1 / sample_rate,
        bar_format="{desc}: " + (known if samples is not None else "{n:.1f} s [{elapsed}, {rate_noinv_fmt}]"),
        file=sys.stderr,
        disable=hidden,
    ) as bar:
        yield bar


def _positive(convert: Callable[[str], float], noun: str) -> Callable[[str], float]:
    """An argparse type: ``convert(text)`` if it is a finite number > 0, else a usage error."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            value = 0
        if not 0 < value < math.inf:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected a positive {noun}, got {text!r}")
        return value

    return parse


positive_int = _positive(int, "integer")
positive_float = _positive(float, "number")


def checked(check: Callable[[int], int]) -> Callable[[str], int]:
    """An argparse type: a positive integer that ``check`` accepts (its ValueError is a usage error)."""

    def parse(text: str) -> int:
        value = int(positive_int(text))
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def device_value(text: str) -> str:
    """An argparse type: ``text`` if torch parses it as a device (``cpu``, ``cuda:1``), else a usage error."""
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    return text


def add_run_options(command: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision``, ``--threads``, ``-f`` and ``-q``, shared by compress and decompress."""
    command.add_argument("--device", type=device_value, default="cpu", help="cpu (default), cuda, cuda:1, ...")
    command.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="exact",
        help="network arithmetic: exact (default), tf32 (CUDA), fp16, bf16; 24/32 kHz files go through the "
        "exact streams in every mode, so it changes 48 kHz files only",
    )
    command.add_argument(
        "--threads", type=positive_int, metavar="N", help="CPU threads (default: usable CPUs not already busy)"
    )
    command.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT if it exists")
    command.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes on stderr")


def corpus_api() -> ModuleType:
    """``fastencodec.corpus.api``, imported on use: it needs pyarrow (extra ``corpus``)."""
    try:
        from fastencodec.corpus import api
    except ImportError as exc:
        raise CliError(f"tokenize and detokenize need pyarrow ({exc}): pip install 'fastencodec[corpus]'") from None
    return api
