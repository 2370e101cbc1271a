"""Device memory checks: refuse a batch whose attention cache cannot fit before allocating it."""

from __future__ import annotations

import os

import torch


def free_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can take on ``device`` (None: unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:  # Linux: MemAvailable counts reclaimable page cache
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def check_fits(needed: int, device: torch.device, what: str) -> None:
    """Raise MemoryError when ``needed`` bytes (described by ``what``) exceed what ``device`` has free."""
    free = free_memory(device)
    if free is not None and needed > free:
        raise MemoryError(
            f"batch needs {needed / 2**30:.1f} GiB of {device.type} memory for {what}; "
            f"{free / 2**30:.1f} GiB are free: use a smaller batch or duration"
        )
