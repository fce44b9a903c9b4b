"""Wide ResNet WRN-d-k for CIFAR-sized images (Zagoruyko & Komodakis 2016), pre-activation blocks.

Depth d = 6n + 4: a 3x3 stem conv, three groups of n two-conv blocks with widths
16k, 32k, 64k (the last two downsample by 2), then BN-ReLU, global pooling and the head.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from trd.models.base import TrdModel, init_conv_bn

NAME_PATTERN = re.compile(r"wrn(\d+)_(\d+)")


def parse_wrn_name(name: str) -> tuple[int, int] | None:
    """(depth, widen_factor) for names like "wrn28_10"; None when name is not a WRN name at all."""
    match = NAME_PATTERN.fullmatch(name)
    if match is None:
        return None
    depth, widen = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 != 0 or widen < 1:
        raise ValueError(
            f"{name}: WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40, ...) and width k >= 1"
        )
    return depth, widen


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3 plus shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.relu = nn.ReLU()
        self.equal_in_out = in_channels == out_channels and stride == 1
        self.shortcut = (
            nn.Identity() if self.equal_in_out else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        # As in the reference code: a projection shortcut sees the pre-activated input,
        # an identity shortcut the raw one.
        return out + (x if self.equal_in_out else self.shortcut(pre))


class WideResNet(TrdModel):
    def __init__(self, name: str, num_classes: int, image_size: int, *, dropout: float = 0.0):
        parsed = parse_wrn_name(name)
        if parsed is None:
            raise ValueError(f"{name!r} is not a WRN name; expected wrn<depth>_<k>, e.g. wrn28_10")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        super().__init__(name, num_classes, image_size, {"dropout": dropout})
        depth, widen = parsed
        blocks_per_group = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]

        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        block_names = ["stem"]
        in_channels = 16
        for group, width in enumerate(widths, start=1):
            blocks = []
            for i in range(blocks_per_group):
                stride = 2 if group > 1 and i == 0 else 1
                blocks.append(PreActBlock(in_channels, width, stride, dropout))
                in_channels = width
                block_names.append(f"layer{group}.{i}")
            setattr(self, f"layer{group}", nn.Sequential(*blocks))

        # Pre-activation blocks end on a conv, so the final BN-ReLU lives in the neck.
        neck = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        init_conv_bn(self)
        self._finish(block_names, neck, feature_dim=in_channels)
