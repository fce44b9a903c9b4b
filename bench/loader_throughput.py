"""Images per second of trd's WebDataset loader alone (shard reading, image decode, crop/flip augmentation,
normalisation, batching) per worker count, on three kinds of shards:

- ``embedded``: the embedded source task's shards (PNG) at each of --sizes;
- ``cifar10``: a CIFAR-10 folder in torchvision's on-disk layout (``cifar-10-batches-py``, uniform-noise pixels:
  incompressible, so the dearest PNG decode a 32 px image can have), turned into shards by ``launch/make_shards.py``;
- ``tinyimagenet``: a TinyImageNet tree (``train/<wnid>/images/*.JPEG``, ``val/val_annotations.txt``) of 64 px
  noise JPEGs at PIL's default quality, through ``make_shards.py imagefolder --tinyimagenet`` (JPEG bytes kept).

Each configuration reads up to --batches batches of --batch after a warm-up batch; no model runs, so the figure is
what the loader can feed at most. Per-worker rate = images/s / max(1, workers).

    python bench/loader_throughput.py                              # all three layouts, workers 0 1 2
    python bench/loader_throughput.py --layouts cifar10 --workers 2
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time

import torch
from raw_layouts import write_cifar, write_tinyimagenet

from trd.data import build_loader
from trd.data.sources import make_shards

RAW_IMAGES = 4096  # train images per raw layout: 24 batches of 128 after a warm-up batch, with room to spare


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


def raw_layout_role(layout: str, root: str) -> tuple[dict, int]:
    """Writes the raw layout under ``root``, shards it with make_shards, returns (role node, image size)."""
    raw, out = os.path.join(root, f"{layout}-raw"), os.path.join(root, f"{layout}-shards")
    if layout == "cifar10":
        result, size = make_shards("cifar10", out=out, root=write_cifar(raw, "cifar10", RAW_IMAGES, 256)), 32
    else:
        result, size = make_shards("imagefolder", out=out, root=write_tinyimagenet(raw, RAW_IMAGES, 64)), 64
    splits = result["splits"]
    role = {"num_classes": result["num_classes"], "image_size": size, "augment": True,
            "train": splits["train"]["pattern"], "test": splits["test"]["pattern"]}
    return role, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="+", choices=["embedded", "cifar10", "tinyimagenet"],
                        default=["embedded", "cifar10", "tinyimagenet"])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sizes of the embedded rows")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--root", default=os.environ.get("TRD_DATA") or tempfile.mkdtemp(prefix="trd-loader-"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # a data worker's share; the main process only iterates
    os.makedirs(args.root, exist_ok=True)
    print(f"{datetime.date.today()}, torch {torch.__version__}, {platform.machine()} CPU ({os.cpu_count()} cores), "
          f"batch {args.batch}, {args.batches} batches after one warm-up batch\n")
    print("| shards | px | workers | images/s | images/s per worker |\n| --- | ---: | ---: | ---: | ---: |")
    configurations = []
    for layout in args.layouts:
        if layout == "embedded":
            configurations += [("embedded (PNG)", size, {
                "embedded": "synth_source", "num_classes": 20, "image_size": size, "augment": True,
                "train": f"{args.root}/synth_source/{size}px/train-{{000000..000003}}.tar",
                "test": f"{args.root}/synth_source/{size}px/test-{{000000..000001}}.tar"}) for size in args.sizes]
        else:
            role, size = raw_layout_role(layout, tempfile.mkdtemp(prefix=f"trd-{layout}-", dir=args.root))
            label = "CIFAR-10 layout (noise PNG)" if layout == "cifar10" else "TinyImageNet layout (noise JPEG)"
            configurations.append((label, size, role))
    for label, size, role in configurations:
        for workers in args.workers:
            images_per_s = rate(role, workers, args.batch, args.batches)
            print(f"| {label} | {size} | {workers} | {images_per_s:.0f} | {images_per_s / max(1, workers):.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
