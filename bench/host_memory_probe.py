"""Seconds and minor page faults per training step, for one kind of step in steady state.

Runs one configuration of bench/gc_step.py (ResNet-18, batch 128) in this process for a few untimed
and then timed steps, with glibc's heap kept (trd's CPU stage processes) or released (glibc's default),
and prints CPU seconds and minor page faults (getrusage) per timed step:

    python bench/host_memory_probe.py ce --host-memory release
    python bench/host_memory_probe.py gc --chunks 2 --host-memory keep
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from trd.engine.host_memory import keep_freed_host_memory
from trd.losses import gradient_collision_loss
from trd.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["ce", "gc", "gc-per-chunk"])
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--host-memory", choices=["keep", "release"], default="keep")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.host_memory == "keep" and not keep_freed_host_memory():
        parser.error("this C library does not take glibc's mallopt settings")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, image_size=32).train()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32, generator=generator)
    y = torch.randint(10, (args.batch,), generator=generator)
    execution = "per_chunk" if args.kind == "gc-per-chunk" else "auto"

    def step() -> None:
        model.zero_grad(set_to_none=True)
        if args.kind == "ce":
            loss = F.cross_entropy(model(x), y)
        else:
            loss = gradient_collision_loss(model, x, y, chunks=args.chunks, execution=execution)
        loss.backward()

    for _ in range(args.warmup_steps):
        step()
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
    for _ in range(args.steps):
        step()
    seconds = (time.process_time() - start) / args.steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps
    chunks = "" if args.kind == "ce" else f" c={args.chunks}"
    print(f"{args.kind}{chunks}, host memory {args.host_memory}: {seconds:.3f} s/step, {faults:.0f} minor faults/step")


if __name__ == "__main__":
    main()
