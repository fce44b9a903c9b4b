"""One timed call of a training step, after an untimed one (the steady state of a training loop), synchronised
on CUDA so the time is the device's and not the launch's."""
from __future__ import annotations

import argparse
import datetime
import platform
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


def ce_step(model: torch.nn.Module, batch) -> None:
    """A plain cross-entropy forward and backward: the unit the step benchmarks divide by."""
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()


def inner_loop_bench(doc: str, title: str, batch: int, k: list[int]) -> tuple[argparse.Namespace, torch.device]:
    """The command line of the benchmarks of a step with k inner steps (meta_step, nft_step): parsed, the device
    prepared, and a header line naming the machine printed."""
    from trd.engine.host_memory import keep_freed_host_memory

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet18"])
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--k", nargs="+", type=int, default=k)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="batch 8, k = 1 2, cnn only, one repetition")
    args = parser.parse_args()
    if args.quick:
        args.models, args.batch, args.k, args.repetitions = ["cnn"], 8, [1, 2], 1
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_host_memory()
    print(f"# {title}, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch {args.batch}")
    return args, device
