#!/usr/bin/env python
"""Which disposal regime makes gradient collision (GC) actually dispose on the embedded data?

    python bench/gc_regime.py --list                            # the regime catalogue
    python bench/gc_regime.py                                   # the screening sweep, seed 0, fixed attacker
    python bench/gc_regime.py --regimes gc-naive gc-cls-kdt rand-kdt-lam0.2 --seeds 0 1 --grid 0.003 0.03
    python bench/gc_regime.py --table                           # every stored row

Findings and the recommended regime: bench/README.md, "GC disposal regime on the embedded data".

In-process and plain torch (no SLURM, no DeepSpeed), on the demo CNN and the embedded tasks
(synth_source 20 classes, synth_target 10, synth_piggyback 10; generated under --work):

1. pretrain on synth_source and transfer to synth_target with the demo recipe, once; both models
   and the decoded data are cached under --work, so later sweeps start at step 2;
2. per regime, dispose the transferred model with trd's own step (trd.stages.dispose.DisposalStep,
   trd.losses), subclassed only where a regime needs an option trd does not have yet;
3. measure target accuracy, source accuracy through the private source head, and PL accuracy: an
   attacker fine-tunes the released body with a NEW head (SGD momentum 0.9, wd 5e-4, cosine,
   batch 32, crop+flip) on synth_piggyback and on 10% of synth_source, then tests. "fixed" is the
   attacker at --attack-lr after the last epoch (the paper's number); "best" is the maximum over
   --attack-lr and --grid and over evaluated epochs (an upper bound on this attacker).
   The same attacker on the transferred model (TL) and on a random init (scratch) gives the
   references. Disposal ratio = (PL_TL - PL_X) / (PL_TL - PL_scratch).

Results go to <work>/results.jsonl, one line per (regime, seed, attack setting); a rerun skips
what is there (--force redoes it), and --table prints every stored row without running anything.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trd.data import EMBEDDED, build_loader
from trd.data.augment import random_crop_flip
from trd.engine.optim import build_optimizer, build_scheduler
from trd.losses import frozen_teacher
from trd.losses.disposal_step import DisposalStep, class_disjoint_order
from trd.models.cnn import SmallCNN
from trd.models.source_view import WithSourceHead

# The demo experiment's recipe (configs/exp/demo.yaml + configs/optim/sgd.yaml), so the models
# disposed here are the ones the demo's dispose stage would get.
PRETRAIN = {"epochs": 8, "batch_size": 64, "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                                                      "weight_decay": 5e-4, "schedule": "cosine"}}
TRANSFER = {"epochs": 15, "batch_size": 32, "optim": {**PRETRAIN["optim"], "lr": 0.02}}
SOURCE_FRACTION = 0.1

# dispose: section of configs/config.yaml; every regime states only what differs.
BASE = {"method": "gc", "retain": "src-kd", "lam": 0.5, "temperature": 4.0, "chunks": 4, "epochs": 3,
        "batch_size": 64, "target_batch_size": 32, "grad_clip": 1.0,
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine", "warmup_steps": 0},
        # Bench-only options (not in trd yet; see the report): which head SRC-KD distils, GC's |G|^2
        # weight, class-disjoint chunks, the trainable part of the body.
        "kd_head": "source", "gc_alpha": 1.0, "class_chunks": False, "trainable": "all"}


def regime(**changes) -> dict:
    optim = {**BASE["optim"], **changes.pop("optim", {})}
    return {**BASE, **changes, "optim": optim}


SGD = {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "schedule": "cosine"}
REGIMES: dict[str, dict] = {
    # trd's defaults as they stand (the failing setting, shorter).
    "gc-naive": regime(),
    "ngc-naive": regime(method="ngc"),
    "gc-sgd1e-2": regime(optim={**SGD, "lr": 1e-2}),
    "gc-sgd1e-3": regime(optim={**SGD, "lr": 1e-3}),
    # SRC-KD through the TARGET head: keep what the released model answers on source images,
    # not the source head's answers (which is the source task itself).
    "gc-kdt": regime(kd_head="target"),
    "ngc-kdt": regime(method="ngc", kd_head="target"),
    "gc-kdt-lam0.9": regime(kd_head="target", lam=0.9),
    "gc-tgtkd": regime(retain="tgt-kd"),
    "gc-tgtce": regime(retain="tgt-ce"),
    # Class-disjoint chunks: iid chunks make E[g_m.g_n] = |E g|^2 (the collision is only the
    # squared full-batch gradient), class-disjoint chunks add -sum_m |E g_m|^2, which rewards
    # class-conditional gradients, i.e. forgetting each class.
    "gc-cls-kdt": regime(kd_head="target", class_chunks=True),
    "ngc-cls-kdt": regime(method="ngc", kd_head="target", class_chunks=True),
    "gc-cls-kdt-lam0.9": regime(kd_head="target", class_chunks=True, lam=0.9),
    "gc-cls-kdt-c2": regime(kd_head="target", class_chunks=True, chunks=2),
    "gc-cls-kdt-c8": regime(kd_head="target", class_chunks=True, chunks=8),
    "gc-cls-kdt-lr1e-2": regime(kd_head="target", class_chunks=True, optim={"lr": 1e-2}),
    "gc-cls-kdt-lr1e-4": regime(kd_head="target", class_chunks=True, optim={"lr": 1e-4}),
    "gc-cls-kdt-sgd": regime(kd_head="target", class_chunks=True, optim={**SGD, "lr": 1e-2}),
    "gc-cls-kdt-6ep": regime(kd_head="target", class_chunks=True, epochs=6),
    "gc-cls-kdt-last2": regime(kd_head="target", class_chunks=True, trainable="last2"),
    "gc-cls-kdt-lam0.9-c8": regime(kd_head="target", class_chunks=True, lam=0.9, chunks=8),
    "gc-cls-kdt-lam0.9-6ep": regime(kd_head="target", class_chunks=True, lam=0.9, epochs=6),
    "gc-cls-tgtce-lam0.9": regime(retain="tgt-ce", class_chunks=True, lam=0.9),
    "gc-cls-tgtkd": regime(retain="tgt-kd", class_chunks=True),
    "gc-cls-srckd": regime(class_chunks=True),
    "gc-cls-srckd-lam0.9": regime(class_chunks=True, lam=0.9),
    # |G|^2 down-weighted: L = (alpha |G|^2 - sum_m |g_m|^2) / (2 C(c,2)); alpha = 1 is GC.
    "gc-a0.5-kdt": regime(kd_head="target", gc_alpha=0.5),
    "gc-a0-kdt": regime(kd_head="target", gc_alpha=0.0),
    # The paper's baselines under the same budget and retain.
    "rand-kdt": regime(method="rand", kd_head="target"),
    "unif-kdt": regime(method="unif", kd_head="target"),
    "neg-kdt": regime(method="neg", kd_head="target"),
    "neg-naive": regime(method="neg"),
    # The baselines at a smaller lam, to compare with GC at the same target accuracy.
    "rand-kdt-lam0.2": regime(method="rand", kd_head="target", lam=0.2),
    "unif-kdt-lam0.2": regime(method="unif", kd_head="target", lam=0.2),
}
DEFAULT_SWEEP = ["gc-naive", "ngc-naive", "gc-sgd1e-2", "gc-kdt", "ngc-kdt", "gc-tgtkd", "gc-cls-kdt",
                 "ngc-cls-kdt", "gc-cls-kdt-lam0.9", "gc-a0-kdt", "rand-kdt", "unif-kdt", "neg-kdt"]


# ---------------------------------------------------------------- data

def role(name: str, data_dir: Path, fraction: float | None = None) -> dict:
    dataset = EMBEDDED[name]
    folder = data_dir / name
    node = {"train": str(folder / f"train-{{000000..{dataset.train_shards - 1:06d}}}.tar"),
            "test": str(folder / f"test-{{000000..{dataset.test_shards - 1:06d}}}.tar"),
            "num_classes": dataset.num_classes, "image_size": 32, "embedded": name}
    if fraction is not None:
        node.update(fraction=fraction, fraction_seed=0)
    return node


def load_split(node: dict, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    # Decoded once through trd's loader (no augmentation in eval mode); augmentation happens per batch below.
    xs, ys = zip(*build_loader(node, split, 500, train=False))
    return torch.cat(xs), torch.cat(ys)


def load_data(work: Path) -> dict:
    cache = work / "cache" / "data.pt"
    if cache.exists():
        return torch.load(cache)
    data_dir = work / "data"
    source, target, pig = (role(n, data_dir) for n in ("synth_source", "synth_target", "synth_piggyback"))
    data = {"source": (load_split(source, "train"), load_split(source, "test")),
            "target": (load_split(target, "train"), load_split(target, "test")),
            "piggyback": (load_split(pig, "train"), load_split(pig, "test")),
            "source10": (load_split(role("synth_source", data_dir, SOURCE_FRACTION), "train"), None)}
    data["source10"] = (data["source10"][0], data["source"][1])
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, cache)
    return data


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # trd pads uint8 images with 0, which is -1 after its (x/255 - 0.5)/0.5 normalisation.
    return random_crop_flip(x + 1, generator) - 1


def batches(x, y, batch_size: int, generator: torch.Generator, train: bool = True):
    order = torch.randperm(len(x), generator=generator) if train else torch.arange(len(x))
    stop = len(x) - len(x) % batch_size if train else len(x)
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        yield (augment(x[idx], generator) if train else x[idx]), y[idx]


@torch.no_grad()
def accuracy(model, split) -> float:
    was = model.training
    model.eval()
    x, y = split
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(500), y.split(500)))
    model.train(was)
    return 100.0 * correct / len(y)


# ---------------------------------------------------------------- supervised training (pretrain, transfer, attack)

def fit(model, train_split, optim: dict, epochs: int, batch_size: int, seed: int, test_split=None,
        eval_epochs=()) -> dict:
    """Cross-entropy training; returns {epoch: test acc} at eval_epochs (and the last), or {"diverged": epoch}."""
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * (len(train_split[0]) // batch_size)
    optimizer = build_optimizer(model.parameters(), optim)
    schedule = build_scheduler(optimizer, optim, total_steps=steps)
    model.train()
    accs = {}
    for epoch in range(1, epochs + 1):
        for x, y in batches(*train_split, batch_size, generator):
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                return {"diverged": epoch}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if test_split is not None and (epoch in eval_epochs or epoch == epochs):
            accs[epoch] = accuracy(model, test_split)
    return accs


def base_models(work: Path, data: dict) -> tuple[SmallCNN, torch.nn.Linear, dict]:
    """The transferred model (target head), its source head and their accuracies; trained once, then cached."""
    cache = work / "cache" / "transferred.pt"
    if cache.exists():
        saved = torch.load(cache)
    else:
        torch.manual_seed(0)
        model = SmallCNN(20, 32)
        start = time.time()
        fit(model, data["source"][0], PRETRAIN["optim"], PRETRAIN["epochs"], PRETRAIN["batch_size"], seed=0)
        pretrain_acc = accuracy(model, data["source"][1])
        source_head = copy.deepcopy(model.head)
        model.replace_head(10)
        fit(model, data["target"][0], TRANSFER["optim"], TRANSFER["epochs"], TRANSFER["batch_size"], seed=0)
        saved = {"model": model.state_dict(), "source_head": source_head.state_dict(),
                 "acc": {"pretrain_source": pretrain_acc, "target": accuracy(model, data["target"][1]),
                         "source": accuracy(WithSourceHead(model, source_head).source, data["source"][1])},
                 "seconds": time.time() - start}
        torch.save(saved, cache)
    model = SmallCNN(10, 32)
    model.load_state_dict(saved["model"])
    head = torch.nn.Linear(model.feature_dim, 20)
    head.load_state_dict(saved["source_head"])
    return model, head, saved["acc"]


# ---------------------------------------------------------------- disposal

def collision_terms(model, x, y, chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """|G|^2 and sum_m |g_m|^2 with their double-backward graphs (plain autograd: fine for the demo CNN)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.autograd.grad(F.cross_entropy(model(xm), ym), params, create_graph=True, allow_unused=True,
                                 materialize_grads=True)
             for xm, ym in zip(x.chunk(chunks), y.chunk(chunks))]
    total = [torch.stack(parts).sum(0) for parts in zip(*grads)]
    return sum((g * g).sum() for g in total), sum((g * g).sum() for chunk in grads for g in chunk)


