"""Cost of one (Reverse-)MAML meta step relative to the plain cross-entropy steps it simulates.

For one task (a support batch the inner loop trains on for k steps, a query batch of the same size the adapted
parameters are scored on), times the meta-gradient of trd.meta.maml.meta_gradient:

* ``second``   exact second order through k inner SGD steps (PyTorch's own double backwards);
* ``second-fast``  the same inside trd.losses.fast_double_backward (trd's hand-written double backwards of
                   convolution and BatchNorm);
* ``first``    the first-order option (inner gradients detached);

each divided by (k + 1) plain cross-entropy steps (forward + backward) on one batch: the work of the k
fine-tuning steps plus the query step that the meta step stands for. All configurations of a table run in
turn within every repetition of one process; medians and ratios of medians are reported.

    python bench/meta_step.py                    # cnn and resnet18, batch 64, k = 1 3 5, 3 repetitions
    python bench/meta_step.py --quick            # a smoke run
"""
from __future__ import annotations

import statistics

import torch
from timing import ce_step, inner_loop_bench, timed

from trd.losses.double_backward_mode import fast_double_backward
from trd.meta.inner import InnerOptimizer
from trd.meta.maml import Task, meta_gradient
from trd.models import build_model

CLASSES = 10


def main() -> None:
    args, device = inner_loop_bench(__doc__, "meta step vs (k + 1) CE steps", batch=64, k=[1, 3, 5])
    print("| model | k | CE step ms | second | second-fast | first |")
    print("|---|---:|---:|---:|---:|---:|")
    opt = InnerOptimizer("sgd", lr=0.01)
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, num_classes=CLASSES, image_size=32).to(device).train()
        batch = lambda: (torch.randn(args.batch, 3, 32, 32, device=device),
                         torch.randint(0, CLASSES, (args.batch,), device=device))
        task = Task(batch(), batch())
        for k in args.k:
            runs = {"ce": [], "second": [], "second-fast": [], "first": []}
            for _ in range(args.repetitions):
                runs["ce"].append(timed(lambda: ce_step(model, task.support), device))
                runs["second"].append(timed(lambda: meta_gradient(model, [task], k, opt), device))
                with fast_double_backward():
                    runs["second-fast"].append(timed(lambda: meta_gradient(model, [task], k, opt), device))
                runs["first"].append(timed(lambda: meta_gradient(model, [task], k, opt, second_order=False), device))
            ce = statistics.median(runs["ce"])
            ratio = {key: statistics.median(v) / ((k + 1) * ce) for key, v in runs.items() if key != "ce"}
            print(f"| {name} | {k} | {1000 * ce:.1f} | {ratio['second']:.2f}x | {ratio['second-fast']:.2f}x | "
                  f"{ratio['first']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
