"""One timed call of a training step, after an untimed one (the steady state of a training loop), synchronised
on CUDA so the time is the device's and not the launch's."""
from __future__ import annotations

import time

import torch


def timed(fn, device: torch.device) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