class BenchDisposalStep(DisposalStep):
    """trd's disposal step (its `chunking` and `kd_head` options came out of this bench) plus the |G|^2
    weight this bench tried and trd does not have."""

    def __init__(self, cfg, *args, **kwargs):
        super().__init__({**cfg, "chunking": "class" if cfg["class_chunks"] else "random"}, *args, **kwargs)

    def _unlearn(self, module, x, y):
        if self.cfg["chunking"] == "class" and self.method == "gc" and float(self.cfg["gc_alpha"]) != 1.0:
            x, y = class_disjoint_order(x, y, module.source_head.out_features, self.generator)
        alpha = float(self.cfg["gc_alpha"])
        if self.method == "gc" and alpha != 1.0:
            chunks = int(self.cfg["chunks"])
            total_sq, chunk_sq = collision_terms(module.source, x, y, chunks)
            loss = (alpha * total_sq - chunk_sq) / (chunks * (chunks - 1))
            return loss, {"total_sq_norm": float(total_sq.detach()), "sum_chunk_sq_norms": float(chunk_sq.detach())}
        return super()._unlearn(module, x, y)



class _Engine:
    """What DisposalStep reads off trd's engine."""

    def __init__(self, module):
        self.module = module


def cycle(x, y, batch_size, generator):
    while True:
        yield from batches(x, y, batch_size, generator)


