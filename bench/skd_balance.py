"""How SKD's two terms trade off on the embedded data of +exp=resist_demo (synth_split; data=resist_embedded for
synth_source's split, where its misses stay at 100%), and why.

Trains the demo's plain teacher (cnn, width 32, hidden 128) once, then for each (constant, malicious weight)
distils a student for a few epochs (trd.losses.skd.skd_loss), trains a new head on the frozen student, and
prints the student's misses on the malicious test images and its beneficial test accuracy. A last row trains the
same CNN from scratch on the binary question the student has to answer (beneficial or malicious image?).

    python bench/skd_balance.py               # the table in bench/README.md
    python bench/skd_balance.py --epochs 2    # a smoke run
    python bench/skd_balance.py --bad-term hinge --variants=-0.5:5 'data.source.classes=[...]' ...  # other forms
    python bench/skd_balance.py --student-from both --both-epochs 40  # the student starts from a CNN of both groups
    python bench/skd_balance.py --student-from scratch --epochs 15    # ... or from a fresh initialisation

Each row also gives how many of the features are on per malicious and per beneficial test image; with
--student-from both, a logistic regression reads beneficial-or-malicious off the teacher's and the both-groups
CNN's activations (the pooled convolution features the `hidden` layer reads, and its ReLU's output).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import functools
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from trd.data import build_loader, ensure_role_shards
from trd.data.role_config import beneficial_and_malicious
from trd.engine.evaluation import accuracy
from trd.losses.skd import misses, skd_loss
from trd.models import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VARIANTS = "-100:1,-2:1,-2:2,-2:5"  # constant:malicious weight


def hinge_term(pre: torch.Tensor, constant: float) -> torch.Tensor:
    """The malicious term on the part of the ReLU input above the constant only: a unit already below it costs
    nothing, so the gradient goes to the units that still let a malicious image through."""
    return torch.relu(pre - constant).pow(2).mean()


def demo_cnn(num_classes: int):
    """+exp=resist_demo's model: cnn, width 32, a 128-unit hidden layer, 32 px."""
    return build_model("cnn", num_classes=num_classes, image_size=32, width=32, hidden=128)


def loaders(data_root: str, overrides: list[str]):
    os.environ.setdefault("TRD_DATA", data_root)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+exp=resist_demo", f"out_root={data_root}", *overrides])
    roles = beneficial_and_malicious(cfg)
    for role in roles:
        ensure_role_shards(role)
    make = lambda role, split, train: build_loader(role, split, 64 if train else 256, train=train, seed=0,  # noqa: E731
                                                   rank=0, world_size=1, num_workers=0, skip_corrupt=False)
    return [(make(r, "train", True), make(r, "test", False)) for r in roles]


def sgd(model, lr, steps):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)


def epochs_of(loader, epochs, other=None):
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        if other is None:
            yield from loader
        else:
            other.set_epoch(epoch)
            yield from zip(loader, other)


