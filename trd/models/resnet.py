"""ResNet-18 and ResNet-50 (He et al. 2016), with a CIFAR stem for small images.

Written without in-place operations so that block outputs kept as taps are never
overwritten and torch.func transforms (vmap, jvp over grad) apply without surprises.
"""

from __future__ import annotations

import torch
from torch import nn

from trd.models.base import TrdModel, init_conv_bn

CIFAR_STEM_MAX_IMAGE_SIZE = 64
STEMS = ("cifar", "imagenet")


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_bn(in_channels, out_channels, 1, stride)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(in_channels, planes, 3, stride)
        self.conv2 = conv_bn(planes, planes, 3)
        self.shortcut = projection_shortcut(in_channels, planes, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.conv1(x))
        return self.relu(self.conv2(out) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = conv_bn(in_channels, planes, 1)
        # Stride on the 3x3 conv (torchvision's "ResNet v1.5"): better accuracy than striding the 1x1.
        self.conv2 = conv_bn(planes, planes, 3, stride)
        self.conv3 = conv_bn(planes, out_channels, 1)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.conv1(x))
        out = self.relu(self.conv2(out))
        return self.relu(self.conv3(out) + self.shortcut(x))


def make_stem(stem: str) -> nn.Sequential:
    if stem == "cifar":
        # Small images cannot afford the 4x early downsampling of the ImageNet stem.
        return nn.Sequential(*conv_bn(3, 64, 3), nn.ReLU())
    return nn.Sequential(*conv_bn(3, 64, 7, stride=2), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))


ARCHITECTURES = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(TrdModel):
    def __init__(self, name: str, num_classes: int, image_size: int, *, stem: str | None = None):
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown ResNet {name!r}; valid ones are {sorted(ARCHITECTURES)}")
        if stem is None:
            stem = "cifar" if image_size <= CIFAR_STEM_MAX_IMAGE_SIZE else "imagenet"
        if stem not in STEMS:
            raise ValueError(f"{name}: unknown stem {stem!r}; valid stems are {list(STEMS)} (or None: by image_size)")
        super().__init__(name, num_classes, image_size, {"stem": stem})
        block_type, depths = ARCHITECTURES[name]

        self.stem = make_stem(stem)
        block_names = ["stem"]
        in_channels = 64
        for stage, depth in enumerate(depths, start=1):
            planes = 64 * 2 ** (stage - 1)
            blocks = []
            for i in range(depth):
                stride = 2 if stage > 1 and i == 0 else 1
                blocks.append(block_type(in_channels, planes, stride))
                in_channels = planes * block_type.expansion
                block_names.append(f"layer{stage}.{i}")
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))

        init_conv_bn(self)
        neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self._finish(block_names, neck, feature_dim=in_channels)



def resnet18(num_classes: int, image_size: int, *, stem: str | None = None) -> ResNet:
    return ResNet("resnet18", num_classes, image_size, stem=stem)


def resnet50(num_classes: int, image_size: int, *, stem: str | None = None) -> ResNet:
    return ResNet("resnet50", num_classes, image_size, stem=stem)