def set_trainable(module: WithSourceHead, spec: str) -> list[torch.nn.Parameter]:
    if spec == "all":
        module.requires_grad_(True)
    else:  # "last<k>": the last k blocks, neck, target head and source head
        module.requires_grad_(False)
        module.model.set_trainable("last_k", k=int(spec[4:]))
        module.source_head.requires_grad_(True)
    return [p for p in module.parameters() if p.requires_grad]


def dispose(model, source_head, cfg: dict, data: dict, seed: int) -> tuple[WithSourceHead, dict]:
    torch.manual_seed(seed)
    module = WithSourceHead(copy.deepcopy(model), copy.deepcopy(source_head))
    teacher = frozen_teacher(module)
    generator = torch.Generator().manual_seed(seed)
    target_batches = cycle(*data["target"][0], cfg["target_batch_size"], torch.Generator().manual_seed(seed + 1))
    cfg = {**cfg, "source_classes": source_head.out_features}
    step = BenchDisposalStep(cfg, teacher, target_batches, seed=seed * 1000)
    params = set_trainable(module, cfg["trainable"])
    steps_per_epoch = len(data["source"][0][0]) // cfg["batch_size"]
    optimizer = build_optimizer(params, cfg["optim"])
    schedule = build_scheduler(optimizer, cfg["optim"], total_steps=cfg["epochs"] * steps_per_epoch)
    engine, epoch_log, global_step = _Engine(module), [], 0
    module.train()
    for epoch in range(cfg["epochs"]):
        for x, y in batches(*data["source"][0], cfg["batch_size"], generator):
            optimizer.zero_grad(set_to_none=True)
            loss, _ = step(engine, x, y, global_step)
            if not torch.isfinite(loss):
                return module, {"diverged_at_step": global_step, "log": epoch_log}
            loss.backward()
            if cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
            optimizer.step()
            schedule.step()
            global_step += 1
        means = {k.removeprefix("loss/"): v for k, v in step.epoch_means().items()}
        means.update(target=accuracy(module, data["target"][1]), source=accuracy(module.source, data["source"][1]))
        epoch_log.append(means)
    return module, {"log": epoch_log}


