"""A three-convolution CNN: the tiny default model for tests and demos (trains in seconds on 32px CPU)."""

from __future__ import annotations

from torch import nn

from trd.models.base import TrdModel

MIN_IMAGE_SIZE = 4  # two 2x2 max-pools must leave at least one pixel


def conv_unit(in_channels: int, out_channels: int, batchnorm: bool, pool: bool) -> nn.Sequential:
    # A bias before BatchNorm is cancelled by its mean subtraction, so only keep it without BN.
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU())
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(TrdModel):
    """conv(w) -> pool -> conv(2w) -> pool -> conv(4w) -> global average pool [-> linear(hidden) -> ReLU] -> linear.

    hidden adds the fully connected layer of the transfer-resistant study's small CNN: penultimate features
    that follow a ReLU over the whole image (SKD zeroes them; trd.losses.skd)."""

    def __init__(self, num_classes: int, image_size: int, *, batchnorm: bool = True, width: int = 32,
                 hidden: int | None = None):
        # hidden stays out of the options when unset, so models saved before it existed rebuild unchanged
        options = {"batchnorm": batchnorm, "width": width, **({"hidden": hidden} if hidden is not None else {})}
        super().__init__("cnn", num_classes, image_size, options)
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"cnn: image_size {image_size} is too small; use image_size >= {MIN_IMAGE_SIZE}")
        if width < 1:
            raise ValueError(f"cnn: width must be >= 1, got {width}")
        self.stem = conv_unit(3, width, batchnorm, pool=True)
        self.block0 = conv_unit(width, 2 * width, batchnorm, pool=True)
        self.block1 = conv_unit(2 * width, 4 * width, batchnorm, pool=False)
        if hidden is not None and hidden < 1:
            raise ValueError(f"cnn: hidden must be >= 1 (or null for none), got {hidden}")
        neck = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        if hidden is not None:
            neck += [nn.Linear(4 * width, hidden), nn.ReLU()]
        self._finish(["stem", "block0", "block1"], nn.Sequential(*neck), feature_dim=hidden or 4 * width)
