"""torchvision's ImageNet weights (ResNet-18/50, MobileNetV2) as a trd model: the one place a pickled .pth file is
read, once, by launch/convert_weights.py (torch.load with weights_only=True: tensors and plain containers, no code),
to write the safetensors file every job then loads. The architectures are the same computation (the ImageNet stem,
v1.5 bottlenecks, torchvision's own MobileNetV2 modules); only the parameter names differ."""
from __future__ import annotations

import re

import torch

from trd.models.registry import build_model

IMAGENET_CLASSES = 1000
IMAGENET_SIZE = 224


def resnet_key(key: str) -> str:
    """A torchvision ResNet state-dict key as trd's ResNet names it."""
    key = re.sub(r"^conv1\.", "stem.0.", key)
    key = re.sub(r"^bn1\.", "stem.1.", key)
    key = re.sub(r"^fc\.", "head.", key)
    key = re.sub(r"^(layer\d\.\d+)\.conv(\d)\.", r"\1.conv\2.0.", key)
    key = re.sub(r"^(layer\d\.\d+)\.bn(\d)\.", r"\1.conv\2.1.", key)
    return re.sub(r"^(layer\d\.\d+)\.downsample\.", r"\1.shortcut.", key)


def mobilenet_key(key: str) -> str:
    """A torchvision MobileNetV2 state-dict key as trd's MobileNetV2 names it (its classifier's dropout is not
    part of trd's head)."""
    key = re.sub(r"^features\.", "blocks.", key)
    return re.sub(r"^classifier\.1\.", "head.", key)


RENAMERS = {"resnet18": resnet_key, "resnet50": resnet_key, "mobilenet_v2": mobilenet_key}
CONVERTIBLE = tuple(RENAMERS)


def from_torchvision(name: str, state: dict[str, torch.Tensor]):
    """trd's `name` (ImageNet stem, 1000 classes, 224 px) holding torchvision's state dict `state`."""
    if name not in RENAMERS:
        raise ValueError(f"convert: {name!r} is not a torchvision model trd mirrors; use one of {', '.join(CONVERTIBLE)}")
    model = build_model(name, num_classes=IMAGENET_CLASSES, image_size=IMAGENET_SIZE, stem="imagenet")
    renamed = {RENAMERS[name](k): v for k, v in state.items()}
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(renamed)), sorted(set(renamed) - set(expected))
    if missing or unexpected:
        raise ValueError(f"convert: the file is not torchvision's {name}: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}")
    shapes = [k for k in expected if expected[k].shape != renamed[k].shape]
    if shapes:
        raise ValueError(f"convert: the file is not torchvision's {name}: {shapes[0]} has shape "
                         f"{tuple(renamed[shapes[0]].shape)}, trd's {tuple(expected[shapes[0]].shape)}")
    model.load_state_dict(renamed)
    return model
