"""The one training loop every stage uses: resumable mid-epoch, divergence-guarded, rank-0 logging.

A step's randomness (dropout, random labels) is seeded from (seed, rank, global step), and the data order
is a pure function of (seed, epoch, rank), so a job resumed from a checkpoint replays exactly the steps an
uninterrupted run would have taken.
"""
from __future__ import annotations

import math
from collections.abc import Collection
from typing import Callable

import torch

from trd.engine.checkpoint import CheckpointManager
from trd.engine.distributed import DistEnv
from trd.engine.tensorboard import StageLogger
from trd.losses.finite import NonFiniteError, check_finite

StepFn = Callable[[object, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, dict]]


def step_seed(seed: int, rank: int, global_step: int) -> int:
    return (seed * 1_000_003 + rank * 7919 + global_step) % (2**63 - 1)


def _grad_norm_after_step(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    return float(norm.item() if torch.is_tensor(norm) else norm)


def train(
    engine,
    loader,
    step_fn: StepFn,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    ckpt: CheckpointManager,
    log: StageLogger,
    env: DistEnv,
    seed: int,
    checkpoint_every: int = 0,
    on_epoch_end: Callable[[int], dict] | None = None,
    evaluate_at: Collection[int] = (),
    on_evaluate: Callable[[int], dict] | None = None,
    on_start: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
    desc: str = "train",
) -> dict:
    """Runs step_fn (forward + loss) -> backward -> engine.step for `epochs` epochs or `max_steps` optimiser
    steps (a step budget, which may end mid-epoch), resuming from ckpt if present.

    step_fn(engine, images, labels, global_step) returns (loss, scalars to log); on_evaluate(global_step) runs
    after each step listed in evaluate_at and returns scalars to log. on_start(global_step) runs once the
    checkpoint (if any) is loaded; stop() is asked then and after each evaluation, and True ends the run early
    (checkpointed, so a resumed job ends too). Returns the final progress dict.
    """
    if (epochs is None) == (max_steps is None):
        raise ValueError("train() takes epochs or max_steps, one of them")
    if max_steps is not None:
        epochs = -(-max_steps // loader.steps_per_epoch)
    progress = ckpt.load(engine) or {"epoch": 0, "step": 0, "global_step": 0}
    epoch, start_step, global_step = progress["epoch"], progress["step"], progress["global_step"]
    if on_start is not None:
        on_start(global_step)
    if (max_steps is not None and global_step >= max_steps) or (stop is not None and stop()):
        return progress
    device = engine.device
    zero_stage = engine.zero_optimization_stage()
    log.live.phase(desc, global_step, max_steps if max_steps is not None else epochs * loader.steps_per_epoch)
    while epoch < epochs:
        loader.set_epoch(epoch)
        log.live.note(epoch=epoch + 1, epochs=epochs)
        batches = loader.iter_from(start_step) if start_step else iter(loader)
        bar = log.progress(batches, total=loader.steps_per_epoch, initial=start_step, desc=f"{desc} {epoch + 1}/{epochs}")
        engine.train()
        for step, (images, labels) in enumerate(bar, start=start_step):
            torch.manual_seed(step_seed(seed, env.rank, global_step))
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss, scalars = step_fn(engine, images, labels, global_step)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise NonFiniteError(f"non-finite loss {loss_value} at epoch {epoch} step {step}")
            engine.backward(loss)
            if zero_stage == 0:  # ZeRO 1/2 keep gradients in their own buffers; their norm is checked below
                check_finite(loss, engine.module, step=global_step)
            engine.step()
            norm = _grad_norm_after_step(engine)
            if norm is not None and not math.isfinite(norm):
                raise NonFiniteError(f"non-finite gradient norm at epoch {epoch} step {step}")
            global_step += 1
            log.live.step(global_step, loss_value)
            if global_step % 10 == 0 or step + 1 == loader.steps_per_epoch:
                log.scalars({"loss": loss_value, **scalars}, global_step, prefix=f"{desc}/")
                log.scalar(f"{desc}/lr", engine.get_lr()[0], global_step)
                bar.set_postfix(loss=f"{loss_value:.3f}")
            if global_step in evaluate_at and on_evaluate is not None:
                log.scalars(on_evaluate(global_step), global_step, prefix="eval/")
                if stop is not None and stop():
                    bar.close()
                    last = step + 1 == loader.steps_per_epoch
                    stopped = {"epoch": epoch + last, "step": 0 if last else step + 1, "global_step": global_step}
                    ckpt.save(engine, stopped)
                    return stopped
            budget_spent = max_steps is not None and global_step == max_steps
            if step + 1 < loader.steps_per_epoch and (
                    budget_spent or (checkpoint_every and global_step % checkpoint_every == 0)):
                ckpt.save(engine, {"epoch": epoch, "step": step + 1, "global_step": global_step})
            if budget_spent and step + 1 < loader.steps_per_epoch:
                bar.close()
                return {"epoch": epoch, "step": step + 1, "global_step": global_step}
        bar.close()
        epoch, start_step = epoch + 1, 0
        if on_epoch_end is not None:
            log.scalars(on_epoch_end(epoch), epoch, prefix="epoch/")
        ckpt.save(engine, {"epoch": epoch, "step": 0, "global_step": global_step})
    if global_step == 0:  # an untrained model is never passed on as trained
        raise ValueError(f"{desc} ran no optimiser step ({epochs} epochs of {loader.steps_per_epoch} steps): give it "
                         f"at least one epoch of at least one batch")
    return {"epoch": epoch, "step": 0, "global_step": global_step}
