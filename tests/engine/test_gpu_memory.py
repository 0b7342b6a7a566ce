"""The Train node's peak GPU memory figure: which source it comes from, and the real readers on this machine."""

from __future__ import annotations

import os

import torch

from trainer_core.gpu_memory import GIB, PeakGpuMemory, aimdo_bytes, nvml_process_bytes

CUDA = torch.device("cuda", 0)


def test_off_cuda_there_is_no_figure():
    assert PeakGpuMemory(torch.device("cpu")).read() == (None, "n/a")
    assert nvml_process_bytes(os.getpid(), torch.device("cpu")) is None


def test_real_readers_answer_without_raising():
    """The real NVML and comfy-aimdo readers (not fakes): None where there is no driver or aimdo is idle."""
    aimdo = aimdo_bytes()
    assert aimdo is None or aimdo >= 0
    if torch.cuda.is_available():
        used = nvml_process_bytes(os.getpid(), CUDA)
        assert used is None or used >= 0
        peak, source = PeakGpuMemory(CUDA).read()
        assert peak >= torch.cuda.max_memory_reserved() / GIB and source in ("driver", "torch+aimdo", "torch")


def _meter(driver, aimdo, reserved):
    return PeakGpuMemory(CUDA, driver=lambda pid, dev: driver, aimdo=lambda: aimdo, torch_reserved=lambda dev: reserved)


def test_the_driver_figure_wins_over_torch_counters():
    assert _meter(30 * GIB, 24 * GIB, 6 * GIB).read() == (30.0, "driver")


def test_without_the_driver_aimdo_is_added_to_torch():
    assert _meter(None, 24 * GIB, 6 * GIB).read() == (30.0, "torch+aimdo")


def test_torch_alone_is_the_last_resort_and_the_peak_never_falls():
    meter = _meter(None, None, 6 * GIB)
    assert meter.read() == (6.0, "torch")
    meter.torch_reserved = lambda dev: 2 * GIB
    assert meter.read() == (6.0, "torch")