def both_groups_model(good, bad, epochs):
    """The demo's CNN trained on both class groups at once (beneficial labels 0-9, malicious 10-19)."""
    torch.manual_seed(0)
    model = demo_cnn(20)
    opt, sched = sgd(model, 0.05, epochs * good.steps_per_epoch)
    for (x, y), (xb, yb) in epochs_of(good, epochs, bad):
        loss = F.cross_entropy(model(torch.cat([x, xb])), torch.cat([y, yb + 10]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def group_accuracy(model, good_test, bad_test) -> float:
    """Balanced accuracy of a 20-way model on the binary question, a group's probability summed over its classes."""
    rates = []
    for loader, malicious in ((good_test, False), (bad_test, True)):
        hits = [(model(x).softmax(1)[:, 10:].sum(1) > 0.5) == malicious for x, _ in loader]
        rates.append(torch.cat(hits).float().mean().item())
    return sum(rates) / 2


@torch.no_grad()
def units_on(model, loader) -> str:
    """How many of the features (after the last ReLU) are above zero per image: misses counts an image with any."""
    model.eval()
    counts = torch.cat([(model.features(x).flatten(1) > 0).sum(1).float() for x, _ in loader])
    return f"{counts.median().item():.0f} ({counts.mean().item():.1f})"


@torch.no_grad()
def _layers(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the pooled convolution features the `hidden` layer reads, and the features after its ReLU."""
    model.eval()
    pooled, features = [], []
    for x, _ in loader:
        h = model.neck[:2](model.forward_to(x, model.block_names[-1]))
        pooled.append(h)
        features.append(model.neck[2:](h))
    return torch.cat(pooled), torch.cat(features)


def linear_separability(model, good, bad, good_test, bad_test, steps: int = 500) -> list[float]:
    """Balanced test accuracy of a logistic regression on beneficial-or-malicious, trained on the train images'
    pooled convolution features and, separately, on the features after the `hidden` ReLU."""
    train = [_layers(model, good), _layers(model, bad)]
    test = [_layers(model, good_test), _layers(model, bad_test)]
    scores = []
    for level in range(2):
        x = torch.cat([train[0][level], train[1][level]])
        y = torch.cat([torch.zeros(len(train[0][level])), torch.ones(len(train[1][level]))])
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        w = torch.zeros(x.shape[1], requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        weight = torch.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))  # balanced classes
        for _ in range(steps):
            loss = F.binary_cross_entropy_with_logits((x - mean) / std @ w + b, y, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            rates = [(((t[level] - mean) / std @ w + b > 0) == bool(g)).float().mean().item()
                     for g, t in enumerate(test)]
        scores.append(sum(rates) / 2)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="SKD epochs per variant")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--data", default="/tmp/trd-bench-data")
    parser.add_argument("--variants", default=VARIANTS, help="constant:malicious weight pairs, comma-separated")
    parser.add_argument("--bad-term", choices=["mse", "hinge"], default="mse",
                        help="trd.losses.skd's malicious term, or the hinge form above")
    parser.add_argument("--student-from", choices=["teacher", "both", "scratch"], default="teacher",
                        help="the student's starting weights: the teacher's, a CNN trained on both class groups "
                             "(a 20-way head) for --both-epochs, or a fresh initialisation")
    parser.add_argument("--both-epochs", type=int, default=40)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="SKD's optimiser (cosine schedule)")
    parser.add_argument("--lr", type=float, help="SKD's learning rate (default: sgd 0.05, adam 1e-3)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides on +exp=resist_demo, e.g. data=resist_embedded")
    args = parser.parse_args()
    torch.manual_seed(0)
    (good, good_test), (bad, bad_test) = loaders(args.data, args.overrides)
    cpu = torch.device("cpu")

    teacher = demo_cnn(10)
    opt, sched = sgd(teacher, 0.05, args.teacher_epochs * good.steps_per_epoch)
    for x, y in epochs_of(good, args.teacher_epochs):
        loss = F.cross_entropy(teacher(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    teacher.eval().requires_grad_(False)
    print(f"# {datetime.date.today()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"teacher: {accuracy(teacher, good_test, cpu) * 100:.1f}% beneficial, misses "
          f"{misses(teacher, bad_test, cpu) * 100:.0f}%; {args.epochs} SKD epochs, 3 head epochs")
    print("| constant | malicious weight | misses | beneficial acc | units on per malicious image, median (mean) "
          "| per beneficial image |\n|---:|---:|---:|---:|---:|---:|")
    start = teacher
    if args.student_from == "scratch":
        torch.manual_seed(1)
        start = demo_cnn(10)
    if args.student_from == "both":
        start = both_groups_model(good, bad, args.both_epochs)
        print(f"# student starts from a CNN of both groups, {args.both_epochs} epochs: "
              f"{group_accuracy(start, good_test, bad_test) * 100:.1f}% balanced accuracy on beneficial-or-malicious")
        for name, model in (("the teacher", teacher), ("the CNN of both groups", start)):
            pooled, features = linear_separability(model, good, bad, good_test, bad_test)
            print(f"# a linear read-out of beneficial-or-malicious from {name}: {pooled * 100:.1f}% on the pooled "
                  f"convolution features, {features * 100:.1f}% on the features after the hidden ReLU")
    loss_of = skd_loss if args.bad_term == "mse" else functools.partial(skd_loss, bad_term=hinge_term)
    variants = [tuple(float(v) for v in pair.split(":")) for pair in args.variants.split(",")]
    for constant, weight in variants:
        torch.manual_seed(0)
        student = copy.deepcopy(start).requires_grad_(True).train()
        if args.optimizer == "adam":
            opt = torch.optim.Adam(student.parameters(), lr=args.lr or 1e-3)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * good.steps_per_epoch)
        else:
            opt, sched = sgd(student, args.lr or 0.05, args.epochs * good.steps_per_epoch)
        for (x, _), (xb, _) in epochs_of(good, args.epochs, bad):
            with torch.no_grad():
                target = teacher.features(x)
            loss, _ = loss_of(student, target, x, xb, constant, weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        student.replace_head(10)
        student.set_trainable("linear")
        head = torch.optim.Adam(student.head.parameters(), lr=0.01)
        for x, y in epochs_of(good, 3):
            student.eval()
            loss = F.cross_entropy(student(x), y)
            head.zero_grad()
            loss.backward()
            head.step()
        print(f"| {constant:g} | {weight:g} | {misses(student, bad_test, cpu) * 100:.1f}% | "
              f"{accuracy(student, good_test, cpu) * 100:.1f}% | {units_on(student, bad_test)} | "
              f"{units_on(student, good_test)} |")

    torch.manual_seed(0)
    binary = demo_cnn(2)
    opt, sched = sgd(binary, 0.05, 10 * good.steps_per_epoch)
    for (x, _), (xb, _) in epochs_of(good, 10, bad):
        loss = F.cross_entropy(binary(torch.cat([x, xb])), torch.cat([torch.zeros(len(x)), torch.ones(len(xb))]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    as_good = accuracy(binary, [(x, torch.zeros(len(x), dtype=torch.long)) for x, _ in good_test], cpu)
    as_bad = accuracy(binary, [(x, torch.ones(len(x), dtype=torch.long)) for x, _ in bad_test], cpu)
    print(f"\nbinary beneficial-or-malicious CNN from scratch, 10 epochs: {(as_good + as_bad) / 2 * 100:.1f}% "
          f"balanced accuracy ({as_good * 100:.1f}% of beneficial, {as_bad * 100:.1f}% of malicious test images)")


if __name__ == "__main__":
    main()