# ---------------------------------------------------------------- piggyback attack

def attack(body, task: str, data: dict, lr: float, epochs: int, seed: int, num_classes: int) -> dict:
    """PL accuracy of one attacker run on a copy of body with a new head; {} entries for diverged runs."""
    victim = copy.deepcopy(body)
    torch.manual_seed(10_000 + seed)
    victim.replace_head(num_classes)
    victim.requires_grad_(True)
    optim = {"name": "sgd", "lr": lr, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "schedule": "cosine"}
    return fit(victim, data[task][0], optim, epochs, 32, seed=seed, test_split=data[task][1],
               eval_epochs=range(2, epochs + 1, 2))


PL_TASKS = {"piggyback": 10, "source10": 20}


def pl_accuracy(body, data: dict, args, seed: int) -> dict:
    out = {}
    for task, classes in PL_TASKS.items():
        runs = {lr: attack(body, task, data, lr, args.attack_epochs, seed, classes)
                for lr in [args.attack_lr, *[g for g in args.grid if g != args.attack_lr]]}
        fixed = runs[args.attack_lr]
        finite = [acc for run in runs.values() if "diverged" not in run for acc in run.values()]
        out[task] = {"fixed": None if "diverged" in fixed else fixed[args.attack_epochs],
                     "best": max(finite) if finite else None,
                     "runs": {f"{lr:g}": run for lr, run in runs.items()}}
    return out


