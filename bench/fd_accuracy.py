"""How close hvp=finite_difference's gradient is to the exact one: cosine similarity of the two GC gradients
(and of the fused disposal step's, GC + SRC-KD) on the same batch and weights.

Models: ResNet-18, WRN-28-4 and the small CNN of trd.models at 32 px, float32, train mode, on the embedded
source task's images; once at initialisation and once after --train-steps steps of SGD on that task (the state
a transfer ends in: a model that fits its data), for c = 2, 8, 16 chunks.

    python bench/fd_accuracy.py                     # batch 64, 300 training steps
    python bench/fd_accuracy.py --quick             # batch 16, 20 training steps, c = 2 8
"""
from __future__ import annotations

import argparse
import copy
import datetime
import platform
import sys

import torch
import torch.nn.functional as F

from trd.data.embedded import get_embedded
from trd.data.synth import generate
from trd.losses import distillation_loss, frozen_teacher
from trd.losses.gradient_collision import JointTerm, collision_with_joint_loss
from trd.models import build_model

MODELS = {"resnet18": {}, "wrn28_4": {}, "cnn": {}}


def source_images(size: int):
    images, labels = generate(get_embedded("synth_source").task, "train", size=size)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.25)
    return x, torch.from_numpy(labels)


def train(model, x, y, steps: int, batch: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = torch.randint(len(x), (batch,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(x[rows]), y[rows]).backward()
        optimizer.step()


def gradient(model, x, y, chunks: int, hvp: str, teacher=None, fd_scale: float = 0.1) -> torch.Tensor:
    model = copy.deepcopy(model)
    joint = None
    if teacher is not None:
        with torch.no_grad():
            teacher_logits = teacher(x)
        joint = JointTerm(lambda logits, rows: distillation_loss(logits, teacher_logits[rows], 4.0))
    gc, kd, _ = collision_with_joint_loss(model, x, y, chunks, joint, hvp=hvp, fd_scale=fd_scale)
    (gc if kd is None else 0.5 * gc + 0.5 * kd).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()  # cosines of long vectors in float64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 8, 16])
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--fd-scale", type=float, nargs="+", default=[0.1], help="dispose.fd_scale values to compare")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.chunks, args.train_steps = 16, [2, 8], 20
    x_all, y_all = source_images(32)
    x, y = x_all[: args.batch], y_all[: args.batch]
    classes = int(y_all.max()) + 1
    print(f"{datetime.date.today()}, torch {torch.__version__}, {platform.machine()} CPU, "
          f"{torch.get_num_threads()} threads, batch {args.batch}, float32, embedded source images (32 px)\n")
    print("| model | weights | c | fd_scale | cos(GC) | cos(GC + SRC-KD) |\n| --- | --- | ---: | ---: | ---: | ---: |")
    worst = 1.0
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, num_classes=classes, image_size=32, **MODELS[name]).train()
        for point in ("init", f"after {args.train_steps} steps"):
            if point != "init":
                train(model, x_all, y_all, args.train_steps, args.batch)
            teacher = frozen_teacher(model)
            for chunks in args.chunks:
                exact_gc = gradient(model, x, y, chunks, "exact")
                exact_dtl = gradient(model, x, y, chunks, "exact", teacher)
                for scale in args.fd_scale:
                    cos_gc = F.cosine_similarity(exact_gc, gradient(model, x, y, chunks, "finite_difference",
                                                                    fd_scale=scale), dim=0).item()
                    cos_dtl = F.cosine_similarity(exact_dtl, gradient(model, x, y, chunks, "finite_difference", teacher,
                                                                      scale), dim=0).item()
                    worst = min(worst, cos_gc, cos_dtl)
                    print(f"| {name} | {point} | {chunks} | {scale:g} | {cos_gc:.5f} | {cos_dtl:.5f} |", flush=True)
    print(f"\nworst cosine: {worst:.5f}", file=sys.stderr)


if __name__ == "__main__":
    main()
