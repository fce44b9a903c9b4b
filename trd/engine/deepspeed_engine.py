"""DeepSpeed engine around a model: ZeRO stage and precision from config, fp32 + gloo on CPU."""
from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from trd.engine.distributed import DistEnv

SUPPORTED_ZERO_STAGES = (0, 1, 2)


def resolve_precision(requested: str) -> str:
    """'auto' means bf16 where the GPU has it, fp32 elsewhere (CPU runs and tests)."""
    requested = str(requested)
    if requested == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if requested not in ("fp32", "bf16"):
        raise ValueError(f"deepspeed.precision={requested!r} is not supported: use auto, fp32 or bf16")
    if requested == "bf16" and not torch.cuda.is_available():
        raise ValueError("deepspeed.precision=bf16 needs a GPU: use deepspeed.precision=fp32 (or auto) on CPU")
    return requested


def deepspeed_config(ds: Mapping, micro_batch: int, world_size: int, grad_clip: float) -> dict:
    stage = int(ds.get("zero_stage", 0))
    if stage not in SUPPORTED_ZERO_STAGES:
        raise ValueError(
            f"deepspeed.zero_stage={stage} is not supported: trd's second-order losses need the full "
            f"gradients that ZeRO 0-2 keep; use one of {SUPPORTED_ZERO_STAGES}"
        )
    cfg = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "train_batch_size": micro_batch * world_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        # trd hands DeepSpeed its own torch optimiser (SGD/Adam/AdamW), which ZeRO handles fine.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        # Always explicit: DeepSpeed (0.19) clips at norm 1.0 when the key is absent, which would silently
        # rescale every large gradient (a GC step's, typically).
        "gradient_clipping": float(grad_clip or 0.0),
    }
    if resolve_precision(ds.get("precision", "auto")) == "bf16":
        cfg["bf16"] = {"enabled": True}
    return cfg


def build_engine(model: torch.nn.Module, optimizer, scheduler, ds: Mapping, micro_batch: int,
                 env: DistEnv, grad_clip: float = 0.0):
    import deepspeed

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(ds, micro_batch, env.world_size, grad_clip),
        dist_init_required=False,
    )
    return engine
