"""TrdModel: the block-addressable classifier interface every trd architecture implements.

A model is ``blocks (in block_names order) -> neck -> head``:

* the blocks are ordinary submodules registered at the dotted paths listed in
  ``block_names`` (so ``model.get_submodule(name)`` and state-dict keys agree with them);
* ``neck`` maps the last block's output to the penultimate features (final norm, pooling);
  it has no natural place among the blocks, and since it sits between the last block and
  the head it is counted as part of the "last k" for every k;
* ``head`` is a plain ``nn.Linear(feature_dim, num_classes)`` that transfer replaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

FEATURES_TAP = "features"
TRAINABLE_MODES = ("full", "last_k", "linear")  # the one vocabulary of what a training run updates


class TrdModel(nn.Module):
    name: str
    num_classes: int
    image_size: int
    feature_dim: int
    options: dict[str, Any]
    head: nn.Module
    neck: nn.Module
    block_names: list[str]

    def __init__(self, name: str, num_classes: int, image_size: int, options: dict[str, Any]):
        super().__init__()
        self.name = name
        self.num_classes = num_classes
        self.image_size = image_size
        # Resolved build options (defaults filled in): enough, with name/num_classes/image_size,
        # for build_model to rebuild the same architecture from saved metadata.
        self.options = dict(options)

    def _finish(self, block_names: Sequence[str], neck: nn.Module, feature_dim: int) -> None:
        """Called by subclasses once their blocks are registered as submodules."""
        for name in block_names:
            self.get_submodule(name)  # fails loudly if a subclass lists a path it did not register
        self.block_names = list(block_names)
        self.neck = neck
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, self.num_classes)

    # ---- computation -------------------------------------------------------------------

    def block_modules(self) -> list[nn.Module]:
        return [self.get_submodule(name) for name in self.block_names]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_modules():
            x = block(x)
        return self.neck(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_to(self, x: torch.Tensor, block: str) -> torch.Tensor:
        """The output of the named block: the blocks up to and including it, nothing after."""
        if block not in self.block_names:
            raise ValueError(f"{self.name}: unknown block {block!r}; its blocks are {self.block_names}")
        for name in self.block_names:
            x = self.get_submodule(name)(x)
            if name == block:
                return x
        raise AssertionError("unreachable")

    def forward_with_taps(
        self, x: torch.Tensor, taps: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits plus the outputs of the named blocks (and "features", the head's input).

        Runs exactly the same operations as forward(), so logits are identical.
        """
        if isinstance(taps, str):
            taps = [taps]
        wanted = set(taps)
        valid = set(self.block_names) | {FEATURES_TAP}
        unknown = sorted(wanted - valid)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown tap(s) {unknown}; valid taps are {self.block_names + [FEATURES_TAP]}"
            )
        tapped: dict[str, torch.Tensor] = {}
        for name in self.block_names:
            x = self.get_submodule(name)(x)
            if name in wanted:
                tapped[name] = x
        features = self.neck(x)
        if FEATURES_TAP in wanted:
            tapped[FEATURES_TAP] = features
        return self.head(features), tapped

    # ---- head ----------------------------------------------------------------------------

    def replace_head(self, num_classes: int) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"{self.name}: replace_head needs a positive int num_classes, got {num_classes!r}")
        old = self.head.weight
        self.head = nn.Linear(self.feature_dim, num_classes, device=old.device, dtype=old.dtype)
        self.num_classes = num_classes

    # ---- last-k addressing ---------------------------------------------------------------

    def _check_k(self, k: int) -> None:
        n = len(self.block_names)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
            raise ValueError(f"{self.name}: k must be an int in 1..{n} (its blocks: {self.block_names}), got {k!r}")

    def last_k_block_names(self, k: int) -> list[str]:
        self._check_k(k)
        return self.block_names[-k:]

    def last_k_blocks(self, k: int) -> list[nn.Module]:
        return [self.get_submodule(name) for name in self.last_k_block_names(k)]

    def last_k_named_parameters(self, k: int, include_head: bool = True) -> list[tuple[str, nn.Parameter]]:
        """Fully qualified (name, parameter) pairs of the last k blocks, the neck and optionally the head.

        Names match ``model.named_parameters()``, as torch.func.functional_call expects.
        """
        prefixes = [name + "." for name in self.last_k_block_names(k)] + ["neck."]
        if include_head:
            prefixes.append("head.")
        return [(name, p) for name, p in self.named_parameters() if name.startswith(tuple(prefixes))]

    def last_k_parameters(self, k: int, include_head: bool = True) -> list[nn.Parameter]:
        return [p for _, p in self.last_k_named_parameters(k, include_head)]

    def set_trainable(self, mode: str, k: int | None = None) -> None:
        """Set requires_grad for "full", "last_k" (needs k; last k blocks + neck + head) or "linear" (head only).

        Only requires_grad changes: BatchNorm running statistics still update in train mode,
        so callers that want a frozen body should also put it in eval mode.
        """
        if mode not in TRAINABLE_MODES:
            raise ValueError(f"{self.name}: unknown trainable mode {mode!r}; valid modes are {list(TRAINABLE_MODES)}")
        if mode == "last_k":
            if k is None:
                raise ValueError(f"{self.name}: set_trainable('last_k') needs k in 1..{len(self.block_names)}")
            trainable = {id(p) for p in self.last_k_parameters(k, include_head=True)}
        else:
            if k is not None:
                raise ValueError(f"{self.name}: set_trainable({mode!r}) takes no k (got k={k}); k is for 'last_k'")
            head = {id(p) for p in self.head.parameters()}
            trainable = {id(p) for p in self.parameters()} if mode == "full" else head
        for p in self.parameters():
            p.requires_grad_(id(p) in trainable)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, image_size={self.image_size}"


def init_conv_bn(model: nn.Module) -> None:
    """He init for convolutions and identity BatchNorm, as the ResNet and WRN papers train them."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
