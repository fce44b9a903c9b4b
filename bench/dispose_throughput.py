"""Throughput of whole stages shaped as ``+exp=gc_cifar100_cifar10`` (ResNet-18, batch 128, the recipe's disposal:
GC with c = 4 class chunks, SRC-KD through the target head, the fused step, the target budget's validations), on
CIFAR-sized data: noise images in CIFAR-100's and CIFAR-10's on-disk layouts (bench/raw_layouts.py) turned into
shards by make_shards. One epoch of pretraining (the CE reference), of transfer and of GC disposal run through
launch/submit.py with the local launcher; images/s of a stage = its optimiser steps x batch / its wall seconds
(start-up, checkpoints and validations included: what a user's job gets).

    python bench/dispose_throughput.py                        # 50,000 source images: for a GPU
    python bench/dispose_throughput.py --train-images 1024    # a CPU smoke run
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from raw_layouts import write_cifar

from trd.data.sources import make_shards

REPO = Path(__file__).resolve().parents[1]


def shards(work: Path, variant: str, train: int, test: int) -> dict:
    raw = write_cifar(str(work / f"{variant}-raw"), variant, train, test)
    return make_shards(variant, out=str(work / variant), root=raw, maxcount=1000)["splits"]


def stage_rate(out: Path, name: str, batch: int) -> tuple[float, dict]:
    plan = json.loads((out / "plan.json").read_text())
    metrics = json.loads((Path(plan["stages"][name]["dir"]) / "metrics.json").read_text())
    return metrics["steps"] * batch / metrics["timings"]["stage_seconds"], metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=50_000, help="per dataset (CIFAR's 50,000)")
    parser.add_argument("--test-images", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=4, help="data.num_workers (the CIFAR configs' 4)")
    parser.add_argument("--work", default=tempfile.mkdtemp(prefix="trd-dispose-throughput-"))
    args = parser.parse_args()
    work = Path(args.work)
    source, target = shards(work, "cifar100", args.train_images, args.test_images), \
        shards(work, "cifar10", args.train_images, args.test_images)
    overrides = [
        "+exp=gc_cifar100_cifar10", "launcher=local", f"out_root={work / 'out'}", "name=throughput",
        f"data.num_workers={args.workers}", "data.piggyback={}",
        f"data.source.train='{source['train']['pattern']}'", f"data.source.test='{source['test']['pattern']}'",
        f"data.target.train='{target['train']['pattern']}'", f"data.target.test='{target['test']['pattern']}'",
        "data.target.fraction=0.1", "pretrain.epochs=1", "transfer.epochs=1", "dispose.epochs=1",
        "dispose.methods=[gc]", "stages=[pretrain,transfer,dispose]"]
    proc = subprocess.run([sys.executable, "launch/submit.py", *overrides], cwd=REPO, text=True)
    if proc.returncode != 0:
        return proc.returncode
    out = work / "out" / "throughput"
    ce, _ = stage_rate(out, "pretrain", 128)
    gc, metrics = stage_rate(out, "dispose/gc", 128)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{datetime.date.today()}, torch {torch.__version__}, {device}, {args.train_images} source images, "
          f"data.num_workers={args.workers}\n")
    print("| stage | steps | images/s | / pretrain |\n| --- | ---: | ---: | ---: |")
    print(f"| pretrain (CE, batch 128) | - | {ce:.0f} | 1.00 |")
    print(f"| dispose/gc (batch 128, c = 4) | {metrics['steps']} | {gc:.0f} | {gc / ce:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
