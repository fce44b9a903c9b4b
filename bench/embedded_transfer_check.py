#!/usr/bin/env python
"""Does pretraining on synth_source help synth_target? Transfer vs. scratch with a tiny CNN on CPU.

  python bench/embedded_transfer_check.py                 # one seed, ~2-3 minutes on 2 cores
  python bench/embedded_transfer_check.py --seeds 0 1 2   # spread over init seeds

Generates the embedded shards (into --data-dir, default a temp folder) and reads them
through trd.data.build_loader, so it also exercises the real data path. The transfer
run pretrains on synth_source, replaces the head and fine-tunes everything on
synth_target; the scratch runs train the same net on synth_target with the same
epochs and recipe, at two learning rates (the better one is reported). Exit status 1
if transfer does not beat the better scratch run by --min-gap points.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn as nn

from trd.data import EMBEDDED, build_loader


def tiny_cnn(num_classes: int, width: int = 16) -> nn.Sequential:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(3, width), *block(width, width), nn.MaxPool2d(2),
        *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),
        *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes),
    )


def role(name: str, data_dir: str) -> dict:
    dataset = EMBEDDED[name]
    folder = os.path.join(data_dir, name)
    return {
        "train": os.path.join(folder, f"train-{{000000..{dataset.train_shards - 1:06d}}}.tar"),
        "test": os.path.join(folder, f"test-{{000000..{dataset.test_shards - 1:06d}}}.tar"),
        "num_classes": dataset.num_classes,
        "image_size": 32,
        "embedded": name,
    }


def train(model: nn.Module, data_role: dict, epochs: int, lr: float, batch_size: int, seed: int) -> None:
    loader = build_loader(data_role, "train", batch_size, train=True, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * loader.steps_per_epoch, pct_start=0.15)
    model.train()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader:
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


@torch.no_grad()
def accuracy(model: nn.Module, data_role: dict) -> float:
    model.eval()
    correct = total = 0
    for images, labels in build_loader(data_role, "test", 250, train=False):
        correct += int((model(images).argmax(1) == labels).sum())
        total += len(labels)
    return 100.0 * correct / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="where embedded shards are generated (default: a temp folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--source-epochs", type=int, default=10)
    parser.add_argument("--target-epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-gap", type=float, default=10.0, help="required transfer - scratch gap in points")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="trd-embedded-")
    source, target = role("synth_source", data_dir), role("synth_target", data_dir)
    print(f"data: {data_dir}; source {EMBEDDED['synth_source'].task}, target {EMBEDDED['synth_target'].task}")

    gaps = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        start = time.time()
        model = tiny_cnn(source["num_classes"], args.width)
        train(model, source, args.source_epochs, lr=0.1, batch_size=64, seed=seed)
        source_acc = accuracy(model, source)
        pretrain_s = time.time() - start
        model[-1] = nn.Linear(model[-1].in_features, target["num_classes"])
        start = time.time()
        train(model, target, args.target_epochs, lr=0.05, batch_size=32, seed=seed)
        transfer_acc = accuracy(model, target)
        finetune_s = time.time() - start
        scratch = {}
        for lr in (0.05, 0.1):
            torch.manual_seed(seed)
            fresh = tiny_cnn(target["num_classes"], args.width)
            train(fresh, target, args.target_epochs, lr=lr, batch_size=32, seed=seed)
            scratch[lr] = accuracy(fresh, target)
        best = max(scratch.values())
        gaps.append(transfer_acc - best)
        print(f"seed {seed}: source test acc {source_acc:.1f}% (pretrain {pretrain_s:.0f}s) | "
              f"target test acc: transfer {transfer_acc:.1f}% (fine-tune {finetune_s:.0f}s), "
              f"scratch {scratch[0.05]:.1f}% @lr0.05 / {scratch[0.1]:.1f}% @lr0.1 | gap {transfer_acc - best:+.1f} points",
              flush=True)
    worst = min(gaps)
    verdict = "PASS" if worst >= args.min_gap else "FAIL"
    print(f"{verdict}: transfer beats the best scratch run by {worst:+.1f} points at worst (required {args.min_gap:+.1f})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
