"""``RuntimePolicy``: how one ``EnCodec`` runs its networks (precision, batch and chunk sizes, threads).

A policy is a frozen value held by each codec instance: nothing here is a module-wide
setting, and two codecs in one process may run under different policies. Sizes left as
None take the device's default (:meth:`RuntimePolicy.for_device`). The batch an item is
coded in depends only on the policy and the item's length, never on free memory, so an
item gets the same batches (and tokens) whatever else the device is doing.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

CPU_BATCH_SAMPLES = 1 << 17
"""Default most samples (per channel) run through the networks at once on a CPU: small batches
keep the activations in cache (see BENCHMARKS.md)."""

CPU_CHUNK_SAMPLES = 1 << 16
"""Default samples per chunk when long audio of a streamable model goes through its stream on a CPU."""

GPU_CHUNK_SAMPLES = 1 << 22
"""Default samples per chunk on a GPU, where one long pass is fastest."""

GPU_BATCH_BYTES_PER_SAMPLE = 2560
"""GPU memory budgeted per audio sample of a batch (four times the measured peak, which leaves
room for cuDNN's algorithm search); the default batch is sized from the device's total memory."""

GPU_BATCH_SAMPLES = (1 << 21, 1 << 24)
"""Fewest and most samples (per channel) of a default GPU batch."""


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (``cpu.max``)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def default_threads() -> int:
    """A CPU thread count for a process that runs one codec job: the usable CPUs that other work
    does not already keep busy (1-minute load average), at least 1.

    torch's OpenMP threads wait for each other at the end of every parallel region, spinning
    first; when another process holds one of their cores, every region costs the others a spin
    (see BENCHMARKS.md, "CPU contention"), so a loaded machine is better served by fewer threads.
    """
    cpus = usable_cpus()
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cpus, math.floor(cpus - busy + 0.5)))


@dataclass(frozen=True)
class Precision:
    """A numerical mode of the encoder and decoder networks.

    Attributes:
        name: the name ``RuntimePolicy.precision`` takes.
        description: what it computes, for messages and docs.
        cpu: whether CPUs can run it (``fp16`` and ``bf16`` also need the CPU's instructions for
            them; see :func:`fastencodec.kernels.precision.check_precision`).
    """

    name: str
    description: str
    cpu: bool = True


PRECISIONS: dict[str, Precision] = {
    "exact": Precision("exact", "IEEE float32 throughout (no TF32): Meta's reference numbers on CPU"),
    "tf32": Precision(
        "tf32", "CUDA tensor cores: encoder and codebook search 3xTF32 (near float32), decoder TF32 products, "
        "float32 sums", cpu=False
    ),
    "fp16": Precision(
        "fp16",
        "float16 weights and activations, float32 sums, LSTM with a float32 cell state (float16 products on "
        "CUDA), codebook search in float32 (3xTF32 products on CUDA)",
    ),
    "bf16": Precision(
        "bf16",
        "bfloat16 weights and activations, float32 sums, float32 LSTM, codebook search in float32 (3xTF32 "
        "products on CUDA)",
    ),
}
"""The precision modes, by name, strictest first (see :mod:`fastencodec.kernels.precision`)."""


@dataclass(frozen=True)
class RuntimePolicy:
    """How a codec runs: numerical mode, work sizes and CPU threads.

    Attributes:
        precision: a name in ``PRECISIONS`` (``"exact"``: float32, Meta's numbers).
        batch_samples: most samples per channel run through a network at once (None: the
            device's default). Bigger batches are faster on GPUs; tokens do not depend on it.
        chunk_samples: samples per chunk when a streamable model (24/32 kHz) codes long audio
            through its stream (None: the device's default).
        threads: CPU threads for torch's intra-op pool (None: leave torch's setting). torch
            has one pool per process, so a codec built with a thread count sets it for the
            process (once, at construction).
        buckets_per_octave: length buckets per doubling of length (a power of two) for ragged
            batches: items of unequal lengths sharing a GPU batch, padded to their bucket's edge
            (see :func:`fastencodec.engine.planner.bucket_edge`); 0 batches only items of equal
            length. Tokens and audio do not depend on it.

    Raises:
        ValueError: an unknown precision or a non-positive size.
    """

    precision: str = "exact"
    batch_samples: int | None = None
    chunk_samples: int | None = None
    threads: int | None = None
    buckets_per_octave: int = 8

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {sorted(PRECISIONS)}")
        per_octave = self.buckets_per_octave
        if type(per_octave) is not int or per_octave < 0 or per_octave & (per_octave - 1):
            raise ValueError(f"buckets_per_octave must be 0 or a power of two, got {per_octave!r}")
        for name in ("batch_samples", "chunk_samples", "threads"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")

    @property
    def mode(self) -> Precision:
        """The ``Precision`` this policy names."""
        return PRECISIONS[self.precision]

    def for_device(self, device: torch.device) -> RuntimePolicy:
        """This policy with every size left as None set to ``device``'s default."""
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            least, most = GPU_BATCH_SAMPLES
            fits = max(least, min(most, total // GPU_BATCH_BYTES_PER_SAMPLE))
            batch, chunk = 1 << (fits.bit_length() - 1), GPU_CHUNK_SAMPLES  # a power of two
        elif device.type == "cpu":
            batch, chunk = CPU_BATCH_SAMPLES, CPU_CHUNK_SAMPLES
        else:
            batch, chunk = GPU_BATCH_SAMPLES[0], GPU_CHUNK_SAMPLES
        return replace(self, batch_samples=self.batch_samples or batch, chunk_samples=self.chunk_samples or chunk)

    def module_compute(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context the torch modules run in on ``device``: on CUDA, :func:`cudnn_precision`
        in float32 (the modules' paths compute ``exact`` arithmetic in every mode).

        Only the module paths need it: the streams, and every forward on a CUDA device without
        Triton. The Triton kernels take their precision as an argument and read no flag.
        """
        if device.type != "cuda":
            return contextlib.nullcontext()  # CPU kernels take no backend flag for float32
        return cudnn_precision(False)


_FLAGS_LOCK = threading.Lock()
_FLAGS_USERS = [0]
_FLAGS_SAVED: list[tuple[bool, bool]] = []


@contextlib.contextmanager
def cudnn_precision(tf32: bool) -> Iterator[None]:
    """Fallback CUDA context for the torch modules: cuDNN's TF32 and benchmark flags.

    PyTorch has no per-call or per-thread way to keep cuDNN convolutions in float32, so the
    process-wide flags are set while any of our CUDA forwards runs: the first thread to enter
    saves the user's two flags (``allow_tf32``, ``benchmark``; no other flag is touched) and
    the last to leave restores them, so concurrent calls never see each other's changes undone
    and the user's settings always come back. Other threads of the process that run cuDNN
    meanwhile see our flags. Benchmark mode is on because cuDNN's heuristics pick very slow
    float32 algorithms for these convolutions (see BENCHMARKS.md). Only the module paths use
    it (streams; CUDA without Triton): the Triton kernels' precision is an argument.
    """
    cudnn = torch.backends.cudnn
    with _FLAGS_LOCK:
        if _FLAGS_USERS[0] == 0:
            _FLAGS_SAVED.append((cudnn.allow_tf32, cudnn.benchmark))
            cudnn.allow_tf32, cudnn.benchmark = tf32, True
        _FLAGS_USERS[0] += 1
    try:
        yield
    finally:
        with _FLAGS_LOCK:
            _FLAGS_USERS[0] -= 1
            if _FLAGS_USERS[0] == 0:
                cudnn.allow_tf32, cudnn.benchmark = _FLAGS_SAVED.pop()
