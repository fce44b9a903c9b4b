"""Cost of one PGD-k adversarial training step relative to the plain cross-entropy steps it is made of.

For one batch, times trd.attacks.adversarial_training.adversarial_training_loss plus its backward pass:

* ``pgd-at``      plain PGD adversarial training (lam = 0): k attack steps, then the training step on x';
* ``pgd-at+fdm``  CARTL's step with Feature Distance Minimisation (lam = 0.01) at the output of the block before
                  the last four (the first block where a model has fewer than five), which adds a clean forward
                  to that block;

each divided by (k + 1) plain cross-entropy steps (forward + backward) on the same batch. The k forward-backward
passes of the attack down to the input, plus the training step, are the whole cost an adversarial step should have:
no parameter gradients during the attack, no module copies; the target is <= 1.1x. All configurations of a table
run in turn within every repetition of one process; medians and ratios of medians are reported.

    python bench/adversarial_step.py                 # wrn28_4 and resnet18, batch 128, k = 7 10, 3 repetitions
    python bench/adversarial_step.py --quick         # a smoke run
    python bench/adversarial_step.py --device cuda
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics

import torch
import torch.nn.functional as F
from timing import timed

from trd.attacks.adversarial_training import PgdSettings, adversarial_training_loss
from trd.attacks.pgd import PixelSpace
from trd.engine.host_memory import keep_freed_host_memory
from trd.models import build_model

CLASSES = 10
FDM_LAM = 0.01


def _ce_step(model, x, y) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def _adversarial_step(model, x, y, space, pgd, lam=0.0, boundary=None) -> None:
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(0)
    loss, _ = adversarial_training_loss(model, x, y, space, pgd, lam=lam, boundary=boundary, generator=g)
    loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["wrn28_4", "resnet18"], help="wrn28_4, resnet18 or cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--k", nargs="+", type=int, default=[7, 10])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="batch 16, k = 2, cnn only, one repetition")
    args = parser.parse_args()
    if args.quick:
        args.models, args.batch, args.k, args.repetitions = ["cnn"], 16, [2], 1
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_host_memory()
    print(f"# PGD-k adversarial step vs (k + 1) CE steps, {datetime.date.today()}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {device}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}")
    print("| model | k | step | CE step ms | adversarial step ms | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    space = PixelSpace((0.5,) * 3, (0.5,) * 3)
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, num_classes=CLASSES, image_size=32).to(device).train()
        boundary = model.block_names[-5] if len(model.block_names) >= 5 else model.block_names[0]
        x = torch.randn(args.batch, 3, 32, 32, device=device).clamp(-1.0, 1.0)
        y = torch.randint(0, CLASSES, (args.batch,), device=device)
        for k in args.k:
            pgd = PgdSettings(eps=8 / 255, step=2 / 255, steps=k, random_start=True)
            runs = {"ce": [], "pgd-at": [], "pgd-at+fdm": []}
            for _ in range(args.repetitions):
                runs["ce"].append(timed(lambda: _ce_step(model, x, y), device))
                runs["pgd-at"].append(timed(lambda: _adversarial_step(model, x, y, space, pgd), device))
                runs["pgd-at+fdm"].append(timed(
                    lambda: _adversarial_step(model, x, y, space, pgd, lam=FDM_LAM, boundary=boundary), device))
            ce = statistics.median(runs["ce"])
            for step in ("pgd-at", "pgd-at+fdm"):
                adv = statistics.median(runs[step])
                print(f"| {name} | {k} | {step} | {1000 * ce:.1f} | {1000 * adv:.1f} | {adv / ((k + 1) * ce):.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
