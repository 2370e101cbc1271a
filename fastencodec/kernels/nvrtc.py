"""CUDA C++ kernels compiled at run time with NVRTC and launched through the CUDA driver API.

For kernels Triton does not express (thread-block clusters sharing their shared memory).
Only the C libraries are used, through :mod:`ctypes`: ``libnvrtc`` (shipped with PyTorch's CUDA
wheels) compiles source to a cubin for the device's architecture, ``libcuda`` (the driver) loads
and launches it on PyTorch's current stream, so launches are captured by CUDA graphs like any other.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import threading
from dataclasses import dataclass

import torch

FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14
"""``CUfunction_attribute`` values of the CUDA driver API (``cuda.h``)."""


class CompileError(RuntimeError):
    """NVRTC refused a kernel's source (the message holds its log), or no NVRTC library was found."""


def _nvrtc() -> ctypes.CDLL:
    """The NVRTC library matching PyTorch's CUDA version (loaded by PyTorch's wheels, or found beside them)."""
    major = str(torch.version.cuda).split(".")[0]
    names = [f"libnvrtc.so.{major}", "libnvrtc.so"]
    site = os.path.dirname(os.path.dirname(torch.__file__))
    names += sorted(glob.glob(os.path.join(site, "nvidia", "**", f"libnvrtc.so.{major}*"), recursive=True))
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise CompileError(f"no NVRTC library for CUDA {major} was found (looked for {names[0]})")


def _check(lib: ctypes.CDLL, result: int, what: str) -> None:
    if result != 0:
        text = ctypes.c_char_p()
        lib.cuGetErrorString(result, ctypes.byref(text))
        raise RuntimeError(f"{what} failed: CUDA error {result} ({(text.value or b'?').decode()})")


def compile_cubin(source: str, name: str, capability: tuple[int, int]) -> bytes:
    """The cubin of ``source`` for GPUs of compute ``capability``; ``name`` is its ``extern "C"`` kernel.

    Raises:
        CompileError: with NVRTC's log.
    """
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{name}.cu".encode(), 0, None, None):
        raise CompileError(f"NVRTC could not create a program for {name}")
    try:
        options = [f"--gpu-architecture=sm_{capability[0]}{capability[1]}".encode(), b"-std=c++17"]
        array = (ctypes.c_char_p * len(options))(*options)
        if lib.nvrtcCompileProgram(prog, len(options), array):
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise CompileError(f"NVRTC could not compile {name}:\n{log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, cubin)
        return cubin.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


class _LaunchConfig(ctypes.Structure):
    """``CUlaunchConfig`` of the CUDA driver API (``cuda.h``), without launch attributes."""

    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("shared_bytes", ctypes.c_uint),
        ("stream", ctypes.c_void_p),
        ("attrs", ctypes.c_void_p),
        ("num_attrs", ctypes.c_uint),
    ]


@dataclass
class Kernel:
    """A loaded kernel on one device: launch it with :meth:`launch`."""

    module: ctypes.c_void_p
    function: ctypes.c_void_p
    device: int
    shared_bytes: int

    def launch(self, grid: int | tuple[int, int, int], threads: int, args: list[torch.Tensor | int | None]) -> None:
        """Launch ``grid`` blocks (a count, or x, y, z counts) of ``threads`` threads on PyTorch's current
        stream of the kernel's device; ``args``: tensors (passed as their data pointers), None (a null
        pointer) and 32-bit integers, in the kernel's order."""
        held: list[ctypes.c_void_p | ctypes.c_int] = []
        for arg in args:
            if arg is None or isinstance(arg, torch.Tensor):
                held.append(ctypes.c_void_p(None if arg is None else arg.data_ptr()))
            else:
                held.append(ctypes.c_int(arg))
        gx, gy, gz = (grid, 1, 1) if isinstance(grid, int) else grid
        pointers = (ctypes.c_void_p * len(held))(*[ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in held])
        stream = ctypes.c_void_p(torch.cuda.current_stream(self.device).cuda_stream)
        lib = _driver()
        _check(
            lib,
            lib.cuLaunchKernel(self.function, gx, gy, gz, threads, 1, 1, self.shared_bytes, stream, pointers, None),
            "launching a compiled kernel",
        )

    def max_active_clusters(self, cluster: int, threads: int) -> int:
        """How many clusters of ``cluster`` blocks of ``threads`` threads (the kernel's compiled cluster
        size) the device runs at once (``cuOccupancyMaxActiveClusters``); 0 when it cannot run one."""
        config = _LaunchConfig((cluster, 1, 1), (threads, 1, 1), self.shared_bytes, None, None, 0)
        count = ctypes.c_int()
        lib = _driver()
        with torch.cuda.device(self.device):
            _check(
                lib,
                lib.cuOccupancyMaxActiveClusters(ctypes.byref(count), self.function, ctypes.byref(config)),
                "asking how many clusters run at once",
            )
        return count.value


_LOCK = threading.Lock()


@functools.cache
def _driver() -> ctypes.CDLL:
    """The CUDA driver library, opened once (every launch uses it)."""
    return ctypes.CDLL("libcuda.so.1")


def load(cubin: bytes, name: str, device: int, shared_bytes: int, cluster_over_8: bool) -> Kernel:
    """Load ``cubin``'s kernel ``name`` on CUDA ``device`` with ``shared_bytes`` of dynamic shared
    memory a block (``cluster_over_8``: allow its compiled cluster size above the portable 8)."""
    lib = _driver()
    with _LOCK, torch.cuda.device(device):
        torch.cuda.init()
        torch.empty(0, device=f"cuda:{device}")  # the device's primary context is current
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        _check(lib, lib.cuModuleLoadData(ctypes.byref(module), cubin), "loading a compiled kernel")
        _check(lib, lib.cuModuleGetFunction(ctypes.byref(function), module, name.encode()), f"finding {name}")
        _check(
            lib,
            lib.cuFuncSetAttribute(function, FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_bytes),
            "setting a kernel's shared memory",
        )
        if cluster_over_8:
            _check(
                lib,
                lib.cuFuncSetAttribute(function, FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1),
                "allowing a kernel's cluster size",
            )
    return Kernel(module, function, device, shared_bytes)


def device_index(device: torch.device) -> int:
    """The number of CUDA ``device`` (the current device where it names none)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def aligned(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` contiguous at a 16-byte aligned address (kernels' vector loads), copied if it is not; None stays None."""
    if t is None:
        return None
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


class Loader:
    """Kernel ``name`` of CUDA C++ ``source`` (``program`` names it in NVRTC's messages), compiled and
    loaded once a device on first use, with ``shared_bytes`` of dynamic shared memory a block."""

    def __init__(self, source: str, program: str, name: str, shared_bytes: int) -> None:
        self.source, self.program, self.name, self.shared_bytes = source, program, name, shared_bytes
        self._kernels: dict[int, Kernel] = {}
        self._lock = threading.Lock()

    def __call__(self, device: int) -> Kernel:
        """The kernel on CUDA ``device``.

        Raises:
            CompileError, RuntimeError: it did not compile or load.
        """
        with self._lock:
            if device not in self._kernels:
                cubin = compile_cubin(self.source, self.program, torch.cuda.get_device_capability(device))
                self._kernels[device] = load(cubin, self.name, device, self.shared_bytes, False)
            return self._kernels[device]

    def loads(self, device: int) -> bool:
        """Whether the kernel compiles and loads on CUDA ``device`` (False without an NVRTC library)."""
        try:
            self(device)
        except (CompileError, RuntimeError, OSError):
            return False
        return True
