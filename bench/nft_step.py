"""Cost of one non-fine-tunable disposal step relative to a plain cross-entropy step.

The nft step is what the dispose stage runs for method nft: a retaining cross-entropy forward and backward on the
source batch plus a simulated attacker (full fine-tuning, SGD with momentum) that adapts the body and a fresh
head for k inner steps on batches of the same size and is scored on the source batch, differentiated back to
the body second-order (through trd's hand-written double backwards) or first-order. Ratios are against one CE
step (what a plain training step costs) and against k + 2 CE steps (the k inner steps, the query and the retain
passes the step stands for). All configurations run in turn within every repetition of one process; medians
and ratios of medians are reported.

    python bench/nft_step.py                  # cnn and resnet18, batch 32, k = 1 8 32, 3 repetitions
    python bench/nft_step.py --quick          # a smoke run
"""
from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from timing import ce_step, inner_loop_bench, timed

from trd.losses.double_backward_mode import fast_double_backward
from trd.losses.resistance import inverse_cross_entropy
from trd.meta.inner import InnerOptimizer
from trd.meta.simulated_attack import SimulatedAttacker, attacked_loss
from trd.models import build_model

CLASSES = 10


def _nft_step(model, batch, inner, attacker) -> None:
    model.zero_grad(set_to_none=True)
    resist, _ = attacked_loss(model, attacker, lambda t: inner[t], batch, CLASSES, inverse_cross_entropy,
                              torch.Generator().manual_seed(0), double_backward=fast_double_backward)
    (0.5 * F.cross_entropy(model(batch[0]), batch[1]) + 0.5 * resist).backward()


def main() -> None:
    args, device = inner_loop_bench(__doc__, "nft step vs CE step", batch=32, k=[1, 8, 32])
    print("| model | k | CE step ms | second vs 1 CE | first vs 1 CE | second vs k+2 CE | first vs k+2 CE |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, num_classes=CLASSES, image_size=32).to(device).train()

        def batch():
            return (torch.randn(args.batch, 3, 32, 32, device=device),
                    torch.randint(0, CLASSES, (args.batch,), device=device))

        query = batch()
        for k in args.k:
            inner = [batch() for _ in range(k)]
            runs = {"ce": [], "second": [], "first": []}
            for _ in range(args.repetitions):
                runs["ce"].append(timed(lambda: ce_step(model, query), device))
                for order in ("second", "first"):
                    attacker = SimulatedAttacker(InnerOptimizer("momentum", lr=0.01), k, "full", order == "second")
                    runs[order].append(timed(lambda: _nft_step(model, query, inner, attacker), device))
            ce = statistics.median(runs["ce"])
            one = {key: statistics.median(v) / ce for key, v in runs.items() if key != "ce"}
            print(f"| {name} | {k} | {1000 * ce:.1f} | {one['second']:.1f}x | {one['first']:.1f}x | "
                  f"{one['second'] / (k + 2):.2f}x | {one['first'] / (k + 2):.2f}x |", flush=True)


if __name__ == "__main__":
    main()
