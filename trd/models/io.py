"""Model weights on disk as safetensors: never unpickled, self-describing enough to rebuild.

The safetensors header carries, under the key "trd", a JSON object
{"name", "num_classes", "image_size", "options"}: exactly the arguments of build_model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from trd.models.base import TrdModel
from trd.models.registry import build_model

METADATA_KEY = "trd"
IDENTITY_FIELDS = ("name", "num_classes", "image_size")
EXPECTED_FIELDS = IDENTITY_FIELDS + ("options",)
HEAD_PREFIX = "head."
SHOWN_KEYS = 3


def save_model(model: TrdModel, path: str | os.PathLike) -> None:
    if not isinstance(model, TrdModel):
        raise ValueError(
            f"save_model needs a TrdModel, got {type(model).__name__}; unwrap DDP/DeepSpeed engines with .module"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "name": model.name,
        "num_classes": model.num_classes,
        "image_size": model.image_size,
        "options": model.options,
    }
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    # Write then rename, so a reader (or a crash mid-write) never sees a half-written file.
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    os.replace(partial, path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """{"name", "num_classes", "image_size", "options"} from a file written by save_model."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0]})") from error
    if METADATA_KEY not in header:
        raise ValueError(f"{path}: safetensors file has no trd model metadata; was it written by trd.models.save_model?")
    metadata = json.loads(header[METADATA_KEY])
    missing = [field for field in EXPECTED_FIELDS if field not in metadata]
    if missing:
        raise ValueError(f"{path}: trd model metadata lacks {missing}")
    return metadata


def _describe_difference(field: str, saved: Any, wanted: Any, wanted_label: str) -> str:
    if field == "num_classes":
        return f"saved model head has {saved} classes, {wanted_label} num_classes={wanted}"
    return f"saved model has {field}={saved!r}, {wanted_label} {field}={wanted!r}"


def check_expected(metadata: dict[str, Any], expected: dict[str, Any], path: str | os.PathLike) -> None:
    unknown = sorted(set(expected) - set(EXPECTED_FIELDS))
    if unknown:
        raise ValueError(f"expected: unknown field(s) {unknown}; valid fields are {list(EXPECTED_FIELDS)}")
    differences = [
        _describe_difference(field, metadata[field], expected[field], "expected")
        for field in IDENTITY_FIELDS
        if field in expected and metadata[field] != expected[field]
    ]
    for option, wanted in (expected.get("options") or {}).items():
        saved = metadata["options"].get(option)
        if saved != wanted:
            differences.append(f"saved model has option {option}={saved!r}, expected {option}={wanted!r}")
    if differences:
        raise ValueError(f"{path}: " + "; ".join(differences))


def load_model(
    path: str | os.PathLike, expected: dict[str, Any] | None = None, device: str | torch.device = "cpu"
) -> TrdModel:
    """Rebuild the saved architecture with build_model and load its weights.

    expected: optional subset of {"name", "num_classes", "image_size", "options"} the file must match.
    """
    metadata = read_metadata(path)
    if expected:
        check_expected(metadata, expected, path)
    model = build_model(
        metadata["name"], num_classes=metadata["num_classes"], image_size=metadata["image_size"], **metadata["options"]
    )
    load_state(model, path)
    return model.to(device)


def _short(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else shown


def load_state(model: TrdModel, path: str | os.PathLike, strict: bool = True) -> list[str]:
    """Load saved weights into an existing model; returns the state-dict keys left untouched.

    strict=True: name, image_size, num_classes and every tensor must match.
    strict=False: a head of a different size is tolerated; the body is loaded and the
    model keeps its own head (its keys are returned). The body must still match exactly.
    """
    metadata = read_metadata(path)
    differences = [
        _describe_difference(field, metadata[field], getattr(model, field), "model")
        for field in ("name", "image_size")
        if metadata[field] != getattr(model, field)
    ]
    head_differs = metadata["num_classes"] != model.num_classes
    if head_differs and strict:
        differences.append(
            _describe_difference("num_classes", metadata["num_classes"], model.num_classes, "model")
            + " (load_state(strict=False) loads the body and keeps the model's head)"
        )
    if differences:
        raise ValueError(f"{path}: " + "; ".join(differences))

    saved = load_file(str(path), device="cpu")
    own = model.state_dict()
    skipped = sorted(key for key in own if head_differs and key.startswith(HEAD_PREFIX))
    saved = {key: value for key, value in saved.items() if key not in skipped}
    wanted = {key: value for key, value in own.items() if key not in skipped}
    missing = sorted(set(wanted) - set(saved))
    unexpected = sorted(set(saved) - set(wanted))
    reshaped = sorted(
        f"{key} {tuple(saved[key].shape)} vs {tuple(wanted[key].shape)}"
        for key in set(saved) & set(wanted)
        if saved[key].shape != wanted[key].shape
    )
    if missing or unexpected or reshaped:
        problems = [
            f"{label}: {_short(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape saved vs model", reshaped))
            if keys
        ]
        raise ValueError(
            f"{path}: architecture differs (saved options {metadata['options']}, model options {model.options}); "
            + "; ".join(problems)
        )
    model.load_state_dict(saved, strict=not skipped)
    return skipped
