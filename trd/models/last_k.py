"""Fine-tuning the last k blocks with the first L - k frozen bit for bit, and CARTL's four BatchNorm options for
the trained part: its running statistics updated by the target batches or reused from the source (BatchNorm in
eval mode), and its affine parameters trained or frozen.

The frozen body runs in eval mode (a BatchNorm in train mode would move its running statistics even with no
parameter to train), so train_mode must be called after anything that puts the whole model in train mode (the
training loop does at each epoch)."""
from __future__ import annotations

from torch import nn

BN_STATS = ("update", "reuse")
BN_AFFINE = ("train", "freeze")


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def trained_parts(model, k: int) -> list[nn.Module]:
    return [*model.last_k_blocks(k), model.neck, model.head]


def frozen_parts(model, k: int) -> list[nn.Module]:
    trained = set(model.last_k_block_names(k))
    return [model.get_submodule(name) for name in model.block_names if name not in trained]


def freeze_for_last_k(model, k: int, bn_affine: str = "train") -> None:
    """requires_grad on the last k blocks, the neck and the head only, less their BatchNorm affine parameters
    with bn_affine=freeze."""
    if bn_affine not in BN_AFFINE:
        raise ValueError(f"bn_affine must be one of {BN_AFFINE}, got {bn_affine!r}")
    model.set_trainable("last_k", k=k)
    if bn_affine == "freeze":
        for part in trained_parts(model, k):
            for bn in _batchnorms(part):
                for p in bn.parameters():
                    p.requires_grad_(False)


def train_mode(model, k: int, bn_stats: str = "update") -> None:
    """Train mode for what is trained, eval mode for the frozen body (and the trained part's BatchNorm with
    bn_stats=reuse)."""
    if bn_stats not in BN_STATS:
        raise ValueError(f"bn_stats must be one of {BN_STATS}, got {bn_stats!r}")
    model.train()
    for part in frozen_parts(model, k):
        part.eval()
    if bn_stats == "reuse":
        for part in trained_parts(model, k):
            for bn in _batchnorms(part):
                bn.eval()
