"""A released model in a stage directory: model.safetensors (body + target head, what gets released) and,
beside it, the private source head it was transferred from (source accuracy, SRC-KD and MIA see through it)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trd.atomic import atomic_write
from trd.contract import MODEL_FILE, SOURCE_HEAD_FILE
from trd.models.base import TrdModel
from trd.models.io import load_model, save_model


def released_model_path(stage_dir: str | Path) -> Path:
    path = Path(stage_dir) / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: its stage has not finished; rerun the experiment")
    return path


def load_released(stage_dir: str | Path, device: torch.device | str = "cpu", expected: dict | None = None) -> TrdModel:
    return load_model(released_model_path(stage_dir), device=device, expected=expected)


def save_released(stage_dir: str | Path, model: TrdModel, source_head: torch.nn.Module | None = None) -> None:
    """Written atomically; call on one rank only."""
    stage_dir = Path(stage_dir)
    save_model(model, stage_dir / MODEL_FILE)
    if source_head is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in source_head.state_dict().items()}
        atomic_write(stage_dir / SOURCE_HEAD_FILE, lambda tmp: save_file(state, tmp))


def load_source_head(stage_dir: str | Path, feature_dim: int, num_classes: int) -> torch.nn.Linear | None:
    path = Path(stage_dir) / SOURCE_HEAD_FILE
    if not path.exists():
        return None
    head = torch.nn.Linear(feature_dim, num_classes)
    head.load_state_dict(load_file(str(path)))
    return head
