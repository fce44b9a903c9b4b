"""Cost of one gradient-collision step relative to one plain cross-entropy step.

For ResNet-18 (CIFAR variant, 32 px) and one batch, times forward + backward of:

* ``ce``     plain cross-entropy on the whole batch (the unit of every ratio);
* ``gc``     ``trd.losses.gradient_collision_loss`` with c chunks (its default execution: one batched
             forward of all chunks for ResNet-18);
* ``gc-per-chunk``  the same loss with ``execution="per_chunk"`` (each chunk forwarded on its own);
* ``naive``  the straightforward autograd version: per-chunk gradients with create_graph=True,
             flattened with torch.cat, explicit dot product of every pair, backward;
* ``dtl``    the full disposal step as the dispose stage runs it: (1 - lam) SRC-KD + lam GC, the KD
             teacher a frozen copy forwarded on the same source batch, the student's KD logits taken
             from GC's own forward and differentiated in GC's backward (the fused step);
* ``dtl-unfused``  the same objective with SRC-KD on its own forward and backward (dispose.fused=false);
* ``gc-fd``, ``dtl-fd``  ``gc`` and ``dtl`` with ``hvp="finite_difference"`` (trd.losses.finite_difference).

All timings of a table come from one process: every repetition runs every configuration in
turn, so load from other work on the machine hits all of them alike; the table reports medians
and ratios of medians.  Each configuration's timed step follows an untimed step of the same
configuration (``--warmup-steps``), so it is timed in the steady state of a training loop, not
in the allocator state the previous configuration left.  Host memory is kept in the process
(:func:`trd.engine.host_memory.keep_freed_host_memory`, as trd's CPU stage processes do);
``--host-memory release`` times glibc's default instead, whose page faults on every large tensor
dominate CPU timings.  Peak memory of each configuration is measured in a fresh
subprocess running a single step: on CPU the peak resident set during the step (VmHWM, reset
through /proc/self/clear_refs just before it) minus the resident set before it, on CUDA
``torch.cuda.max_memory_allocated`` over the allocation before the step.

    python bench/gc_step.py                        # batch 128, c = 2 4 8 16, 3 repetitions
    python bench/gc_step.py --quick                # a smoke run: batch 16, c = 2 4, 1 repetition
    python bench/gc_step.py --threads 1 --clock cpu  # CPU-time ratios, robust on a shared machine
    python bench/gc_step.py --host-memory release  # glibc's default malloc (page faults every step)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import subprocess
import sys
import time

import psutil
import torch
import torch.nn.functional as F
from torch import nn

from trd.engine.host_memory import keep_freed_host_memory
from trd.losses import distillation_loss, dtl_objective, frozen_teacher, gradient_collision_loss
from trd.losses.gradient_collision import JointTerm, collision_with_joint_loss

CLASSES = 10
LAMBDA = 0.5
TEMPERATURE = 4.0


def build_resnet18(source: str) -> tuple[nn.Module, str]:
    if source in ("auto", "trd"):
        try:
            from trd.models import build_model

            return build_model("resnet18", num_classes=CLASSES, image_size=32), "trd.models resnet18"
        except Exception as error:  # trd.models is developed separately; fall back to torchvision's
            if source == "trd":
                raise
            print(f"trd.models unavailable ({error!r}); using torchvision resnet18", file=sys.stderr)
    import torchvision

    model = torchvision.models.resnet18(num_classes=CLASSES)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model, "torchvision resnet18, 3x3 stem, no maxpool"


def naive_collision_loss(model: nn.Module, inputs, targets, chunks: int):
    params = [p for p in model.parameters() if p.requires_grad]
    flats = []
    for x, y in zip(inputs.chunk(chunks), targets.chunk(chunks)):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        flats.append(torch.cat([g.reshape(-1) for g in grads]))
    total = sum(torch.dot(flats[m], flats[n]) for m in range(chunks) for n in range(m + 1, chunks))
    return total / math.comb(chunks, 2)


class Step:
    """One configuration: a callable doing forward + backward on the shared model and batch."""

    def __init__(self, kind: str, chunks: int, model, teacher, inputs, targets):
        self.kind, self.chunks = kind, chunks
        self.model, self.teacher, self.inputs, self.targets = model, teacher, inputs, targets

    @property
    def name(self) -> str:
        return self.kind if self.kind == "ce" else f"{self.kind} c={self.chunks}"

    def __call__(self) -> None:
        model, x, y = self.model, self.inputs, self.targets
        model.zero_grad(set_to_none=True)
        if self.kind == "ce":
            loss = F.cross_entropy(model(x), y)
        elif self.kind == "gc":
            loss = gradient_collision_loss(model, x, y, chunks=self.chunks)
        elif self.kind == "gc-fd":
            loss = gradient_collision_loss(model, x, y, chunks=self.chunks, hvp="finite_difference")
        elif self.kind == "gc-per-chunk":
            loss = gradient_collision_loss(model, x, y, chunks=self.chunks, execution="per_chunk")
        elif self.kind == "naive":
            loss = naive_collision_loss(model, x, y, self.chunks)
        elif self.kind == "dtl-unfused":
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            retain = distillation_loss(model(x), teacher_logits, TEMPERATURE)
            loss = dtl_objective(retain, gradient_collision_loss(model, x, y, chunks=self.chunks), LAMBDA)
        else:
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            joint = JointTerm(lambda logits, rows: distillation_loss(logits, teacher_logits[rows], TEMPERATURE))
            hvp = "finite_difference" if self.kind == "dtl-fd" else "exact"
            gc, retain, _ = collision_with_joint_loss(model, x, y, self.chunks, joint, hvp=hvp)
            loss = dtl_objective(retain, gc, LAMBDA)
        loss.backward()


def setup(args, kind: str, chunks: int) -> tuple[Step, str]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    model, model_name = build_resnet18(args.model)
    model = model.to(device).train()
    teacher = frozen_teacher(model) if kind.startswith("dtl") else None
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(args.batch, 3, 32, 32, generator=generator).to(device)
    targets = torch.randint(CLASSES, (args.batch,), generator=generator).to(device)
    return Step(kind, chunks, model, teacher, inputs, targets), model_name


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def configurations(args) -> list[tuple[str, int]]:
    configs = [("ce", 1)]
    for kind in args.kinds:
        configs += [(kind, c) for c in args.chunks]
    return configs


def time_all(args) -> tuple[dict[str, list[float]], str]:
    """Median-ready timings, every repetition running every configuration once, in turn."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model, model_name = build_resnet18(args.model)
    model = model.to(device).train()
    teacher = frozen_teacher(model)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(args.batch, 3, 32, 32, generator=generator).to(device)
    targets = torch.randint(CLASSES, (args.batch,), generator=generator).to(device)
    steps = [Step(kind, c, model, teacher, inputs, targets) for kind, c in configurations(args)]
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {step.name: [] for step in steps}
    for rep in range(args.reps):
        for step in steps:
            for _ in range(args.warmup_steps):
                step()
            synchronize(args.device)
            start = clock()
            step()
            synchronize(args.device)
            times[step.name].append(clock() - start)
        latest = {name: round(values[-1], 3) for name, values in times.items()}
        print(f"repetition {rep + 1}/{args.reps}: {json.dumps(latest)}", file=sys.stderr, flush=True)
    return times, model_name


