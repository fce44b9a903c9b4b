"""The batched execution of the GC loss on trd's own architectures: same loss, gradient and running
statistics as the per-chunk execution (float64), and which models "auto" batches."""
from __future__ import annotations

import copy

import pytest
import torch
from model_zoo import NUM_CLASSES, build_small
from torch import nn

from trd.losses import gradient_collision_loss
from trd.losses.chunked_forward import supports_chunked_forward

TIGHT = dict(rtol=1e-9, atol=1e-12)
BATCHED = ["cnn", "cnn_no_bn", "resnet18", "resnet50", "wrn10_2", "mobilenet_v2"]


def run(model, inputs, targets, chunks, normalized, execution):
    model.zero_grad(set_to_none=True)
    loss, stats = gradient_collision_loss(model, inputs, targets, chunks=chunks, normalized=normalized,
                                          return_stats=True, execution=execution)
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()], stats


# NGC shares the chunked layers with GC; resnet50 and mobilenet_v2 (the slowest) run GC only, and resnet50's
# bottlenecks (32 s in float64, their 1x1 and strided convolutions also in mobilenet_v2's blocks) only with
# `python -m pytest -m extended`.
CASES = [pytest.param(c, n, id=f"{c}-{'ngc' if n else 'gc'}", marks=[pytest.mark.extended] if c == "resnet50" else [])
         for c in BATCHED for n in (False, True) if not (c in ("resnet50", "mobilenet_v2") and n)]


@pytest.mark.parametrize("config_id, normalized", CASES)
def test_batched_equals_per_chunk_on_every_convolutional_architecture(config_id, normalized):
    torch.manual_seed(0)
    model = build_small(config_id).double().train()
    per_chunk = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(6, 3, 16, 16, generator=generator, dtype=torch.float64)
    targets = torch.randint(NUM_CLASSES, (6,), generator=generator)

    loss, grads, stats = run(model, inputs, targets, 3, normalized, "batched")
    want_loss, want_grads, want_stats = run(per_chunk, inputs, targets, 3, normalized, "per_chunk")

    torch.testing.assert_close(loss, want_loss, **TIGHT)
    # Deep models' GC gradients reach 1e6, and float64 round-off is relative to the gradient's scale: some
    # gradients are zero in exact arithmetic (MobileNetV2's projection BatchNorm biases, whose shift the next
    # block's BatchNorm removes) and both executions give them round-off of that scale.
    scale = max(1.0, max(want.abs().max().item() for want in want_grads))
    for (name, _), got, want in zip(model.named_parameters(), grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * scale, msg=name)
    assert sum(g.abs().sum() for g in grads) > 0
    torch.testing.assert_close(stats.total_sq_norm, want_stats.total_sq_norm, **TIGHT)
    for (name, got), want in zip(model.named_buffers(), per_chunk.buffers()):
        torch.testing.assert_close(got, want, **TIGHT, msg=name)


def test_auto_batches_convolutional_float_models_only():
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(0)
    for config_id in BATCHED:
        assert supports_chunked_forward(build_small(config_id), x), config_id
    assert not supports_chunked_forward(build_small("vit"), x)  # LayerNorm and attention weights
    assert not supports_chunked_forward(build_small("cnn").to(torch.bfloat16), x.to(torch.bfloat16))
    assert not supports_chunked_forward(nn.SyncBatchNorm.convert_sync_batchnorm(build_small("cnn")), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not supports_chunked_forward(build_small("cnn"), x)
    # frozen layers of any kind do not matter: only trainable parameters need chunk views
    frozen_vit_body = build_small("vit")
    for p in frozen_vit_body.parameters():
        p.requires_grad_(False)
    frozen_vit_body.head.requires_grad_(True)
    assert type(frozen_vit_body.head) is nn.Linear and supports_chunked_forward(frozen_vit_body, x)


def test_auto_falls_back_to_per_chunk_for_a_bf16_model():
    torch.manual_seed(0)
    model = build_small("cnn", width=4).to(torch.bfloat16).train()
    inputs = torch.randn(4, 3, 16, 16, dtype=torch.bfloat16)
    targets = torch.arange(4) % NUM_CLASSES
    with pytest.raises(ValueError, match="float32/float64"):
        gradient_collision_loss(model, inputs, targets, chunks=2, execution="batched")
    gradient_collision_loss(model, inputs, targets, chunks=2).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
