"""Peak GPU memory of this process, from the best source available, for the Train node's live figure.

torch's counters see only torch's caching allocator. Under ComfyUI's dynamic VRAM (comfy-aimdo, on by default on
NVIDIA) the weights live in aimdo's own allocations, so ``max_memory_allocated`` was measured 5x below what the
driver charged the process (6.3 vs 30.4 GiB). Sources, best first:

1. ``driver``: the NVIDIA driver's figure for this process (NVML ``nvmlDeviceGetComputeRunningProcesses``, read
   through ctypes from ``libnvidia-ml.so.1``, which every NVIDIA driver installs): what ``nvidia-smi`` shows.
   Not available where the process runs in a PID namespace the driver does not see (some containers).
2. ``torch+aimdo``: torch's peak reserved memory plus comfy-aimdo's current total, when aimdo is active.
3. ``torch``: ``max_memory_reserved`` (what the caching allocator holds; allocated would be lower still).

The driver and aimdo figures are current values: the peak is the largest seen at the moments it is read (once per
step), never below torch's own peak.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

GIB = 2**30
SOURCES = ("driver", "torch+aimdo", "torch")


class _ProcessInfo(ctypes.Structure):  # nvmlProcessInfo_t (the v2/v3 layout)
    _fields_ = [
        ("pid", ctypes.c_uint),
        ("usedGpuMemory", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    ]


def nvml_process_bytes(pid: int, device: torch.device) -> int | None:
    """Device memory the driver charges process ``pid`` on ``device``; None where NVML or the process is not found."""
    if device.type != "cuda":
        return None
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if lib.nvmlInit_v2() != 0:
        return None
    handle = ctypes.c_void_p()
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    found = uuid is not None and lib.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}".encode(), ctypes.byref(handle)) == 0
    if not found and lib.nvmlDeviceGetHandleByIndex_v2(device.index or 0, ctypes.byref(handle)) != 0:
        return None
    query = getattr(lib, "nvmlDeviceGetComputeRunningProcesses_v3", None) or lib.nvmlDeviceGetComputeRunningProcesses_v2
    infos = (_ProcessInfo * 64)()
    count = ctypes.c_uint(len(infos))
    if query(handle, ctypes.byref(count), infos) != 0:
        return None
    for info in infos[: count.value]:
        if info.pid == pid:
            return int(info.usedGpuMemory)
    return None


def aimdo_bytes() -> int | None:
    """comfy-aimdo's current device memory total, or None where aimdo is not installed or not initialised."""
    try:
        import comfy_aimdo.control as control
    except ImportError:
        return None
    if getattr(control, "lib", None) is None or not getattr(control, "devctxs", None):
        return None
    return int(control.get_total_vram_usage())


@dataclass
class PeakGpuMemory:
    """``read()`` after each step: (peak GiB so far or None off CUDA, the source's name).

    The three readers are parameters so a test can stand in for a driver; by default they are the real ones.
    """

    device: torch.device
    driver: Callable[[int, torch.device], int | None] = nvml_process_bytes
    aimdo: Callable[[], int | None] = aimdo_bytes
    torch_reserved: Callable[[torch.device], int] | None = None
    peak: int = 0

    def read(self) -> tuple[float | None, str]:
        if self.device.type != "cuda":
            return None, "n/a"
        reserved = (self.torch_reserved or torch.cuda.max_memory_reserved)(self.device)
        current, source = self.driver(os.getpid(), self.device), "driver"
        if current is None:
            extra = self.aimdo()
            current, source = (reserved + extra, "torch+aimdo") if extra else (reserved, "torch")
        self.peak = max(self.peak, current, reserved)
        return self.peak / GIB, source


def within_memory_fraction(device: torch.device, free: int) -> int:
    """``free`` bytes, lowered to what torch's allocator may still hand out when a per-process memory fraction is
    set (``torch.cuda.set_per_process_memory_fraction``: how a smaller card is emulated); the driver's free figure
    does not know that cap."""
    if device.type != "cuda":
        return free
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _d: 1.0)(device)
    if fraction >= 1.0:
        return free
    limit = int(torch.cuda.get_device_properties(device).total_memory * fraction)
    return min(free, limit - torch.cuda.memory_allocated(device))
