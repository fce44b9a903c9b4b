"""MobileNetV2 (Sandler et al. 2018): torchvision's network behind trd's block interface, one block per entry of
its ``features`` (the stem convolution, 17 inverted residuals, the final 1x1 convolution), so that last-k, taps
and feature distillation address it as any other trd model. Its activations run out of place: block outputs kept
as taps must not be overwritten, and torch.func transforms stay clear of in-place surprises.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.mobilenetv2 import MobileNetV2 as TorchvisionMobileNetV2

from trd.models.base import TrdModel
from trd.models.resnet import CIFAR_STEM_MAX_IMAGE_SIZE, STEMS


class MobileNetV2(TrdModel):
    def __init__(self, num_classes: int, image_size: int, *, width: float = 1.0, stem: str | None = None):
        if stem is None:
            stem = "cifar" if image_size <= CIFAR_STEM_MAX_IMAGE_SIZE else "imagenet"
        if stem not in STEMS:
            raise ValueError(f"mobilenet_v2: unknown stem {stem!r}; valid stems are {list(STEMS)} (or None: by "
                             f"image_size)")
        if not width > 0:
            raise ValueError(f"mobilenet_v2: width must be > 0, got {width!r}")
        super().__init__("mobilenet_v2", num_classes, image_size, {"width": width, "stem": stem})
        network = TorchvisionMobileNetV2(num_classes=num_classes, width_mult=width)
        if stem == "cifar":
            # 32 px images leave 1x1 maps after the ImageNet network's 32x downsampling; as the usual CIFAR
            # variant, the stem convolution and the first 24-channel block keep the resolution (8x in all).
            network.features[0][0].stride = (1, 1)
            network.features[2].conv[1][0].stride = (1, 1)
        for module in network.modules():
            if isinstance(module, nn.ReLU6):
                module.inplace = False
        self.blocks = network.features
        block_names = [f"blocks.{index}" for index in range(len(network.features))]
        neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self._finish(block_names, neck, feature_dim=network.last_channel)
        # torchvision's initialisation of the classifier, which trd's head replaces
        nn.init.normal_(self.head.weight, 0, 0.01)
        nn.init.zeros_(self.head.bias)


def mobilenet_v2(num_classes: int, image_size: int, *, width: float = 1.0, stem: str | None = None) -> MobileNetV2:
    return MobileNetV2(num_classes, image_size, width=width, stem=stem)
