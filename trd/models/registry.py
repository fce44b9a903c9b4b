"""build_model: model name + options -> TrdModel, with one-line errors for bad names and options."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from trd.models.base import TrdModel
from trd.models.cnn import SmallCNN
from trd.models.resnet import resnet18, resnet50
from trd.models.wrn import WideResNet, parse_wrn_name

# Named configurations; any "wrn<depth>_<k>" with depth = 6n+4 is accepted as well.
MODEL_NAMES = ("cnn", "resnet18", "resnet50", "wrn16_4", "wrn28_4", "wrn28_10", "wrn34_10", "vit", "mobilenet_v2")
NAME_HELP = "cnn, resnet18, resnet50, wrn<depth>_<k> (e.g. wrn28_4, wrn34_10), vit, mobilenet_v2"

def _vit() -> Callable[..., TrdModel]:
    # torchvision takes longer to import than torch itself: only a job that builds a ViT pays for it
    from trd.models.vit import ViT

    return ViT


def _mobilenet_v2() -> Callable[..., TrdModel]:
    from trd.models.mobilenet import mobilenet_v2

    return mobilenet_v2


_FIXED_BUILDERS: dict[str, Callable[..., TrdModel]] = {
    "cnn": SmallCNN,
    "resnet18": resnet18,
    "resnet50": resnet50,
}
_LAZY_BUILDERS: dict[str, Callable[[], Callable[..., TrdModel]]] = {"vit": _vit, "mobilenet_v2": _mobilenet_v2}

_ANNOTATION_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "None": type(None)}


def is_model_name(name: str) -> bool:
    try:
        return name in _FIXED_BUILDERS or name in _LAZY_BUILDERS or parse_wrn_name(name) is not None
    except ValueError:
        return False


def _builder(name: str) -> Callable[..., TrdModel]:
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {name!r}; valid names: {NAME_HELP}")
    if name in _FIXED_BUILDERS:
        return _FIXED_BUILDERS[name]
    if name in _LAZY_BUILDERS:
        return _LAZY_BUILDERS[name]()
    if parse_wrn_name(name) is not None:
        return functools.partial(WideResNet, name)
    raise ValueError(f"unknown model {name!r}; valid names: {NAME_HELP}")


def model_options(name: str) -> dict[str, Any]:
    """The options build_model accepts for this model name, with their defaults."""
    return {p.name: p.default for p in _option_parameters(_builder(name))}


def _option_parameters(builder: Callable[..., TrdModel]) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]


def _check_type(model: str, parameter: inspect.Parameter, value: Any) -> Any:
    # Annotations are strings ("int | None") under postponed evaluation; each model file
    # uses only the simple types listed in _ANNOTATION_TYPES.
    allowed = [_ANNOTATION_TYPES[t.strip()] for t in str(parameter.annotation).split("|")]
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int, so an int option must not silently accept True/False.
    ok = any(type(value) is t for t in allowed)
    if not ok:
        raise ValueError(f"{model}: option {parameter.name}={value!r} must be {parameter.annotation}")
    return value


def build_model(name: str, num_classes: int, image_size: int, **options: Any) -> TrdModel:
    builder = _builder(name)
    for label, value in (("num_classes", num_classes), ("image_size", image_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {label} must be a positive int, got {value!r}")
    parameters = {p.name: p for p in _option_parameters(builder)}
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; valid options are {sorted(parameters)}")
    checked = {key: _check_type(name, parameters[key], value) for key, value in options.items()}
    return builder(num_classes=num_classes, image_size=image_size, **checked)


def build_from_config(model_cfg: Mapping[str, Any], num_classes: int, image_size: int) -> TrdModel:
    """build_model from a `model` config node ({name, **options})."""
    options = {k: v for k, v in model_cfg.items() if k != "name"}
    return build_model(model_cfg["name"], num_classes=num_classes, image_size=image_size, **options)


@functools.lru_cache(maxsize=32)
def _block_count(config_json: str, image_size: int) -> int:
    return len(build_from_config(json.loads(config_json), num_classes=1, image_size=image_size).block_names)


def block_count(model_cfg: Mapping[str, Any], image_size: int) -> int:
    """How many blocks the configured model has (what k of last-k may address); builds it once, on the CPU."""
    return _block_count(json.dumps(dict(model_cfg), sort_keys=True), image_size)
