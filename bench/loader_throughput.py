"""Images per second of trd's WebDataset loader alone (shard reading, PNG decode, crop/flip augmentation,
normalisation, batching) on the embedded source task's shards, per worker count, at 32 and 64 px.

Each configuration reads one training epoch (up to --batches batches of --batch) after a warm-up batch; no
model runs, so the figure is what the loader can feed at most. Per-worker rate = images/s / max(1, workers).

    python bench/loader_throughput.py                       # workers 0 1 2, 32 and 64 px
    python bench/loader_throughput.py --workers 0 --sizes 32
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time

import torch

from trd.data import build_loader


def rate(role: dict, workers: int, batch: int, batches: int) -> float:
    loader = build_loader(role, "train", batch, train=True, num_workers=workers)
    loader.set_epoch(0)
    iterator = iter(loader)
    next(iterator)  # worker start-up and the first shard open are not throughput
    start, images = time.perf_counter(), 0
    for count, (x, _) in enumerate(iterator):
        images += x.shape[0]
        if count + 1 >= batches:
            break
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--root", default=os.environ.get("TRD_DATA") or tempfile.mkdtemp(prefix="trd-loader-"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # a data worker's share; the main process only iterates
    print(f"{datetime.date.today()}, torch {torch.__version__}, {platform.machine()} CPU ({os.cpu_count()} cores), "
          f"batch {args.batch}, {args.batches} batches after one warm-up batch, embedded synth_source shards (PNG)\n")
    print("| px | workers | images/s | images/s per worker |\n| ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        role = {"embedded": "synth_source", "num_classes": 20, "image_size": size, "augment": True,
                "train": f"{args.root}/synth_source/{size}px/train-{{000000..000003}}.tar",
                "test": f"{args.root}/synth_source/{size}px/test-{{000000..000001}}.tar"}
        for workers in args.workers:
            images_per_s = rate(role, workers, args.batch, args.batches)
            print(f"| {size} | {workers} | {images_per_s:.0f} | {images_per_s / max(1, workers):.0f} |", flush=True)


if __name__ == "__main__":
    main()