# ---------------------------------------------------------------- driver

def attack_key(args) -> str:
    return f"e{args.attack_epochs}-lr{args.attack_lr:g}-grid{','.join(f'{g:g}' for g in sorted(args.grid))}"


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def fmt(v, digits=1) -> str:
    return "   -" if v is None else f"{v:5.{digits}f}"


def print_table(rows: list[dict]) -> None:
    head = (f"{'regime':22s} {'seed':>4s} {'target':>6s} {'source':>6s} | {'pig fix':>7s} {'pig best':>8s} | "
            f"{'src10 fix':>9s} {'src10 best':>10s} | {'|G|^2 e1->eN':>19s} {'sum|g_m|^2 e1->eN':>19s} {'min':>4s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        pl = r["pl"]
        log = r.get("log") or []
        g = s = ""
        if log and "total_sq_norm" in log[0]:
            g = f"{log[0]['total_sq_norm']:.2e}->{log[-1]['total_sq_norm']:.2e}"
            s = f"{log[0]['sum_chunk_sq_norms']:.2e}->{log[-1]['sum_chunk_sq_norms']:.2e}"
        div = " DIVERGED" if r.get("diverged_at_step") is not None else ""
        print(f"{r['regime']:22s} {r['seed']:4d} {fmt(r['acc']['target']):>6s} {fmt(r['acc']['source']):>6s} | "
              f"{fmt(pl['piggyback']['fixed']):>7s} {fmt(pl['piggyback']['best']):>8s} | "
              f"{fmt(pl['source10']['fixed']):>9s} {fmt(pl['source10']['best']):>10s} | {g:>19s} {s:>19s} "
              f"{r.get('minutes', 0):4.1f}{div}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.environ.get("TRD_GC_REGIME_DIR", "/tmp/trd-gc-regime"),
                        help="data, cached models and results.jsonl (default %(default)s)")
    parser.add_argument("--regimes", nargs="+", default=DEFAULT_SWEEP, help="names from --list, or 'all'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="disposal + attacker seeds")
    parser.add_argument("--epochs", type=int, help="override every regime's disposal epochs")
    parser.add_argument("--attack-epochs", type=int, default=10)
    parser.add_argument("--attack-lr", type=float, default=0.01, help="the fixed attacker (paper scheme)")
    parser.add_argument("--grid", type=float, nargs="*", default=[], help="extra attacker lrs for best-of-grid")
    # One thread: on the shared 2-core box two threads per process oversubscribe the cores and a
    # GC step ran 10x slower than with one (3.4 s vs 0.33 s at batch 64).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="rerun rows already in results.jsonl")
    parser.add_argument("--list", action="store_true", help="print the regime catalogue and exit")
    parser.add_argument("--table", action="store_true", help="print the stored results and exit")
    args = parser.parse_args()
    if args.list:
        for name, cfg in REGIMES.items():
            diff = {k: v for k, v in cfg.items() if k != "optim" and v != BASE[k]}
            optim = {k: v for k, v in cfg["optim"].items() if v != BASE["optim"].get(k)}
            print(f"{name:22s} {diff} {optim or ''}")
        return 0
    work = Path(args.work)
    results_path = work / "results.jsonl"
    if args.table:
        print_table(load_results(results_path))
        return 0
    names = list(REGIMES) if args.regimes == ["all"] else args.regimes
    unknown = [n for n in names if n not in REGIMES]
    if unknown:
        parser.error(f"unknown regime(s) {unknown}: see --list")
    torch.set_num_threads(args.threads)
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} threads", flush=True)

    data = load_data(work)
    model, source_head, base_acc = base_models(work, data)
    print(f"pretrained source acc {base_acc['pretrain_source']:.1f}; transferred: target {base_acc['target']:.1f}, "
          f"source (source head) {base_acc['source']:.1f}", flush=True)
    key = attack_key(args)
    done = {(r["regime"], r["seed"], r["attack"]) for r in load_results(results_path)}
    rows = [r for r in load_results(results_path) if r["attack"] == key]

    def run(name: str, seed: int, body_fn) -> None:
        if (name, seed, key) in done and not args.force:
            return
        start = time.time()
        row = {"regime": name, "seed": seed, "attack": key, **body_fn()}
        row["pl"] = pl_accuracy(row.pop("body"), data, args, seed)
        row["minutes"] = (time.time() - start) / 60
        record(results_path, row)
        rows.append(row)
        print_table([row])

    for seed in args.seeds:
        run("TL", seed, lambda: {"body": model, "acc": {"target": base_acc["target"], "source": base_acc["source"]}})

        def scratch():
            torch.manual_seed(20_000 + seed)
            return {"body": SmallCNN(10, 32), "acc": {"target": None, "source": None}}
        run("scratch", seed, scratch)
        for name in names:
            cfg = dict(REGIMES[name], **({"epochs": args.epochs} if args.epochs else {}))

            def disposed(cfg=cfg, seed=seed, name=name):
                # Disposed models are kept, so another attacker setting reuses them instead of disposing again.
                digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
                path = work / "disposed" / f"{name}-s{seed}-{digest}.pt"
                if path.exists() and not args.force:
                    saved = torch.load(path)
                else:
                    module, info = dispose(model, source_head, cfg, data, seed)
                    saved = {"body": module.model.state_dict(), "config": cfg, **info,
                             "acc": {"target": accuracy(module, data["target"][1]),
                                     "source": accuracy(module.source, data["source"][1])}}
                    path.parent.mkdir(exist_ok=True)
                    torch.save(saved, path)
                body = SmallCNN(10, 32)
                body.load_state_dict(saved.pop("body"))
                return {"body": body, **saved}
            run(name, seed, disposed)
    print()
    order = {n: i for i, n in enumerate(["TL", "scratch", *names])}
    print_table(sorted((r for r in rows if r["regime"] in order and r["seed"] in args.seeds),
                       key=lambda r: (order[r["regime"]], r["seed"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