def measure_memory(args, kind: str, chunks: int) -> float:
    """Peak extra memory (MiB) of one step; meant to run in a fresh process."""
    step, _ = setup(args, kind, chunks)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    before = psutil.Process().memory_info().rss
    _reset_peak_rss()
    step()
    return (_peak_rss() - before) / 2**20


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so import and setup peaks don't count.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_all(args) -> dict[str, float]:
    peaks = {}
    for kind, chunks in configurations(args):
        command = [
            sys.executable, __file__, "--memory-of", f"{kind}:{chunks}", "--batch", str(args.batch),
            "--device", args.device, "--model", args.model, "--threads", str(args.threads),
            # Always glibc's default here: a kept heap would hide how much of it the step really uses.
            "--host-memory", "release",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        name = kind if kind == "ce" else f"{kind} c={chunks}"
        peaks[name] = json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]
        print(f"memory {name}: {peaks[name]:.0f} MiB", file=sys.stderr)
    return peaks


def table(times: dict[str, list[float]], peaks: dict[str, float] | None) -> str:
    medians = {name: statistics.median(values) for name, values in times.items()}
    unit = medians["ce"]
    lines = ["| step | c | median s | x CE step | peak extra MiB |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, median in medians.items():
        kind, _, chunks = name.partition(" c=")
        peak = f"{peaks[name]:.0f}" if peaks else "-"
        lines.append(f"| {kind} | {chunks or '-'} | {median:.3f} | {median / unit:.2f} | {peak} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", choices=["auto", "trd", "torchvision"], default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, which other work on a shared machine "
        "disturbs far less (use with --threads 1, where CPU time is compute time)",
    )
    kinds = ["gc", "gc-per-chunk", "naive", "dtl", "dtl-unfused", "gc-fd", "dtl-fd"]
    parser.add_argument("--kinds", nargs="+", default=kinds, choices=kinds, help="rows besides ce")
    parser.add_argument("--warmup-steps", type=int, default=1,
                        help="untimed steps of a configuration before each of its timed steps")
    parser.add_argument("--host-memory", choices=["keep", "release"], default="keep",
                        help="keep: freed host memory stays in the process (trd's CPU stages); release: glibc's default")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory subprocesses")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 16, c = 2 4, 1 repetition")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures host CPU time; use the wall clock on an accelerator")
    torch.set_num_threads(args.threads)
    if args.host_memory == "keep" and not keep_freed_host_memory():
        print("this C library does not take glibc's mallopt settings: timing its default allocator", file=sys.stderr)
    if args.quick:
        args.batch, args.chunks, args.reps = 16, [2, 4], 1

    if args.memory_of:
        kind, chunks = args.memory_of.split(":")
        print(json.dumps({"peak_mib": measure_memory(args, kind, int(chunks))}))
        return

    times, model_name = time_all(args)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or platform.machine()} CPU"
    header = (
        f"{datetime.date.today()}, torch {torch.__version__}, {device}, {args.threads} threads, "
        f"{model_name}, batch {args.batch}, {args.reps} repetitions (medians), {args.clock} clock, "
        f"host memory {args.host_memory}, {args.warmup_steps} untimed step(s) before each timed one\n"
    )
    # Timings first: the memory subprocesses can take long (or be killed) on a busy machine.
    print(header + "\n" + table(times, None) + "\n", flush=True)
    print("raw timings (s): " + json.dumps({k: [round(v, 3) for v in vs] for k, vs in times.items()}), flush=True)
    if not args.no_memory:
        _return_freed_memory()
        print("\n" + header + "\n" + table(times, memory_all(args)), flush=True)


def _return_freed_memory() -> None:
    # glibc keeps freed heap pages; give them back so the memory subprocesses have room.
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


if __name__ == "__main__":
    main()
